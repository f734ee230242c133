"""Assembling parsed frames into users/items/interactions: ids, catalogue order, counted drops."""

from __future__ import annotations

import pandas as pd
import pytest

from datasources.assemble import assemble_dataset, natural_order
from datasources.formats import parse_table
from tests.support import fixtures


def _interactions(rows):
    frame = pd.DataFrame(rows, columns=["user_key", "item_key", "rating", "ts"])
    frame["label"] = pd.array([pd.NA] * len(frame), dtype="Int8")
    return frame.astype({"ts": "Int64"})


def test_natural_order_is_numeric_for_numeric_keys():
    assert natural_order(pd.Series(["10", "9", "100", "9"])).tolist() == ["9", "10", "100"]
    assert natural_order(pd.Series(["b", "a10", "a9"])).tolist() == ["a10", "a9", "b"]


def test_ids_follow_catalogue_and_inactive_items_are_dropped_and_counted():
    items = pd.DataFrame({"item_key": ["5", "1", "3", "9"], "title": ["e", "a", "c", "never"]})
    inter = _interactions([("u2", "3", 4.0, 2), ("u1", "5", 1.0, 1), ("u1", "1", 2.0, 3), ("u1", "7", 5.0, 4)])
    out = assemble_dataset(inter, items)
    # Catalogue order (5, 1, 3), then keys missing from the catalogue (7), inactive 9 dropped.
    assert out.items.item_key.tolist() == ["5", "1", "3", "7"]
    assert out.items.item_id.tolist() == [0, 1, 2, 3]
    assert out.report["items_inactive_catalogue_entries_dropped"] == 1
    assert out.report["items_keys_missing_from_catalogue"] == 1
    assert out.users.user_key.tolist() == ["u1", "u2"]
    assert out.interactions[["user_id", "item_id"]].values.tolist() == [[0, 0], [0, 1], [0, 3], [1, 2]]
    kept = assemble_dataset(inter, items, keep_inactive=True)
    assert "9" in kept.items.item_key.tolist()


def test_duplicates_keep_latest_and_null_items_are_counted():
    inter = _interactions([("1", "a", 1.0, 10), ("1", "a", 5.0, 20), ("2", None, 3.0, 5), ("2", "b", 3.0, 5)])
    out = assemble_dataset(inter)
    assert out.report["duplicate_pairs_dropped"] == 1
    assert out.report["rows_with_unknown_item_dropped"] == 1
    assert out.interactions.rating.tolist() == [5.0, 3.0]


def test_kgat_indices_are_translated_to_source_keys(tmp_path):
    files = fixtures.kgat_files()
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    inter = pd.concat([parse_table("kgat.pairs", "interactions", tmp_path / f) for f in ("train.txt", "test.txt")])
    items = parse_table("kgat.item_list", "items", tmp_path / "item_list.txt")
    users = parse_table("kgat.user_list", "users", tmp_path / "user_list.txt")
    out = assemble_dataset(inter, items, users, key_space="index")
    assert out.users.user_key.iloc[0] == "A00000REVIEWER"
    # KGAT index i is our item_id i: the catalogue is ordered by remap id.
    assert (out.items.source_index.to_numpy() == out.items.item_id.to_numpy()).all()
    assert len(out.interactions) == 25
    bad = inter.copy()
    bad.loc[0, "item_key"] = "999"
    with pytest.raises(ValueError, match="unknown item index"):
        assemble_dataset(bad, items, users, key_space="index")


def test_item_metadata_fills_missing_titles_only():
    from datasources.assemble import enrich_items

    items = pd.DataFrame({"item_key": ["a", "b", "c"], "title": [None, "Kept", None],
                          "year": pd.array([pd.NA] * 3, dtype="Int64"), "genres": [None, None, None]})
    meta = pd.DataFrame({"item_key": ["a", "b", "z"], "title": ["Filled", "Ignored", "Unknown item"],
                         "year": pd.array([2001, 2002, 2003], dtype="Int64"), "genres": [["Books"], None, None]})
    out, gained = enrich_items(items, meta)
    assert out["title"].tolist()[:2] == ["Filled", "Kept"] and pd.isna(out["title"].iloc[2]) and gained == 1
    assert out["year"].tolist()[:2] == [2001, 2002] and out["genres"].tolist()[0] == ["Books"]


