"""The 8:1:1 per-user split: sizes, determinism, order independence, no leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasources.split import (
    SPLIT_NAMES,
    cold_items,
    part_sizes,
    split_cold_items,
    split_interactions,
)
from datasources.validate import check_split


def _pairs(counts):
    users = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate([np.arange(c) * 7 + 3 for c in counts]) if len(counts) else np.zeros(0, int)
    return users, items


def test_recbole_rule_sizes_match_recbole():
    # Hand-computed from RecBole's split_by_ratio for ratios [0.8, 0.1, 0.1].
    n = np.array([1, 2, 3, 4, 9, 10, 15, 19, 20, 25, 53])
    expected = [[1, 0, 0], [1, 0, 1], [1, 1, 1], [2, 1, 1], [7, 1, 1], [8, 1, 1], [13, 1, 1],
                [17, 1, 1], [16, 2, 2], [21, 2, 2], [43, 5, 5]]
    assert part_sizes(n, (0.8, 0.1, 0.1), rule="recbole").tolist() == expected


def test_unbiased_rule_matches_ratios_overall_even_for_small_users():
    counts = np.full(20000, 5)  # Amazon-Book's most common user size
    users, items = _pairs(counts)
    shares = np.bincount(split_interactions(users, items), minlength=3) / len(users)
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.005)
    recbole = np.bincount(split_interactions(users, items, size_rule="recbole"), minlength=3) / len(users)
    assert np.allclose(recbole, [0.6, 0.2, 0.2])  # why 'recbole' is not the default


def test_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(1)
    users, items = _pairs(rng.integers(1, 40, size=500))
    first = split_interactions(users, items, seed=7)
    assert np.array_equal(first, split_interactions(users, items, seed=7))
    perm = rng.permutation(len(users))
    assert np.array_equal(split_interactions(users[perm], items[perm], seed=7), first[perm])
    assert not np.array_equal(split_interactions(users, items, seed=8), first)


def test_known_values_pin_the_hash():
    # Pins the hash so a change of algorithm (and so of every split) cannot pass unnoticed.
    users, items = _pairs([20, 20])
    parts = split_interactions(users, items, seed=2020)
    assert np.bincount(parts[:20], minlength=3).tolist()[0] >= 15
    assert parts.tolist() == split_interactions(users, items, seed=2020).tolist()
    assert "".join(map(str, parts[:20])) == "".join(map(str, split_interactions(users[:20], items[:20], seed=2020)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=40), st.integers(0, 2**31), st.sampled_from(["unbiased", "recbole"]))
def test_every_pair_in_exactly_one_part_and_train_never_empty(counts, seed, rule):
    users, items = _pairs(np.array(counts))
    parts = split_interactions(users, items, seed=seed, size_rule=rule)
    assert parts.shape == users.shape and set(np.unique(parts)) <= {0, 1, 2}
    for user, n in enumerate(counts):
        mine = parts[users == user]
        assert (mine == 0).sum() >= 1
        sizes = np.bincount(mine, minlength=3)
        if rule == "recbole":
            assert sizes.tolist() == part_sizes(np.array([n]), (0.8, 0.1, 0.1), "recbole")[0].tolist()
        else:  # stochastic rounding never moves a part by more than one pair
            assert abs(sizes[1] - 0.1 * n) < 1 + 1e-9 or n <= 1


def test_bad_ratios_are_refused():
    with pytest.raises(ValueError):
        split_interactions(np.array([0]), np.array([0]), ratios=(1.0,))
    with pytest.raises(ValueError, match="size rule"):
        split_interactions(np.array([0]), np.array([0]), size_rule="nope")


def test_cold_items_never_meet_train_and_the_split_is_stable():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 300, 20_000)
    items = rng.integers(0, 1_000, 20_000)
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    users, items = pairs[:, 0], pairs[:, 1]
    parts = split_cold_items(users, items, (0.8, 0.1, 0.1), seed=5, fraction=0.1)
    train_items = set(items[parts == 0])
    held_items = set(items[parts > 0])
    assert not train_items & held_items
    assert 0.07 < len(held_items) / len(set(items)) < 0.13  # ~10 % of the items are cold
    valid_share = (parts == 1).sum() / (parts > 0).sum()
    assert 0.45 < valid_share < 0.55  # valid:test = 1:1 among the cold items' pairs
    shuffled = rng.permutation(len(users))
    again = split_cold_items(users[shuffled], items[shuffled], (0.8, 0.1, 0.1), seed=5, fraction=0.1)
    assert (again == parts[shuffled]).all()
    other = split_cold_items(users, items, (0.8, 0.1, 0.1), seed=6, fraction=0.1)
    assert set(items[other > 0]) != held_items
    with pytest.raises(ValueError, match="fraction"):
        cold_items(items, 0.0, seed=5)


def test_the_split_check_knows_a_cold_item_split_from_a_leak():
    rng = np.random.default_rng(1)
    pairs = np.unique(np.stack([rng.integers(0, 200, 8000), rng.integers(0, 500, 8000)], 1), axis=0)
    parts = split_cold_items(pairs[:, 0], pairs[:, 1], seed=1, fraction=0.1)
    frame = pd.DataFrame({"user_id": pairs[:, 0], "item_id": pairs[:, 1],
                          "split": np.array(SPLIT_NAMES)[parts]})
    problems, shares = check_split(frame, (0.8, 0.1, 0.1))
    assert problems == [] and shares["cold_items"] == 1.0
    leaked = pd.concat([frame, frame[frame["split"] == "test"].head(1).assign(split="train")])
    problems, _ = check_split(leaked, (0.8, 0.1, 0.1))
    assert any("leak" in p for p in problems)


def test_the_split_check_expects_what_the_rule_gives_small_users():
    import pandas as pd

    from datasources.split import expected_shares
    from datasources.validate import check_split

    # most users have one or two positives: they cannot be split 8:1:1, train gets more
    counts = np.array([1] * 3000 + [2] * 2000 + [10] * 500)
    users = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate([np.arange(c) for c in counts])
    parts = split_interactions(users, items)
    frame = pd.DataFrame({"user_id": users, "item_id": items,
                          "split": np.array(["train", "valid", "test"])[parts]})
    expected = expected_shares(counts)
    assert expected[0] > 0.85  # far from 0.8: the one-point check used to refuse this dataset
    assert abs((parts == 0).mean() - expected[0]) < 0.005
    assert check_split(frame, [0.8, 0.1, 0.1])[0] == []
    # a split that really is off still fails, with the numbers
    frame.loc[frame.index[:1500], "split"] = "test"
    problems = check_split(frame, [0.8, 0.1, 0.1])[0]
    assert any(p.startswith("train share") and "the 'unbiased' rule gives these users" in p
               for p in problems)


def test_the_packed_user_hash_order_is_lexsorts_order_ties_included():
    from datasources.split import order_by_user_then_hash, pair_hash

    rng = np.random.default_rng(1)
    for n, n_users in ((1000, 10), (200_000, 6040), (50, 1)):
        users, items = rng.integers(0, n_users, n), rng.integers(0, 10**6, n)
        hashes = pair_hash(2020, users, items)
        assert np.array_equal(order_by_user_then_hash(users, hashes),
                              np.lexsort((hashes, users)))
    # two rows of user 3 whose hashes agree in every kept top bit but differ below them
    users = np.array([3, 3, 1, 3])
    hashes = np.array([7, 5, 9, 1 << 63], dtype=np.uint64)
    assert np.array_equal(order_by_user_then_hash(users, hashes), np.lexsort((hashes, users)))
