"""bench/train_speed.py: its FLOP count of the fusion is torch's count of the same forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import model.fusion as model_fusion
from model.config import TrainSettings
from model.data import build_data
from model.recommenders import build_model
from model.synthetic_data import synthetic_tables
from tests.support.bench import load_bench

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train_speed():
    return load_bench("train_speed")


def _matmul_attention(q, k, v, mask, dropout):
    """The attention as two plain matmuls, which torch's FLOP counter sees (CPU SDPA it does
    not)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num() @ v


@pytest.mark.parametrize("variant", ["full", "t2v"])
def test_fusion_flops_match_torchs_flop_counter(variant, monkeypatch):
    data = build_data(synthetic_tables(n_users=30, n_items=40, n_pairs=400, n_attributes=10,
                                       n_triples=60, sequence_length=8, seed=3))
    settings = TrainSettings(variant=variant, embed_dim=16, n_heads=2, ffn_dim=32)
    torch.manual_seed(0)
    model = build_model(settings.model_config(), data)
    contents = {m: model.content(m).detach() for m in model.modalities}
    monkeypatch.setattr(model_fusion, "attention", _matmul_attention)
    with FlopCounterMode(display=False) as counter:
        model.fuse(contents)
    flops = _train_speed().fusion_flops(model, settings)
    assert flops["total"] == counter.get_total_flops()
    assert flops["attention"] > 0.1 * flops["total"]
