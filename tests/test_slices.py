"""Popularity and activity slices of the full ranking (model.evaluate.evaluate_slices)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.data import build_data
from model.evaluate import HEAD_SHARE, evaluate, evaluate_slices, slice_groups
from model.synthetic_data import synthetic_tables


class PopularityRanker(nn.Module):
    """Scores every item by its TRAIN popularity, the same for every user."""

    def __init__(self, data) -> None:
        super().__init__()
        count = torch.bincount(data.train_item, minlength=data.n_items).float()
        self.items = (count + torch.linspace(0, 0.5, data.n_items))[:, None]  # no exact ties
        self.users = torch.ones(data.n_users, 1)

    def forward(self):
        return self.users, self.items


@pytest.fixture(scope="module")
def data():
    return build_data(synthetic_tables(n_users=80, n_items=200, n_pairs=4000, n_attributes=5,
                                       n_triples=30, sequence_length=5, seed=7))


def test_head_is_the_most_interacted_fifth_and_quartiles_follow_activity(data):
    head, quartile = slice_groups(data)
    count = torch.bincount(data.train_item, minlength=data.n_items)
    assert int(head.sum()) == round(HEAD_SHARE * data.n_items)
    assert count[head].min() >= count[~head].max()
    activity = torch.bincount(data.train_user, minlength=data.n_users)
    assert set(quartile.tolist()) == {1, 2, 3, 4}
    means = [activity[quartile == q].double().mean() for q in range(1, 5)]
    assert means == sorted(means)


def test_slices_partition_the_ranking(data):
    model = PopularityRanker(data)
    slices = evaluate_slices(model, data, "test")
    overall = evaluate(model, data, "test")
    assert slices["all"] == overall
    # a popularity ranker fills the top 20 with head items (40 of them here): tail recall 0
    assert slices["items:tail"]["recall@20"] == 0.0
    assert slices["items:head"]["recall@20"] > overall["recall@20"]
    quartiles = [slices[f"users:q{q}"] for q in range(1, 5)]
    assert sum(q["users"] for q in quartiles) == overall["users"]
    weighted = sum(q["recall@20"] * q["users"] for q in quartiles) / overall["users"]
    assert weighted == pytest.approx(overall["recall@20"])


def test_content_baseline_is_mean_cosine_to_the_users_train_items(data):
    from model.content import ContentSimilarity

    model = ContentSimilarity(data, "text")
    users, items = model()
    text = data.features["text"]
    user = int(data.train_user[0])
    mine = data.train_item[data.train_user == user]
    vectors = torch.zeros(data.n_items, text.dim)
    item_rows = text.row[: data.n_items]
    vectors[item_rows >= 0] = text.vectors[item_rows[item_rows >= 0]]
    cosine = torch.nn.functional.cosine_similarity(vectors[:, None], vectors[None, mine], dim=2)
    expected = cosine.nan_to_num(0.0).mean(1)
    assert torch.allclose(users[user] @ items.T, expected, atol=1e-5)
    result = evaluate(model, data, "test")
    assert result["recall@20"] > 0
    with pytest.raises(ValueError, match="no 'visual' features"):
        ContentSimilarity(build_data(synthetic_tables(n_users=5, n_items=8, n_pairs=20,
                                                      n_attributes=2, n_triples=4,
                                                      modalities=("text",), seed=1)), "visual")
