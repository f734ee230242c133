"""The models on tiny synthetic graphs: shapes, masks, gradients, overfitting, degradation."""

from __future__ import annotations

import pytest
import torch

from model.config import IMPROVED_PROPAGATION, PAPER_PROPAGATION, VARIANTS, ModelConfig
from model.data import build_data, collaborative_edges
from model.fusion import ROUTES, BiTransformer, ModalAttention, PackedTokens
from model.layers import SparseMatrix
from model.recommenders import build_model
from model.sampling import kg_training_triples, sample_negatives
from model.synthetic_data import neighbor_sequences_of, synthetic_tables

TINY = {"embed_dim": 16, "relation_dim": 8, "layer_sizes": (16, 8), "n_heads": 2,
        "n_blocks": 1, "ffn_dim": 16}
#: Every variant with its default propagation, plus the other propagation where it matters.
CONFIGS = ([(v, {}) for v in VARIANTS] + [(v, PAPER_PROPAGATION) for v in ("full", "t2v")]
           + [("kgat", IMPROVED_PROPAGATION)])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return build_data(synthetic_tables(n_users=30, n_items=40, n_pairs=500, n_attributes=10,
                                       n_triples=80, sequence_length=6, seed=3))


@pytest.fixture(scope="module")
def text_only():
    return build_data(synthetic_tables(n_users=30, n_items=40, n_pairs=500, n_attributes=10,
                                       n_triples=80, modalities=("text",), sequence_length=6,
                                       seed=3))