def test_declared_folds_become_a_fold_column_and_a_pair_in_two_folds_stays_in_test():
    train = _interactions([("1", "a", None, None), ("1", "b", None, None), ("2", "a", None, None)])
    test = _interactions([("1", "b", None, None), ("2", "c", None, None)])
    inter = pd.concat([test.assign(fold="test"), train.assign(fold="train")])  # test first: order is no matter
    out = assemble_dataset(inter)
    user_keys = out.users.set_index("user_id").loc[out.interactions.user_id, "user_key"]
    item_keys = out.items.set_index("item_id").loc[out.interactions.item_id, "item_key"]
    folds = dict(zip(zip(user_keys, item_keys, strict=True), out.interactions.fold, strict=True))
    assert folds == {("1", "a"): "train", ("1", "b"): "test", ("2", "a"): "train", ("2", "c"): "test"}
    assert out.report["pairs_in_two_folds"] == 1 and out.report["duplicate_pairs_dropped"] == 1
    assert (out.report["fold_train_pairs"], out.report["fold_test_pairs"]) == (2, 2)
    assert any("in two of the source's folds" in w and "'1'" in w for w in out.report["warnings"])
    # without folds the table has no fold column at all (exactly the tables of before)
    plain = assemble_dataset(pd.concat([train, test]))
    assert list(plain.interactions.columns) == ["user_id", "item_id", "rating", "ts", "label"]
    assert "pairs_in_two_folds" not in plain.report


def test_the_code_based_assembly_equals_the_key_based_rules_on_random_rows():
    """Random rows with repeated pairs, equal and missing timestamps and null keys, against the
    rules written directly on the key columns (the latest row of a pair, by time, wins; ids in
    natural key order; rows ordered by user, item)."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 3000
    users = rng.integers(0, 60, n).astype(str).astype(object)
    items = rng.integers(0, 100, n).astype(str).astype(object)
    items[rng.random(n) < 0.02] = None
    ts = pd.array(rng.integers(0, 50, n), dtype="Int64")
    ts[rng.random(n) < 0.05] = pd.NA
    inter = pd.DataFrame({"user_key": users, "item_key": items, "rating": rng.random(n),
                          "ts": ts, "label": pd.array([pd.NA] * n, dtype="Int8")})
    out = assemble_dataset(inter)

    kept = inter[inter["item_key"].notna()]
    kept = kept.sort_values("ts", kind="stable", na_position="first")
    kept = kept[~kept.duplicated(["user_key", "item_key"], keep="last")]
    user_id = {k: i for i, k in enumerate(natural_order(kept["user_key"]))}
    item_id = {k: i for i, k in enumerate(natural_order(kept["item_key"]))}
    expected = pd.DataFrame({"user_id": kept["user_key"].map(user_id).to_numpy(np.int32),
                             "item_id": kept["item_key"].map(item_id).to_numpy(np.int32),
                             "rating": kept["rating"].to_numpy(np.float32),
                             "ts": kept["ts"].to_numpy()})
    expected = expected.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    assert out.report["duplicate_pairs_dropped"] > 100  # the rule really chose among rows
    assert out.report["rows_with_unknown_item_dropped"] == int(inter["item_key"].isna().sum())
    pd.testing.assert_frame_equal(out.interactions[["user_id", "item_id", "rating", "ts"]],
                                  expected.astype({"ts": "Int64"}))
    assert out.users["user_key"].tolist() == list(user_id)
    assert out.items["item_key"].tolist() == list(item_id)
