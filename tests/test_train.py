"""The trainer: determinism, checkpoint resume, NaN detection, negative sampling."""

from __future__ import annotations

import math

import pytest
import torch

import model.evaluate as model_evaluate
import model.train
from model.checkpoints import load_checkpoint, load_model
from model.config import TrainSettings
from model.data import build_data
from model.evaluate import evaluate
from model.recommenders import Recommender
from model.sampling import is_member, sample_corrupt_tails, sample_negatives
from model.synthetic_data import synthetic_tables
from model.train import train

TINY = {"embed_dim": 16, "relation_dim": 8, "layer_sizes": [16, 8], "n_heads": 2,
        "n_blocks": 1, "ffn_dim": 16, "batch_size": 128, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return build_data(synthetic_tables(n_users=40, n_items=50, n_pairs=700, n_attributes=10,
                                       n_triples=100, sequence_length=6, seed=1))


def quiet(_message: str) -> None:
    pass


def strip_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_negative_sampling_never_returns_a_train_item():
    users = torch.arange(20).repeat_interleave(8)
    items = torch.arange(160) % 10  # every user holds items 0..7 or 8,9,0..5: dense rows
    keys = torch.sort(users * 10 + items).values
    neg = sample_negatives(users, 10, keys, torch.Generator().manual_seed(0))
    assert not is_member(users * 10 + neg, keys).any()
    head = torch.tensor([0, 1, 2]).repeat(50)
    relation = torch.zeros_like(head)
    true = torch.sort((head * 1 + relation) * 4 + torch.tensor([1, 2, 3]).repeat(50)).values
    tails = sample_corrupt_tails(head, relation, 4, true, 1, torch.Generator().manual_seed(0))
    assert not is_member(head * 4 + tails, true).any()


def test_training_is_deterministic(data, tmp_path):
    settings = TrainSettings(variant="full", epochs=2, deterministic=True, **TINY)
    try:
        a = train(settings, data, tmp_path / "a", log=quiet)
        b = train(settings, data, tmp_path / "b", log=quiet)
    finally:  # deterministic mode is process-wide: do not leak it into other tests
        torch.use_deterministic_algorithms(False)
    assert strip_seconds(a.history) == strip_seconds(b.history)
    assert a.test == b.test
    wa, _ = load_checkpoint(tmp_path / "a" / "best.safetensors")
    wb, _ = load_checkpoint(tmp_path / "b" / "best.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("variant", ["full", "lightgcn"])
def test_resume_after_interruption_equals_uninterrupted_run(variant, data, tmp_path):
    settings = TrainSettings(variant=variant, epochs=4, kg_loss="joint", **TINY)
    straight = train(settings, data, tmp_path / "straight", log=quiet)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(settings, data, tmp_path / "resumed", log=quiet, on_epoch_end=stop_after_two)
    _, meta = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert meta["state"]["epoch"] == 2 and not meta["state"]["stopped"]
    resumed = train(settings, data, tmp_path / "resumed", log=quiet)
    assert resumed.resumed_from_epoch == 2
    assert strip_seconds(straight.history) == strip_seconds(resumed.history)
    assert straight.test == resumed.test
    last_a, _ = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    last_b, _ = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    for key in last_a:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(last_a[key], last_b[key]), key
    # the checkpoint alone rebuilds the model for inference
    model = load_model(tmp_path / "resumed" / "best.safetensors", data, device="cpu")
    assert model()[0].shape[0] == data.n_users


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path):
    def interrupt(_record):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(TrainSettings(variant="bprmf", epochs=2, **TINY), data, tmp_path, log=quiet,
              on_epoch_end=interrupt)
    with pytest.raises(ValueError, match="other settings"):
        train(TrainSettings(variant="bprmf", epochs=2, lr=0.5, **TINY), data, tmp_path,
              log=quiet)


def test_non_finite_loss_stops_with_a_clear_error(data, tmp_path, monkeypatch):
    original = Recommender.bpr_loss

    def poisoned(self, users, pos, neg):
        bpr, reg = original(self, users, pos, neg)
        return bpr * math.nan, reg

    monkeypatch.setattr(Recommender, "bpr_loss", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite loss in epoch 1"):
        train(TrainSettings(variant="lightgcn", epochs=2, **TINY), data, tmp_path, log=quiet)


def test_early_stopping_keeps_the_best_epoch_and_the_time_cap_stops(data, tmp_path,
                                                                     monkeypatch):
    """Validation Recall@20 scripted per epoch: best at epoch 2, then two evaluations without
    a better one → patience stops after epoch 4 and the test reads epoch 2's weights."""
    real_evaluate = model.train.evaluate
    scripted = iter([0.10, 0.30, 0.20, 0.25])

    def evaluate(model_, data_, split, **kwargs):
        metrics = real_evaluate(model_, data_, split, **kwargs)
        if split == "valid" and "representations" not in kwargs:  # the per-epoch check
            metrics["recall@20"] = next(scripted)
        return metrics

    monkeypatch.setattr(model.train, "evaluate", evaluate)
    result = train(TrainSettings(variant="bprmf", epochs=50, patience=2, **TINY),
                   data, tmp_path / "p", log=quiet)
    assert (result.stopped, result.epochs_run, result.best_epoch) == ("patience", 4, 2)
    _, meta = load_checkpoint(tmp_path / "p" / "best.safetensors")
    assert meta["epoch"] == 2
    monkeypatch.setattr(model.train, "evaluate", real_evaluate)
    best = load_model(tmp_path / "p" / "best.safetensors", data, device="cpu")
    assert result.test == real_evaluate(best, data, "test")

    capped = train(TrainSettings(variant="bprmf", epochs=50, max_seconds=0.0, **TINY), data,
                   tmp_path / "t", log=quiet)
    assert capped.stopped == "time" and capped.epochs_run == 1


def test_a_search_run_never_reads_the_test_split(data, tmp_path, monkeypatch):
    real_ranked_chunks = model_evaluate._ranked_chunks
    splits = []  # the split of every ranking pass (evaluate and evaluate_slices share it)
    monkeypatch.setattr(model_evaluate, "_ranked_chunks",
                        lambda m, d, split, *args: splits.append(split) or real_ranked_chunks(
                            m, d, split, *args))
    result = train(TrainSettings(variant="bprmf", epochs=2, evaluate_test=False, **TINY),
                   data, tmp_path, log=quiet)
    assert result.test == {} and "test" not in splits and "valid" in splits
    assert result.best_valid["recall@20"] > 0


def test_alternate_kg_schedule_and_eval_every(data, tmp_path):
    result = train(TrainSettings(variant="kgat", epochs=3, kg_loss="alternate", eval_every=2,
                                 **TINY), data, tmp_path, log=quiet)
    evaluated = [r["epoch"] for r in result.history if "valid/recall@20" in r]
    assert evaluated == [2, 3]  # every 2nd epoch and the last one
    assert all(r["kg"] > 0 for r in result.history)
    best = load_model(tmp_path / "best.safetensors", data, device="cpu")
    assert result.test == evaluate(best, data, "test")  # the test reads the best epoch


def test_paper_preset_is_the_published_model_and_explicit_settings_win(data, tmp_path):
    paper = TrainSettings(variant="full", preset="paper")
    assert (paper.graph, paper.aggregator, paper.edge_weight) == ("ckg", "bi", "attention")
    assert paper.aggregator_init == "xavier" and not paper.segment_init
    assert paper.kg_loss == "joint" and paper.align_weight == 0.0
    assert (paper.layer_sizes, paper.n_blocks, paper.n_heads) == ((64, 32, 16), 3, 8)
    assert TrainSettings(variant="full", preset="paper", align_weight=0.05).align_weight == 0.05
    assert TrainSettings.from_dict(paper.to_dict()) == paper  # stored settings round-trip
    assert paper.config_hash() != TrainSettings(variant="full").config_hash()
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainSettings(preset="papers")

    from model.layers import BiInteractionPropagation

    settings = TrainSettings(variant="full", preset="paper", epochs=1, **TINY)
    result = train(settings, data, tmp_path, log=quiet)
    assert result.history[0]["kg"] > 0  # L_KG trained jointly
    model = load_model(tmp_path / "best.safetensors", data, device="cpu")
    assert all(isinstance(p, BiInteractionPropagation) for p in model.propagation.values())
    assert model.config.align_weight == 0.0 and model.config.edge_weight == "attention"


def test_negatives_can_be_drawn_from_the_train_catalogue_only():
    users = torch.arange(50).repeat(40)
    keys = torch.sort(torch.tensor([0 * 100 + 3, 1 * 100 + 5])).values
    pool = torch.tensor([3, 5, 7, 11])
    neg = sample_negatives(users, 100, keys, torch.Generator().manual_seed(0), pool=pool)
    assert set(neg.tolist()) <= {3, 5, 7, 11}
    assert not ((users == 0) & (neg == 3)).any() and not ((users == 1) & (neg == 5)).any()
    assert set(neg.tolist()) == {3, 5, 7, 11}


def test_precision_auto_is_bf16_only_where_it_was_validated(monkeypatch):
    from model import train as train_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert train_module.uses_bf16("auto", cpu, "full")
    assert not train_module.uses_bf16("auto", cpu, "lightgcn")
    assert train_module.uses_bf16("bf16", cpu, "lightgcn")
    assert not train_module.uses_bf16("fp32", cpu, "full")
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert not train_module.uses_bf16("auto", cpu, "full")
    with pytest.raises(RuntimeError, match="no native bf16"):
        train_module.uses_bf16("bf16", cpu, "full")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainSettings(precision="fp16")


def test_modality_notes_are_said_to_the_models_that_have_modalities(tmp_path):
    """Without any feature table the data notes that both modalities are absent; that is news
    for the fusion variants (their graphs are dropped), not for BPR-MF, which never had them."""
    tables = synthetic_tables(n_users=20, n_items=30, n_pairs=200, n_attributes=6, n_triples=40,
                              sequence_length=5, seed=1)
    tables.pop("clip_features")
    data = build_data(tables)
    assert any(n.startswith("modality ") for n in data.notes)
    tiny = {"epochs": 1, "batch_size": 64, "embed_dim": 8, "relation_dim": 8, "layer_sizes": (8,),
            "n_heads": 2, "n_blocks": 1, "ffn_dim": 8, "device": "cpu"}
    bprmf = train(TrainSettings(variant="bprmf", **tiny), data, tmp_path / "b", log=quiet)
    full = train(TrainSettings(variant="full", **tiny), data, tmp_path / "f", log=quiet)
    assert not any(n.startswith("modality ") for n in bprmf.notes)
    assert any(n.startswith("modality 'visual' absent") for n in full.notes)
