"""strategy: predefined — a source's own published split (KGAT's train.txt/test.txt).

Test pairs are exactly the source's test fold; validation is carved per user from its train
fold by the seeded rule (1/9 of it for 8:1:1); the check recognises such a split by its layout.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from datasources.fetch import declared_folds
from datasources.split import (
    SPLIT_NAMES,
    expected_shares,
    predefined_split_problems,
    split_interactions,
    split_predefined,
    split_problems,
)

REPO = Path(__file__).resolve().parents[1]


def _folded_pairs(n_users=400, seed=0):
    """Users with 3..30 pairs, about a fifth of each user's pairs in the test fold (as KGAT)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 31, n_users)
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([rng.choice(5000, c, replace=False) for c in counts])
    folds = np.where(rng.random(len(users)) < 0.2, "test", "train").astype(object)
    return users, items, folds


class _Tables:
    """A table reader (``read_pandas``), as the checks get from a snapshot or a transaction."""

    def __init__(self, **frames):
        self.frames = frames

    def read_pandas(self, table, columns=None):
        frame = self.frames[table]
        if columns is not None and not set(columns) <= set(frame.columns):
            import pyarrow as pa

            raise pa.ArrowInvalid(f"No match for FieldRef.Name({columns})")
        return frame if columns is None else frame[columns]


def _frame(users, items, parts):
    return pd.DataFrame({"user_id": users, "item_id": items, "split": np.array(SPLIT_NAMES)[parts]})


def test_test_is_exactly_the_test_fold_and_valid_comes_only_from_train():
    users, items, folds = _folded_pairs()
    parts = split_predefined(users, items, folds, (0.8, 0.1, 0.1), seed=3)
    assert ((parts == 2) == (folds == "test")).all()
    assert set(folds[parts == 1]) == {"train"}
    train_fold = folds == "train"
    # the valid share of the train fold is what the rule gives 1:8 (renormalised 0.1 / 0.9)
    want = expected_shares(np.bincount(users[train_fold]), (0.8, 0.1))[1]
    assert abs(want - 1 / 9) < 0.01
    assert abs((parts[train_fold] == 1).mean() - want) < 0.01
    # every user keeps a train pair
    assert (np.bincount(users[parts == 0], minlength=users.max() + 1)[np.unique(users[train_fold])] >= 1).all()
    # the carving is the random split's seeded rule on the train fold, ratios renormalised
    assert np.array_equal(parts[train_fold],
                          split_interactions(users[train_fold], items[train_fold], (0.8, 0.1), 3))


def test_seeded_deterministic_and_independent_of_row_order():
    users, items, folds = _folded_pairs(seed=1)
    first = split_predefined(users, items, folds, seed=7)
    assert np.array_equal(first, split_predefined(users, items, folds, seed=7))
    perm = np.random.default_rng(2).permutation(len(users))
    assert np.array_equal(split_predefined(users[perm], items[perm], folds[perm], seed=7), first[perm])
    other = split_predefined(users, items, folds, seed=8)
    assert not np.array_equal(other, first) and np.array_equal(other == 2, first == 2)


def test_a_published_valid_fold_is_used_as_is():
    users, items, folds = _folded_pairs(seed=2)
    folds = folds.copy()
    folds[::13] = "valid"
    parts = split_predefined(users, items, folds)
    assert np.array_equal(parts, np.array([SPLIT_NAMES.index(f) for f in folds]))


def test_pairs_without_a_known_fold_are_refused():
    with pytest.raises(ValueError, match="2 pairs have no fold or an unknown one"):
        split_predefined(np.array([0, 0, 1]), np.array([1, 2, 3]), ["train", None, "holdout"])
    with pytest.raises(ValueError, match=r"unknown one \(e.g. 'holdout'\)"):
        split_predefined(np.array([0]), np.array([1]), ["holdout"])


def test_the_folds_option_names_one_fold_per_location():
    assert declared_folds("interactions", ("a", "b"), {"folds": "train, test"}) == ("train", "test")
    assert declared_folds("interactions", ("a",), {}) is None
    assert declared_folds("interactions", ("a",), {"folds": ""}) is None  # a run config clears it
    with pytest.raises(ValueError, match="2 folds for 1 locations"):
        declared_folds("interactions", ("a",), {"folds": "train,test"})
    with pytest.raises(ValueError, match="unknown fold 'dev'"):
        declared_folds("interactions", ("a", "b"), {"folds": "train,dev"})
    with pytest.raises(ValueError, match="interactions table only"):
        declared_folds("items", ("a",), {"folds": "train"})


