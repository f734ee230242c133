"""Ranking metrics and the full-ranking evaluator against brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.data import build_data
from model.evaluate import evaluate
from model.metrics import (
    hit_at_k,
    kgat_ndcg_at_k,
    metric_sums,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    summarize,
)
from model.synthetic_data import synthetic_tables

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference(ranking: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user, plain Python."""
    top = ranking[:k]
    hits = [1 if item in relevant else 0 for item in top]
    first = next((r for r, h in enumerate(hits) if h), None)
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return {
        "recall": sum(hits) / len(relevant),
        "precision": sum(hits) / k,
        "hit": float(any(hits)),
        "mrr": 0.0 if first is None else 1 / (first + 1),
        "ndcg": dcg / idcg,
    }


FUNCTIONS = {"recall": recall_at_k, "precision": precision_at_k, "hit": hit_at_k,
             "mrr": mrr_at_k, "ndcg": ndcg_at_k}


def test_metrics_match_brute_force_on_random_rankings():
    rng = np.random.default_rng(0)
    n_items, n_users = 50, 200
    rankings, relevant = [], []
    for _ in range(n_users):
        rankings.append(rng.permutation(n_items).tolist())
        relevant.append(set(rng.choice(n_items, rng.integers(1, 30), replace=False).tolist()))
    hits = torch.tensor([[item in rel for item in rank[:20]]
                         for rank, rel in zip(rankings, relevant, strict=True)])
    n_rel = torch.tensor([len(r) for r in relevant])
    for k in (1, 5, 10, 20):
        expected = [reference(rank, rel, k) for rank, rel in zip(rankings, relevant, strict=True)]
        for name, fn in FUNCTIONS.items():
            got = fn(hits, n_rel, k).tolist()
            want = [e[name] for e in expected]
            assert got == pytest.approx(want, abs=1e-12), (name, k)


def test_standard_ndcg_differs_from_kgat_definition():
    # 3 relevant items, one hit at rank 1: the ideal list has 3 hits on top.
    hits = torch.tensor([[True] + [False] * 19])
    n_rel = torch.tensor([3])
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(hits, n_rel, 20).item() == pytest.approx(1 / ideal)
    assert kgat_ndcg_at_k(hits, n_rel, 20).item() == pytest.approx(1.0)  # the well-known bug
    # one hit at rank 5 of 1 relevant item: both agree (the retrieved hits are all of GT)
    hits = torch.zeros(1, 20, dtype=torch.bool)
    hits[0, 4] = True
    assert ndcg_at_k(hits, torch.tensor([1]), 20).item() == pytest.approx(1 / math.log2(6))
    assert kgat_ndcg_at_k(hits, torch.tensor([1]), 20).item() == pytest.approx(1 / math.log2(6))
    # ... but with 4 relevant items KGAT ignores the 3 it missed
    assert ndcg_at_k(hits, torch.tensor([4]), 20).item() < 0.2
    # more relevant items than k: the ideal DCG is capped at k positions
    hits = torch.ones(1, 10, dtype=torch.bool)
    assert ndcg_at_k(hits, torch.tensor([50]), 10).item() == pytest.approx(1.0)


def test_users_without_held_out_items_are_not_averaged():
    hits = torch.tensor([[True, False], [False, False], [False, True]])
    n_rel = torch.tensor([1, 0, 2])
    out = summarize(metric_sums(hits, n_rel, ks=(2,)))
    assert out["users"] == 2
    assert out["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert out["mrr@2"] == pytest.approx((1 + 0.5) / 2)


class FixedScores(torch.nn.Module):
    """A "model" with given user/item representations."""

    def __init__(self, users, items):
        super().__init__()
        self.users, self.items = users, items

    def forward(self):
        return self.users, self.items


def test_full_ranking_evaluator_matches_brute_force():
    tables = synthetic_tables(n_users=40, n_items=60, n_pairs=700, with_sequences=False)
    data = build_data(tables)
    gen = torch.Generator().manual_seed(1)
    users = torch.randn(data.n_users, 8, generator=gen)
    items = torch.randn(data.n_items, 8, generator=gen)
    scores = (users @ items.T).numpy()

    def brute(split: str, excluded: tuple[str, ...], allowed=None) -> dict[str, float]:
        seen = {u: set() for u in range(data.n_users)}
        for part in excluded:
            for u, i in zip(getattr(data, f"{part}_user").tolist(),
                            getattr(data, f"{part}_item").tolist(), strict=True):
                seen[u].add(i)
        truth = {}
        for u, i in zip(getattr(data, f"{split}_user").tolist(),
                        getattr(data, f"{split}_item").tolist(), strict=True):
            truth.setdefault(u, set()).add(i)
        sums: dict[str, float] = {}
        for u, rel in truth.items():
            ranking = [i for i in np.argsort(-scores[u], kind="stable").tolist()
                       if i not in seen[u] and (allowed is None or i in allowed)]
            for k in (10, 20):
                for name, value in reference(ranking, rel, k).items():
                    sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + value
        return {key: value / len(truth) for key, value in sums.items()}

    model = FixedScores(users, items)
    for split, excluded in (("valid", ("train",)), ("test", ("train", "valid"))):
        got = evaluate(model, data, split, chunk_users=7)  # several chunks
        want = brute(split, excluded)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (split, key)
        # candidates: only the masked items are ranked (the cold-start protocol)
        allowed = torch.rand(data.n_items, generator=gen) < 0.4
        got = evaluate(model, data, split, chunk_users=7, candidates=allowed)
        want = brute(split, excluded, set(allowed.nonzero().flatten().tolist()))
        assert got["recall@20"] != evaluate(model, data, split)["recall@20"]
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (split, "candidates", key)
        data.candidate_items = allowed  # the data's default, what training validates with
        assert evaluate(model, data, split, chunk_users=7) == got
        data.candidate_items = None
