"""KGAT and Multi-KG4Rec (the paper's model and its ablations) in one class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import FUSION_VARIANTS, ModelConfig
from model.data import PAD, EdgeList, RecData, collaborative_edges
from model.fusion import BiTransformer, PackedTokens
from model.layers import (
    BiInteractionPropagation,
    LightPropagation,
    RelationGroups,
    SparseMatrix,
    TransR,
    knowledge_attention,
)
from model.recommender_base import Recommender, TransRLossMixin, xavier_embedding


class MultiKG4Rec(TransRLossMixin, Recommender):
    """KGAT and Multi-KG4Rec in one class (KGAT = no modality graphs, one ID graph).

    Per active modality m (a "single-modal graph", same collaborative-KG topology):

    1. content: entity features → 64-d by Linear+LeakyReLU (masked where absent); a user's
       content token is the mean content of its TRAIN items that have the modality;
    2. fusion: the Bi-Transformer reads each item's BFS sequence S_i in both modalities; the
       output at position 0 (the item itself) is the item's fused modality vector z_m(i);
    3. seed: e^{m(0)} = e_ID + g_m · W_m z_m for items, e_ID + g_m · W_m content_m for
       attribute entities that have the modality, e_ID for users;
    4. propagation: the paper's — knowledge-aware attention π (refreshed per epoch) over the
       collaborative KG + Bi-Interaction layers, layer concatenation e^{m*} — or ours —
       D^-½AD^-½ over the user-item graph, mean of layers (``graph``/``aggregator``/
       ``edge_weight``);
    5. representation: e = ‖_m e^{m*} (visual ‖ text).
    """

    uses_kg = True

    def __init__(self, config: ModelConfig, data: RecData) -> None:
        super().__init__(config, data)
        self.n_entities, self.n_nodes = data.n_entities, data.n_nodes
        # items, attribute entities, users: one Xavier block each (see xavier_embedding)
        self.node_embedding = xavier_embedding(
            data.n_nodes, config.embed_dim, (data.n_items, data.n_entities - data.n_items)
            if config.segment_init else ())
        self._build_graph(config, data)
        wanted, mode = FUSION_VARIANTS.get(config.variant, ((), "bi"))
        self.modalities = self._available_modalities(config.variant, wanted, data)
        self.graphs = self.modalities or ("id",)
        self._build_propagation(config)
        if self.modalities:
            self._build_fusion(config, data, mode)
            self._register_sequences(config, data)
            for m in self.modalities:
                self._register_content(m, data)
        # packed fusion (kept tokens only) in training and scoring; False: the padded reference
        self.packed_fusion = True
        self._register_cold_items(config, data)
        self._views: dict[str, tuple[torch.Tensor, ...]] = {}  # last training forward
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        out_rows = torch.cat([torch.arange(data.n_items),
                              torch.arange(data.n_entities, data.n_nodes)])
        self.register_buffer("out_rows", out_rows.to(data.device), persistent=False)

    # ----------------------------------------------------------------- construction

    def _build_graph(self, config: ModelConfig, data: RecData) -> None:
        """TransR over every relation; propagation over the collaborative KG or only its
        user-item edges (relations 0/1: user → item and the inverse)."""
        edges = collaborative_edges(data)
        self.transr = TransR(edges.n_relations, config.embed_dim, config.relation_dim)
        if config.graph == "interactions":
            keep = edges.relation < 2
            edges = EdgeList(edges.head[keep], edges.relation[keep], edges.tail[keep],
                             edges.n_nodes, edges.n_relations)
        self._adjacency: dict[str, SparseMatrix] = {}
        self._set_graph(edges)

    def _available_modalities(self, variant: str, wanted: tuple[str, ...], data: RecData
                              ) -> tuple[str, ...]:
        """The variant's modalities that the data has; each missing one is noted."""
        available = tuple(m for m in wanted if m in data.features)
        for m in wanted:
            if m not in data.features and not any(f"modality {m!r}" in n for n in data.notes):
                # the data already says it when the whole dataset lacks it: say it once
                self.notes.append(f"{variant}: modality {m!r} absent from the data: its "
                                  "graph is dropped and its keys are masked")
        if wanted and not available:
            self.notes.append(f"{variant}: no modality available: {self._id_only_model()}")
        if available and data.seq_node is None:
            raise ValueError("Multi-KG4Rec needs the neighbor_sequences table (materialize the "
                             "neighbors stage)")
        return available

    def _id_only_model(self) -> str:
        """What the model is when no modality is left: its ID graph and propagation alone."""
        c = self.config
        how = f"{c.aggregator} aggregator, {c.edge_weight} edge weights"
        if c.graph == "interactions":
            model = ("identical to LightGCN over the train interactions"
                     if (c.aggregator, c.edge_weight) == ("light", "symmetric")
                     else f"ID embeddings propagated over the train user–item graph ({how})")
            return (f"the model is {model}: with graph=interactions the KG reaches the model "
                    "only through the modalities' BFS sequences, so the KG is not used (unless "
                    "kg_loss trains TransR on it)")
        model = ("KGAT" if (c.aggregator, c.edge_weight) == ("bi", "attention")
                 else f"KGAT-like ({how})")
        return (f"the model is {model}: ID embeddings propagated over the collaborative KG "
                "(train interactions + KG triples), no content")

    def _build_propagation(self, config: ModelConfig) -> None:
        d = config.embed_dim
        if config.aggregator == "light":
            self.propagation = nn.ModuleDict({
                g: LightPropagation(d, len(config.layer_sizes)) for g in self.graphs})
        else:
            self.propagation = nn.ModuleDict({
                g: BiInteractionPropagation(d, config.layer_sizes, config.mess_dropout,
                                            config.normalize_layers, config.aggregator_init)
                for g in self.graphs})

    def _build_fusion(self, config: ModelConfig, data: RecData, mode: str) -> None:
        """The Bi-Transformer and, per modality, the feature projection, the seed map W_m and
        gate g_m, the vector of entities without the modality, and the position embeddings."""
        d, modalities = config.embed_dim, self.modalities
        self.fusion = BiTransformer(modalities, d, config.n_heads, config.ffn_dim,
                                    config.n_blocks, config.intra_layers,
                                    config.attn_dropout, mode,
                                    checkpoint=config.fusion_checkpoint)
        self.proj = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(data.features[m].dim, d), nn.LeakyReLU())
            for m in modalities})
        self.seed_map = nn.ModuleDict({m: nn.Linear(d, d, bias=False) for m in modalities})
        self.gate = nn.ParameterDict({
            m: nn.Parameter(torch.tensor(float(config.content_gate))) for m in modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in modalities})
        self.type_embedding = nn.Embedding(3, d)
        self.hop_embedding = nn.Embedding(config.max_hop + 1, d)
        self.modality_embedding = nn.ParameterDict({
            m: nn.Parameter(torch.zeros(d)) for m in modalities})
        for embedding in (self.type_embedding, self.hop_embedding):
            nn.init.normal_(embedding.weight, std=0.02)

    def _register_sequences(self, config: ModelConfig, data: RecData) -> None:
        """The BFS sequences S_i, cut to ``seq_len`` here (the one place that truncates)."""
        length = config.seq_len or data.seq_node.shape[1]
        node = data.seq_node[:, :length]
        self.register_buffer("seq_node", node.clamp(min=0), persistent=False)
        self.register_buffer("seq_real", node != PAD, persistent=False)
        self.register_buffer("seq_type", data.seq_type[:, :length].clamp(min=0),
                             persistent=False)
        self.register_buffer("seq_hop", data.seq_hop[:, :length].clamp(0, config.max_hop),
                             persistent=False)

    def _register_content(self, m: str, data: RecData) -> None:
        """Modality m's vectors, which nodes have it, and each user's content profile: the
        mean content of the user's train items that have the modality."""
        f = data.features[m]
        self.register_buffer(f"{m}_vectors", f.vectors, persistent=False)
        self.register_buffer(f"{m}_ids", f.entity_ids, persistent=False)
        has_node = torch.zeros(data.n_nodes, dtype=torch.bool, device=f.has.device)
        has_node[: data.n_entities] = f.has
        keep = f.has[data.train_item]
        u, i = data.train_user[keep], data.train_item[keep]
        pairs = torch.unique(u * data.n_items + i)
        u, i = pairs // data.n_items, pairs % data.n_items
        count = torch.bincount(u, minlength=data.n_users).float()
        has_node[data.n_entities:] = count > 0
        profile = SparseMatrix(u, i, 1.0 / count[u], (data.n_users, data.n_items))
        setattr(self, f"_{m}_profile", profile)
        self.register_buffer(f"{m}_has", has_node, persistent=False)

    def _register_cold_items(self, config: ModelConfig, data: RecData) -> None:
        if config.cold_items == "content" and (config.aggregator != "light"
                                               or config.align_weight <= 0):
            raise ValueError("cold_items='content' needs aggregator='light' and align_weight > 0 "
                             "(the content view lives in the space the alignment ties to e*)")
        self._cold_views: dict[str, torch.Tensor] = {}
        cold = torch.bincount(data.train_item, minlength=data.n_items) == 0
        self.register_buffer("cold_item", cold, persistent=False)
        cold_node = torch.zeros(data.n_nodes, dtype=torch.bool, device=cold.device)
        cold_node[: data.n_items] = cold
        self.register_buffer("cold_node", cold_node, persistent=False)

    # ----------------------------------------------------------------- graph state

    def _set_graph(self, edges: EdgeList) -> None:
        self.register_buffer("edge_head", edges.head, persistent=False)
        self.register_buffer("edge_tail", edges.tail, persistent=False)
        self.relation_groups = RelationGroups(edges.head, edges.relation, edges.tail)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        device = self.edge_head.device
        self.relation_groups = self.relation_groups.to(device)
        for m in getattr(self, "modalities", ()):
            name = f"_{m}_profile"
            setattr(self, name, getattr(self, name).to(device))
        self._adjacency = {k: v.to(device) for k, v in self._adjacency.items()}
        return out

    # ----------------------------------------------------------------- pieces

    def content(self, m: str) -> torch.Tensor:
        """(n_nodes, d) content table of modality m; rows without it are zero AND masked."""
        proj = self.proj[m](getattr(self, f"{m}_vectors"))
        table = proj.new_zeros(self.n_nodes, proj.shape[1])
        table[getattr(self, f"{m}_ids")] = proj
        profile = getattr(self, f"_{m}_profile") @ table[: self.n_items]
        return torch.cat([table[: self.n_entities], profile.to(table.dtype)])

    def fuse(self, contents: dict[str, torch.Tensor], need_weights: bool = False):
        """Bi-Transformer over every item's sequence; returns z_m (n_items, d), has_z_m and,
        with ``need_weights``, the last block's attention weights (the padded reference path;
        otherwise the packed one, equal to it: tests/test_model.py)."""
        valid = {m: getattr(self, f"{m}_has")[self.seq_node] & self.seq_real
                 for m in self.modalities}
        reach = torch.stack([valid[m].any(1) for m in self.modalities]).any(0)
        if need_weights or not self.packed_fusion:
            x = {m: self._tokens(contents[m], m, valid[m], self.seq_node, self.seq_type,
                                 self.seq_hop) for m in self.modalities}
            out, weights = self.fusion(x, valid, need_weights, first_only=True)
            return {m: out[m][:, 0] for m in self.modalities}, reach, weights
        hidden, index = {}, {}
        for m in self.modalities:
            keep = PackedTokens.keep_mask(valid[m]).flatten().nonzero(as_tuple=True)[0]
            kept = [t.flatten()[keep] for t in (valid[m], self.seq_node, self.seq_type,
                                                 self.seq_hop)]
            hidden[m], index[m] = self._tokens(contents[m], m, *kept), keep
        tokens = PackedTokens(hidden, valid, index, *self.seq_node.shape)
        return self.fusion.item_outputs(tokens), reach, {}

    def _tokens(self, content: torch.Tensor, m: str, has: torch.Tensor, node: torch.Tensor,
                kind: torch.Tensor, hop: torch.Tensor) -> torch.Tensor:
        """Input vectors of tokens (any shape of index tensors): the node's content (the
        learned "missing" vector where the node lacks modality m) + type + hop + modality."""
        x = torch.where(has[..., None], content[node], self.missing[m].to(content.dtype))
        return (x + self.type_embedding(kind) + self.hop_embedding(hop)
                + self.modality_embedding[m])

    def seed_embeddings(self) -> dict[str, torch.Tensor]:
        """Layer-0 embeddings of every single-modal graph."""
        ids = self.node_embedding.weight
        if self.config.cold_items == "no_id" and self.modalities:
            # an item without a train pair never gets a BPR gradient: its ID row is its random
            # initialisation, noise that would outweigh what its content says
            ids = ids.masked_fill(self.cold_node[:, None], 0.0)
        if not self.modalities:
            return {"id": ids}
        contents = {m: self.content(m) for m in self.modalities}
        z, reach, _ = self.fuse(contents)
        seeds = {}
        for m in self.modalities:
            entity_has = getattr(self, f"{m}_has")[: self.n_entities].clone()
            entity_has[: self.n_items] = False  # items use the fused vector instead
            add = torch.where(entity_has[:, None], contents[m][: self.n_entities],
                              torch.zeros_like(contents[m][: self.n_entities]))
            add = torch.cat([z[m].to(add.dtype) * reach[:, None], add[self.n_items:]])
            add = self.gate[m] * self.seed_map[m](add)
            pad = add.new_zeros(self.n_nodes - add.shape[0], add.shape[1])
            seeds[m] = ids + torch.cat([add, pad]).to(ids.dtype)
            if self.config.cold_items == "content":
                self._cold_views[m] = self.seed_map[m](z[m])
            if self.training and self.config.align_weight > 0:  # content views for align_loss
                user_has = getattr(self, f"{m}_has")[self.n_entities:]
                self._views[m] = (self.seed_map[m](z[m]), reach,
                                  self.seed_map[m](contents[m][self.n_entities:]), user_has)
        return seeds

    @torch.no_grad()
    def refresh_attention(self) -> None:
        symmetric = self.config.edge_weight == "symmetric"
        if symmetric and self._adjacency:
            return  # degree weights do not depend on the parameters: built once
        was = self.training
        self.eval()
        head, tail = self.edge_head, self.edge_tail
        # rows read by the score: items (0..n_items-1) then users, renumbered contiguously
        out_edge = (head < self.n_items) | (head >= self.n_entities)
        out_head = torch.where(head < self.n_items, head,
                               head - self.n_entities + self.n_items)[out_edge]
        n_out = self.n_items + self.n_users
        if symmetric:
            deg = torch.bincount(head, minlength=self.n_nodes).float().clamp(min=1)
            weight = deg[head].rsqrt() * deg[tail].rsqrt()
        # π needs each graph's current layer-0 embeddings; the degree weights need nothing
        seeds = dict.fromkeys(self.graphs) if symmetric else self.seed_embeddings()
        for g, seed in seeds.items():
            if symmetric:
                pi = weight
            else:
                pi = knowledge_attention(seed, head, self.relation_groups, self.transr,
                                         self.n_nodes)
            self._adjacency[g] = SparseMatrix(head, tail, pi, (self.n_nodes, self.n_nodes))
            self._adjacency[f"{g}:out"] = SparseMatrix(out_head, tail[out_edge], pi[out_edge],
                                                       (n_out, self.n_nodes))
        self.train(was)

    def forward(self):
        if not self._adjacency:
            self.refresh_attention()
        out_rows = self.out_rows
        outs = [self.propagation[g](seed, self._adjacency[g], out_rows,
                                    self._adjacency[f"{g}:out"])
                for g, seed in self.seed_embeddings().items()]
        if self.config.cold_items == "content" and self.modalities:
            outs = [self._content_for_cold(g, out) for g, out in zip(self.graphs, outs,
                                                                    strict=True)]
        final = torch.cat(outs, dim=1)
        if self.training and self.config.align_weight > 0:
            self._outputs = [out.split([out.shape[0] - self.n_users, self.n_users])
                             for out in outs]  # per graph: (items, users)
        return final[self.n_items:], final[: self.n_items]

    def _content_for_cold(self, m: str, out: torch.Tensor) -> torch.Tensor:
        """Rows of items without a train pair ← the item's content view in the aligned space
        (align_loss pulls e*_i towards W_m z_m(i) for every warm item), at the warm items'
        mean norm: a cold item is then scored by what its content says."""
        view = self._cold_views[m]
        cold = self.cold_item
        warm_norm = out[: self.n_items][~cold].norm(dim=1).mean()
        content = F.normalize(view.float(), dim=1).to(out.dtype) * warm_norm
        items = torch.where(cold[:, None], content, out[: self.n_items])
        return torch.cat([items, out[self.n_items:]])

    def align_loss(self, users, pos, neg):
        """ID-content contrastive alignment (our addition, MODEL.md): per modality graph, the
        propagated representation of each batch item (user) must pick out its own content
        view W_m z_m(i) (W_m content_m(u)) among the batch's, InfoNCE at temperature τ.
        Pulls collaborative and content spaces together and spreads the representations
        (the uniformity effect of SimGCL-style objectives)."""
        if not self.modalities or self.config.align_weight <= 0 or not self._views:
            return super().align_loss(users, pos, neg)
        items = torch.unique(torch.cat([pos, neg]))
        batch_users = torch.unique(users)
        total = torch.zeros((), device=users.device)
        d = self.config.embed_dim
        for g, (item_out, user_out) in zip(self.graphs, self._outputs, strict=True):
            item_view, item_has, user_view, user_has = self._views[g]
            for rows, out, view, has in ((items, item_out, item_view, item_has),
                                         (batch_users, user_out, user_view, user_has)):
                rows = rows[has[rows]]
                if rows.numel() > self.config.align_max_rows:
                    pick = torch.randperm(rows.numel(), device=rows.device)
                    rows = rows[pick[: self.config.align_max_rows]]
                if rows.numel() < 2:
                    continue
                a = F.normalize(out[rows, :d].float(), dim=1)
                b = F.normalize(view[rows].float(), dim=1)
                logits = a @ b.T / self.config.align_temperature
                target = torch.arange(rows.numel(), device=rows.device)
                total = total + F.cross_entropy(logits, target)
        return total / len(self.graphs)

    def regularized_embeddings(self, users, items):
        return [self.node_embedding(torch.cat([users + self.n_entities, items]))]

    @torch.no_grad()
    def item_modality_attention(self) -> torch.Tensor | None:
        """Attention mass the item's own queries (position 0, last cross block) put on visual
        and on text keys, averaged over heads and over the active query streams."""
        if not self.modalities or len(self.modalities) < 2:
            if len(self.modalities) == 1:  # one stream: all its mass is on its own modality
                mass = torch.zeros(self.n_items, 2, device=self.edge_head.device)
                mass[:, 0 if self.modalities[0] == "visual" else 1] = 1.0
                return mass
            return None
        was = self.training
        self.eval()
        contents = {m: self.content(m) for m in self.modalities}
        _, _, weights = self.fuse(contents, need_weights=True)
        self.train(was)
        length = self.seq_node.shape[1]
        total = torch.zeros(self.n_items, 2, device=self.seq_node.device)
        streams = 0
        for m, w in weights.items():  # w: (n_items, L, keys)
            first = w[:, 0]
            if first.shape[1] == 2 * length:  # [visual keys | text keys]
                total += torch.stack([first[:, :length].sum(1), first[:, length:].sum(1)], 1)
            else:  # one-direction stream: only its own keys
                col = 0 if m == "visual" else 1
                total[:, col] += first.sum(1)
            streams += 1
        return total / max(streams, 1)