def test_the_check_recognises_a_predefined_split_and_its_faults():
    users, items, folds = _folded_pairs(n_users=2000, seed=4)
    parts = split_predefined(users, items, folds)
    split = _frame(users, items, parts)
    interactions = pd.DataFrame({"user_id": users, "item_id": items, "fold": folds})
    tables = _Tables(split=split, interactions=interactions)
    problems, shares = split_problems(tables, (0.8, 0.1, 0.1))
    assert problems == [] and shares["predefined"] == 1.0 and 0.17 < shares["test"] < 0.23
    # the same split without the folds is judged as a random 8:1:1 one: its test share is off
    problems, _ = split_problems(_Tables(split=split, interactions=interactions.drop(columns="fold")),
                                 (0.8, 0.1, 0.1))
    assert any(p.startswith("test share") for p in problems)
    # valid taken from the test fold, or a train share off the renormalised ratio, is refused
    broken = split.copy()
    broken.loc[np.flatnonzero(folds == "test")[:3], "split"] = "valid"
    problems, _ = predefined_split_problems(broken, interactions, (0.8, 0.1, 0.1))
    assert any("break the source's test fold" in p for p in problems)
    lopsided = split.copy()
    lopsided.loc[np.flatnonzero((folds == "train") & (parts == 0))[:1500], "split"] = "valid"
    problems, _ = predefined_split_problems(lopsided, interactions, (0.8, 0.1, 0.1))
    assert any(p.startswith("train fold: valid share") for p in problems)
    # a random split of a dataset that declares folds is still checked as a random split
    random_parts = split_interactions(users, items)
    problems, shares = split_problems(_Tables(split=_frame(users, items, random_parts),
                                              interactions=interactions), (0.8, 0.1, 0.1))
    assert problems == [] and "predefined" not in shares


def test_amazon_book_declares_kgat_folds_and_keeps_random_as_the_default():
    from assets.ingest import SplitConfig
    from datasources.registry import get_dataset

    interactions = get_dataset("amazon-book").variant("kgat").tables["interactions"]
    assert [Path(loc).name for loc in interactions.locations] == ["train.txt", "test.txt"]
    assert declared_folds("interactions", interactions.locations, interactions.options) == ("train", "test")
    assert SplitConfig().strategy == "random"


@pytest.mark.realdata
def test_real_amazon_book_test_txt_is_exactly_the_predefined_test_split(shared_data, tmp_path, monkeypatch):
    """KGAT amazon-book through configs/offline.yaml (local copies of train.txt/test.txt, which
    inherit the declared folds): the predefined test split is test.txt, pair for pair."""
    from assets.ingest import IngestConfig, configured_variant
    from datasources.fetch import load_dataset, resolve_variant
    from datasources.http import HttpClient
    from datasources.validate import check_split

    monkeypatch.chdir(REPO)  # offline.yaml paths are relative to the repository root
    raw = yaml.safe_load((REPO / "configs" / "offline.yaml").read_text())
    config = IngestConfig(**raw["ops"]["source_files"]["config"]).datasets["amazon-book"]
    config.tables.pop("item_metadata", None)  # titles play no part here
    variant = configured_variant("amazon-book", config)
    with HttpClient(tmp_path / "cache") as client:
        resolved = resolve_variant(variant, client, tmp_path / "extracted")
    assembled = load_dataset(resolved, key_space=variant.key_space)
    inter = assembled.interactions
    assert assembled.report["pairs_in_two_folds"] == 0

    parts = split_predefined(inter["user_id"].to_numpy(), inter["item_id"].to_numpy(),
                             inter["fold"].to_numpy(), (0.8, 0.1, 0.1), seed=2020)
    counts = np.bincount(parts, minlength=3).tolist()
    assert counts[2] == 193_920 and counts[0] + counts[1] == 652_514
    # pair for pair: our ids are KGAT's indices (both lists are ordered by remap id)
    assert (assembled.users["source_index"].to_numpy() == assembled.users["user_id"].to_numpy()).all()
    assert (assembled.items["source_index"].to_numpy() == assembled.items["item_id"].to_numpy()).all()
    test_pairs = set()
    with gzip.open(shared_data / "amazon_book_kgat" / "test.txt.gz", "rt") as handle:
        for line in handle:
            user, *items = map(int, line.split())
            test_pairs.update((user, item) for item in items)
    predicted = inter.loc[parts == 2, ["user_id", "item_id"]]
    assert set(zip(predicted["user_id"].tolist(), predicted["item_id"].tolist(), strict=True)) == test_pairs

    split = _frame(inter["user_id"].to_numpy(), inter["item_id"].to_numpy(), parts)
    problems, shares = split_problems(_Tables(split=split, interactions=inter), (0.8, 0.1, 0.1))
    assert problems == [] and shares["predefined"] == 1.0
    assert abs(shares["valid_of_train_fold"] - 1 / 9) < 0.01
    print(f"\namazon-book predefined: train {counts[0]:,}, valid {counts[1]:,}, test {counts[2]:,}; "
          f"the random-split check alone would say: {check_split(split, (0.8, 0.1, 0.1))[0]}")