def make(variant: str, data, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(ModelConfig(variant=variant, **(TINY | overrides)), data)


def test_data_tensors(data):
    assert data.seq_node.shape == (data.n_items, 6)
    assert (data.seq_node[:, 0] == torch.arange(data.n_items)).all()  # item first
    assert set(data.features) == {"visual", "text"}
    text = data.features["text"]
    assert text.vectors.shape == (int(text.has.sum()), 24)
    assert (text.row[text.has] >= 0).all() and (text.row[~text.has] == -1).all()
    edges = collaborative_edges(data)
    # both directions of every train pair and every triple
    assert edges.head.numel() == 2 * (data.train_user.numel() + data.kg_head.numel())
    users = edges.head >= data.n_entities
    assert (edges.relation[users] == 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_finite_scores(variant, data):
    model = make(variant, data).eval()
    users, items = model()
    assert users.shape[0] == data.n_users and items.shape[0] == data.n_items
    assert users.shape[1] == items.shape[1]
    assert torch.isfinite(users).all() and torch.isfinite(items).all()
    if variant == "kgat":  # the paper's propagation: layer 0 ‖ layers of 16, 8
        assert users.shape[1] == 16 + 16 + 8
    if variant in ("no_visual", "no_text"):  # one graph, mean of 16-d layers
        assert users.shape[1] == 16
    if variant in ("full", "t2v", "v2t"):
        assert users.shape[1] == 2 * 16  # visual ‖ text graphs


def test_all_masked_keys_give_zero_update_not_nan():
    attention = ModalAttention(("visual", "text"), 8, 2, 0.0)
    x = {m: torch.randn(3, 4, 8) for m in ("visual", "text")}
    valid = {"visual": torch.zeros(3, 4, dtype=torch.bool),
             "text": torch.tensor([[True] * 4, [False] * 4, [True, False, False, False]])}
    out, weights = attention(x, valid, {"visual": ("visual",), "text": ("visual", "text")},
                             need_weights=True)
    assert torch.isfinite(out["visual"]).all() and (out["visual"] == 0).all()
    assert (out["text"][1] == 0).all() and out["text"][0].abs().sum() > 0
    # masked keys get no attention; rows with a valid key sum to one
    assert (weights["text"][0, :, :4] == 0).all()
    assert weights["text"][2].sum(-1).tolist() == pytest.approx([1.0] * 4)


def test_padding_and_missing_modalities_do_not_leak():
    # item 0 loses every pair and triple: an isolated item, its sequence is all padding
    tables = synthetic_tables(n_users=12, n_items=15, n_pairs=80, n_attributes=5,
                              n_triples=20, seed=5, with_sequences=False)
    tables["split"] = tables["split"][tables["split"]["item_id"] != 0]
    kg = tables["kg_triples"]
    tables["kg_triples"] = kg[(kg["head_id"] != 0) & (kg["tail_id"] != 0)]
    tables["neighbor_sequences"] = neighbor_sequences_of(tables, n=8)
    data = build_data(tables)
    model = make("full", data).eval()
    reference_items = model()[1].clone()
    # padding positions read node 0's content after clamping: changing what they point at
    # must not change anything
    padded = ~model.seq_real
    assert padded.any()
    model.seq_node[padded] = data.n_items - 1
    assert torch.allclose(model()[1], reference_items)
    # an attribute entity whose text is masked: its vector values are never read
    text_ids = model.text_ids.tolist()
    entity = next(e for e in text_ids if e >= data.n_items)
    row = text_ids.index(entity)
    model.text_has[entity] = False
    outputs = []
    for scale in (1.0, 100.0):
        model.text_vectors[row] = scale * torch.randn(model.text_vectors.shape[1])
        model._adjacency = {}
        outputs.append(model()[1])
    assert torch.allclose(outputs[0], outputs[1])
    model.text_has[entity] = True  # sanity: when present, it does matter
    model._adjacency = {}
    assert not torch.allclose(model()[1], outputs[1])


def test_modality_absent_for_the_whole_dataset_degrades_to_kgat(text_only):
    assert "visual" not in text_only.features
    full = make("full", text_only)
    assert full.modalities == ("text",) and full.graphs == ("text",)
    # said once, by the data (not again by the model)
    assert sum("'visual'" in note for note in [*text_only.notes, *full.notes]) == 1
    # no modality left: KGAT's equations with the same propagation
    no_text = make("no_text", text_only).eval()
    kgat = make("kgat", text_only, **IMPROVED_PROPAGATION).eval()
    assert no_text.graphs == ("id",)
    for a, b in zip(no_text(), kgat(), strict=True):
        assert torch.allclose(a, b)
    # visual weight is 0 for every item when there are no images
    mass = full.item_modality_attention()
    assert (mass[:, 0] == 0).all() and torch.allclose(mass[:, 1], torch.ones(text_only.n_items))


def test_no_modality_at_all_the_note_says_what_the_model_is():
    tables = synthetic_tables(n_users=30, n_items=40, n_pairs=500, n_attributes=10,
                              n_triples=80, sequence_length=6, seed=3)
    data = build_data({**tables, "clip_features": None})
    full = make("full", data).eval()
    [note] = full.notes
    assert full.graphs == ("id",)
    assert note.startswith("full: no modality available: the model is identical to LightGCN "
                           "over the train interactions")
    assert "the KG reaches the model only through the modalities' BFS sequences" in note
    # and it is: the same embeddings give LightGCN's scores
    lightgcn = make("lightgcn", data).eval()
    ids = full.node_embedding.weight.data
    lightgcn.embedding.weight.data = torch.cat([ids[data.n_entities:], ids[: data.n_items]])
    full.refresh_attention()
    for a, b in zip(full(), lightgcn(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # graph=ckg: KGAT's propagation over the collaborative KG
    [note] = make("full", data, **PAPER_PROPAGATION).notes
    assert note.startswith("full: no modality available: the model is KGAT: ID embeddings "
                           "propagated over the collaborative KG (train interactions + KG triples)")
    [note] = make("no_text", data, graph="ckg").notes
    assert "no_text: no modality available: the model is KGAT-like (light aggregator, symmetric " \
           "edge weights): ID embeddings propagated over the collaborative KG" in note


def _step_loss(model, data, users, pos, neg, kg):
    bpr, reg = model.bpr_loss(users, pos, neg)
    loss = bpr + 1e-4 * reg + 0.01 * model.align_loss(users, pos, neg)
    if model.uses_kg:
        h, r, t, tn = kg
        loss = loss + model.kg_loss(h, r, t, tn, 1e-5)
    return loss


@pytest.mark.parametrize(("variant", "overrides"), CONFIGS)
def test_gradients_reach_every_parameter(variant, overrides, data):
    model = make(variant, data, **overrides).train()
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(data.n_items, data.train_user.shape, generator=gen)
    h, r, t = kg_training_triples(data)
    tn = torch.randint(data.n_entities, h.shape, generator=gen)
    _step_loss(model, data, data.train_user, data.train_item, neg, (h, r, t, tn)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("variant", "overrides"), CONFIGS)
def test_each_variant_overfits_a_tiny_graph(variant, overrides, data):
    model = make(variant, data, mess_dropout=0.0, **overrides).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    h, r, t = kg_training_triples(data)
    users, pos = data.train_user, data.train_item
    positive_keys = torch.sort(users * data.n_items + pos).values
    fixed_neg = sample_negatives(users, data.n_items, positive_keys, gen)  # true negatives
    first = None
    for step in range(80):
        neg = torch.randint(data.n_items, users.shape, generator=gen)
        tn = torch.randint(data.n_entities, h.shape, generator=gen)
        loss = _step_loss(model, data, users, pos, neg, (h, r, t, tn))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            model.refresh_attention()
        first = loss.item() if first is None else first
    model.eval()
    with torch.no_grad():
        u, i = model()
        positive = (u[users] * i[pos]).sum(1)
        negative = (u[users] * i[fixed_neg]).sum(1)
    auc = (positive > negative).float().mean().item()
    assert loss.item() < 0.5 * first, (variant, first, loss.item())
    assert auc > 0.9, (variant, auc)


def test_sparse_matrix_autograd_matches_dense():
    row = torch.tensor([0, 0, 1, 2, 2])
    col = torch.tensor([1, 2, 0, 0, 1])
    value = torch.tensor([0.5, 0.5, 1.0, 0.3, 0.7])
    matrix = SparseMatrix(row, col, value, (3, 3))
    dense = torch.zeros(3, 3)
    dense[row, col] = value
    x = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(3, 4)
    ((matrix @ x) * weight).sum().backward()
    expected = dense.T @ weight
    assert torch.allclose(x.grad, expected)


def test_fusion_of_position_zero_only_matches_the_whole_sequence():
    """The last block may compute the item's own position only (what `fuse` reads)."""
    torch.manual_seed(0)
    fusion = BiTransformer(("visual", "text"), 16, 2, 32, 2, 1, 0.0, "bi").eval()
    x = {m: torch.randn(12, 6, 16) for m in ("visual", "text")}
    valid = {m: torch.rand(12, 6) > 0.3 for m in x}
    whole, whole_w = fusion(x, valid, need_weights=True)
    first, first_w = fusion(x, valid, need_weights=True, first_only=True)
    for m in x:
        assert first[m].shape == (12, 1, 16)
        assert torch.allclose(first[m][:, 0], whole[m][:, 0], atol=1e-6)
        assert torch.allclose(first_w[m][:, 0], whole_w[m][:, 0], atol=1e-6)


@pytest.mark.parametrize("mode", sorted(set(ROUTES) - {"intra"}))
def test_packed_fusion_equals_the_padded_definition(mode):
    """`item_outputs` (kept tokens only) = `forward` at position 0, values and gradients,
    with sequences whose own item lacks a modality and sequences with no valid key at all."""
    torch.manual_seed(1)
    fusion = BiTransformer(("visual", "text"), 16, 2, 32, 2, 1, 0.0, mode).eval()
    b, length = 12, 6
    x = {m: torch.randn(b, length, 16, requires_grad=True) for m in ("visual", "text")}
    valid = {m: torch.rand(b, length) > 0.4 for m in x}
    valid["visual"][0] = False  # no visual key anywhere in sequence 0
    valid["text"][1, 0] = False  # item 1 lacks text but its neighbours have it
    whole, _ = fusion(x, valid, first_only=True)
    index = {m: PackedTokens.keep_mask(valid[m]).flatten().nonzero(as_tuple=True)[0]
             for m in x}
    assert all(len(index[m]) < b * length for m in x)  # something is really left out
    hidden = {m: x[m].reshape(b * length, 16)[index[m]] for m in x}
    packed = fusion.item_outputs(PackedTokens(hidden, valid, index, b, length))
    weight = {m: torch.randn(b, 16) for m in x}
    for m in x:
        assert packed[m].shape == (b, 16)
        assert torch.allclose(packed[m], whole[m][:, 0], atol=1e-5)
    grads = {}
    for name, out in (("padded", {m: whole[m][:, 0] for m in x}), ("packed", packed)):
        for m in x:
            x[m].grad = None
        sum((out[m] * weight[m]).sum() for m in x).backward(retain_graph=True)
        grads[name] = {m: x[m].grad.clone() for m in x}
        params = [p.grad.clone() for p in fusion.parameters() if p.grad is not None]
        grads[name]["params"] = params
        fusion.zero_grad()
    for m in x:
        assert torch.allclose(grads["packed"][m], grads["padded"][m], atol=1e-5)
    for a, c in zip(grads["packed"]["params"], grads["padded"]["params"], strict=True):
        assert torch.allclose(a, c, atol=1e-5)


def test_checkpointed_fusion_has_the_same_outputs_and_gradients_with_dropout_on():
    """fusion_checkpoint recomputes the blocks in backward: the same function, the same
    dropout masks (RNG state replayed), the same gradients."""
    b, length = 12, 6
    valid = {m: torch.rand(b, length, generator=torch.Generator().manual_seed(2)) > 0.4
             for m in ("visual", "text")}
    index = {m: PackedTokens.keep_mask(valid[m]).flatten().nonzero(as_tuple=True)[0]
             for m in valid}
    recomputed = []  # the blocks that really went through torch.utils.checkpoint
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(function, *args, **kwargs):
        recomputed.append(function)
        return real_checkpoint(function, *args, **kwargs)

    runs = []
    for checkpoint in (False, True):
        torch.manual_seed(1)
        fusion = BiTransformer(("visual", "text"), 16, 2, 32, 2, 1, 0.2, "bi",
                               checkpoint=checkpoint).train()
        x = {m: torch.randn(b * length, 16, requires_grad=True) for m in valid}
        torch.manual_seed(7)  # the dropout draws
        torch.utils.checkpoint.checkpoint = counting_checkpoint
        try:
            out = fusion.item_outputs(PackedTokens({m: x[m][index[m]] for m in x}, valid,
                                                   index, b, length))
        finally:
            torch.utils.checkpoint.checkpoint = real_checkpoint
        assert len(recomputed) == (len(fusion.blocks) if checkpoint else 0)
        sum((out[m] * torch.arange(16.0)).sum() for m in out).backward()
        runs.append(({m: out[m].detach() for m in out}, {m: x[m].grad for m in x},
                     [p.grad for p in fusion.parameters()]))
    (plain, plain_x, plain_p), (ckpt, ckpt_x, ckpt_p) = runs
    for m in plain:
        assert torch.allclose(plain[m], ckpt[m], atol=1e-6)
        assert torch.allclose(plain_x[m], ckpt_x[m], atol=1e-5)
    assert any(g.abs().sum() > 0 for g in plain_p)
    for a, c in zip(plain_p, ckpt_p, strict=True):
        assert torch.allclose(a, c, atol=1e-5)


def test_model_packed_fusion_equals_padded(data):
    """The whole model (content tokens, type/hop/modality embeddings, missing vectors) gives the
    same scores and gradients through either fusion path."""
    model = make("full", data).eval()
    results = []
    for packed in (True, False):
        model.packed_fusion = packed
        model.zero_grad()
        users, items = model()
        (users.sum() + (items ** 2).sum()).backward()
        results.append((users.detach(), items.detach(),
                        [p.grad.clone() for p in model.fusion.parameters()]))
    (u1, i1, g1), (u2, i2, g2) = results
    assert torch.allclose(u1, u2, atol=1e-5) and torch.allclose(i1, i2, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in g1)
    for a, c in zip(g1, g2, strict=True):
        assert torch.allclose(a, c, atol=1e-4)


def test_improved_propagation_without_modalities_is_lightgcn(data):
    """w/o t&v under the improved propagation is exactly LightGCN on the same ID embeddings."""
    ours = make("kgat", data, **IMPROVED_PROPAGATION).eval()
    reference = make("lightgcn", data).eval()
    ids = ours.node_embedding.weight.data
    with torch.no_grad():
        reference.embedding.weight.copy_(torch.cat([ids[data.n_entities:], ids[: data.n_items]]))
        users, items = ours()
        ref_users, ref_items = reference()
    assert users.shape == ref_users.shape and items.shape == ref_items.shape
    assert torch.allclose(users, ref_users, atol=1e-6)
    assert torch.allclose(items, ref_items, atol=1e-6)


def test_improved_propagation_ignores_kg_edges_but_reads_kg_content(data):
    """graph="interactions": KG edges leave the propagation, the fused KG sequences stay."""
    model = make("full", data, **IMPROVED_PROPAGATION).eval()
    assert (model.edge_head >= data.n_entities).sum() == data.train_user.numel()
    assert ((model.edge_head >= data.n_items) & (model.edge_head < data.n_entities)).sum() == 0
    with torch.no_grad():
        before = model()[1].clone()
        model.gate["text"].fill_(0.0)
        model.gate["visual"].fill_(0.0)
        without_content = model()[1]
    assert not torch.allclose(before, without_content)  # content reaches the items


def test_alignment_loss_is_an_infonce_over_the_batch(data):
    """full: the loss is computed from the last training forward, positive and finite, and
    it trains the content path; models without content contribute nothing."""
    full = make("full", data).train()
    users, pos = data.train_user[:64], data.train_item[:64]
    neg = torch.randint(data.n_items, users.shape, generator=torch.Generator().manual_seed(0))
    full.bpr_loss(users, pos, neg)
    align = full.align_loss(users, pos, neg)
    assert torch.isfinite(align) and align > 0
    align.backward()
    assert full.seed_map["text"].weight.grad.abs().sum() > 0
    assert full.node_embedding.weight.grad.abs().sum() > 0
    n_items = torch.unique(torch.cat([pos, neg])).numel()
    # 2 graphs × (items + users) InfoNCE terms, each at most ln(batch rows) (+ slack)
    assert align <= 2 * torch.log(torch.tensor(float(n_items))) * 1.5
    off = make("full", data, align_weight=0.0).train()
    off.bpr_loss(users, pos, neg)
    assert off.align_loss(users, pos, neg) == 0
    kgat = make("kgat", data).train()
    kgat.bpr_loss(users, pos, neg)
    assert kgat.align_loss(users, pos, neg) == 0


def test_symmetric_weights_are_built_once(data):
    model = make("full", data).eval()
    model.refresh_attention()
    first = model._adjacency["text"]
    with torch.no_grad():
        model.node_embedding.weight.mul_(2.0)
    model.refresh_attention()
    assert model._adjacency["text"] is first


def test_cold_items_take_their_content_view():
    """An item without a train pair is scored by its aligned content view at the warm items'
    mean norm (per modality graph); warm items and users are unchanged."""
    tables = synthetic_tables(n_users=30, n_items=40, n_pairs=500, n_attributes=10,
                              n_triples=80, sequence_length=6, seed=3)
    split = tables["split"].copy()
    split.loc[split["item_id"] < 4, "split"] = "test"  # items 0-3 lose every train pair
    tables["split"] = split
    tables["neighbor_sequences"] = neighbor_sequences_of(tables, n=6)  # from the new train pairs
    cold_data = build_data(tables)
    base = make("full", cold_data, seed=4).eval()
    cold_model = make("full", cold_data, seed=4, cold_items="content").eval()
    cold_model.load_state_dict(base.state_dict())
    cold = cold_model.cold_item
    assert cold[:4].all() and int(cold.sum()) >= 4
    users_a, items_a = base()
    users_b, items_b = cold_model()
    assert torch.equal(users_a, users_b)
    assert torch.allclose(items_a[~cold], items_b[~cold])
    d = TINY["embed_dim"]
    for g in range(len(cold_model.graphs)):
        block_a, block_b = items_a[:, g * d:(g + 1) * d], items_b[:, g * d:(g + 1) * d]
        warm_norm = block_a[~cold].norm(dim=1).mean()
        assert torch.allclose(block_b[cold].norm(dim=1), warm_norm.expand(int(cold.sum())),
                              rtol=1e-4)
        assert not torch.allclose(block_a[cold], block_b[cold])
    with pytest.raises(ValueError, match="needs aggregator='light'"):
        make("full", cold_data, cold_items="content", align_weight=0.0)


def test_cold_items_without_their_id_are_scored_by_their_content_seed():
    """cold_items='no_id': an item without a train pair propagates its fused content seed alone
    (its untrained ID row left out); warm items and users are unchanged, and a cold item's
    representation no longer depends on its ID row."""
    tables = synthetic_tables(n_users=30, n_items=40, n_pairs=500, n_attributes=10,
                              n_triples=80, modalities=("text",), sequence_length=6, seed=3)
    split = tables["split"].copy()
    split.loc[split["item_id"] < 4, "split"] = "test"  # items 0-3 lose every train pair
    tables["split"] = split
    tables["neighbor_sequences"] = neighbor_sequences_of(tables, n=6)
    cold_data = build_data(tables)
    base = make("full", cold_data, seed=4).eval()
    no_id = make("full", cold_data, seed=4, cold_items="no_id").eval()
    no_id.load_state_dict(base.state_dict())
    cold = no_id.cold_item
    assert cold[:4].all()
    users_a, items_a = base()
    users_b, items_b = no_id()
    assert torch.allclose(users_a, users_b) and torch.allclose(items_a[~cold], items_b[~cold])
    assert not torch.allclose(items_a[cold], items_b[cold])
    with torch.no_grad():  # another ID row for a cold item changes nothing any more
        no_id.node_embedding.weight[:4] += 1.0
    assert torch.allclose(no_id()[1], items_b)
    assert items_b[cold].norm(dim=1).min() > 0  # the content seed is there


def test_a_fusion_model_without_sequences_names_the_stage_to_run():
    tables = synthetic_tables(n_users=12, n_items=15, n_pairs=80, n_attributes=5,
                              n_triples=20, seed=5, with_sequences=False)
    data = build_data(tables)  # the lake has no neighbor_sequences: nothing is recomputed here
    assert data.seq_node is None
    with pytest.raises(ValueError, match=r"neighbor_sequences table .*neighbors stage"):
        make("full", data)
    make("lightgcn", data)  # models without the fusion do not need them
