"""Turn parsed source frames into the contract tables ``users``, ``items`` and ``interactions``.

Ids are contiguous from 0. Items (and users) are numbered in the order of the catalogue file when
there is one (movies.dat is sorted by MovieID, KGAT's item_list by its remap id, so KGAT indices
and our ids agree), and any key seen only in the interactions comes after, in natural key order.
Catalogue entries nobody interacted with are dropped by default: they can never be a positive, so
in full-ranking evaluation they would only be noise candidates (``keep_inactive`` keeps them).
Nothing is dropped silently: every removed row is counted in ``AssembledDataset.report``.

A source that publishes its own split gives each parsed row a ``fold`` (train/valid/test; see
:mod:`datasources.fetch`); the interactions then carry it as a nullable string column ``fold``.
Without folds there is no such column, and the tables are exactly what they were before folds
existed. A pair the source puts in two folds is kept once, in the later fold (test over valid
over train: the published test set stays whole and none of its pairs is trained on), and
counted (``pairs_in_two_folds``, with a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class AssembledDataset:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def natural_order(keys: pd.Index | pd.Series | np.ndarray) -> np.ndarray:
    """Keys sorted numerically when they all are integers, else lexicographically."""
    keys = pd.Index(pd.unique(pd.Series(keys, dtype=str)))
    as_int = pd.to_numeric(keys, errors="coerce")
    if len(keys) and not np.isnan(as_int).any():
        return keys[np.argsort(as_int.to_numpy(), kind="stable")].to_numpy()
    return np.sort(keys.to_numpy())


def _non_numeric_keys(keys: pd.Series, what: str) -> tuple[int, str | None]:
    """Keys that are not numbers in a column whose other keys are: a typo or a second id space
    mixed in. Accepted (keys are strings), but counted and said."""
    unique = pd.Series(pd.unique(keys.dropna().astype(str)))
    numeric = pd.to_numeric(unique, errors="coerce").notna()
    n_bad = int((~numeric).sum())
    if n_bad == 0 or n_bad * 2 >= len(unique):
        return 0, None
    examples = ", ".join(repr(k) for k in unique[~numeric].head(3))
    return n_bad, (f"{n_bad} of {len(unique):,} {what} keys are not numbers ({examples}) while "
                   "the others are: a typo, or ids from another source mixed in?")


def _translate_indices(keys: pd.Series, catalogue: pd.DataFrame | None, key_col: str, what: str) -> pd.Series:
    """KGAT interaction files carry row indices; map them to the catalogue's own keys."""
    if catalogue is None or "source_index" not in catalogue.columns:
        raise ValueError(f"interactions use {what} indices but no {what} list with source_index was given")
    mapping = pd.Series(catalogue[key_col].to_numpy(), index=catalogue["source_index"].astype(str).to_numpy())
    translated = keys.map(mapping)
    unknown = translated.isna() & keys.notna()
    if unknown.any():
        example = keys[unknown].iloc[0]
        raise ValueError(f"{int(unknown.sum())} interactions refer to unknown {what} index (e.g. {example})")
    return translated


def _ts_rank(ts: pd.Series) -> np.ndarray:
    """Sort keys of ``ts`` with missing timestamps first (as ``sort_values(na_position="first")``)."""
    return pd.array(ts, dtype="Int64").to_numpy(dtype=np.int64,
                                                 na_value=np.iinfo(np.int64).min)


def _number_codes(codes: np.ndarray, keys: pd.Index | np.ndarray, catalogue: pd.DataFrame | None,
                  key_col: str, keep_inactive: bool
                  ) -> tuple[pd.DataFrame, dict[str, int], np.ndarray]:
    """:func:`_number` of the keys behind factorized ``codes`` (``keys[code]``), and the id of
    every code (-1 for a key no row uses any more)."""
    used_codes = pd.unique(codes)
    table, stats = _number(pd.Index(np.asarray(keys, dtype=object)[used_codes]), catalogue,
                           key_col, keep_inactive)
    id_col = key_col.replace("_key", "_id")
    ids = pd.Series(table[id_col].to_numpy(), index=table[key_col].to_numpy())
    id_of = ids.reindex(np.asarray(keys, dtype=object)).fillna(-1).to_numpy(np.int64)
    return table, stats, id_of


def _number(used: pd.Index, catalogue: pd.DataFrame | None, key_col: str,
            keep_inactive: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    """Give contiguous ids to the ``used`` keys (unique): catalogue order first, unseen keys
    after; returns the id table."""
    stats: dict[str, int] = {}
    if catalogue is not None and len(catalogue):
        duplicated = catalogue[key_col].duplicated()
        stats["duplicate_catalogue_keys"] = int(duplicated.sum())
        catalogue = catalogue[~duplicated]
        if "source_index" in catalogue.columns:
            catalogue = catalogue.sort_values("source_index", kind="stable")
        in_catalogue = used.isin(catalogue[key_col])
        extra_keys = natural_order(used[~in_catalogue])
        stats["keys_missing_from_catalogue"] = len(extra_keys)
        if not keep_inactive:
            active = catalogue[key_col].isin(used)
            stats["inactive_catalogue_entries_dropped"] = int((~active).sum())
            catalogue = catalogue[active]
        extra = pd.DataFrame({key_col: extra_keys})
        table = pd.concat([catalogue, extra], ignore_index=True) if len(extra) else catalogue.reset_index(drop=True)
    else:
        table = pd.DataFrame({key_col: natural_order(used)})
    id_col = key_col.replace("_key", "_id")
    table.insert(0, id_col, np.arange(len(table), dtype=np.int32))
    return table, stats


#: Which fold wins when a source puts one pair in two (the later one).
_FOLD_ORDER = ("train", "valid", "test")


def _resolve_folds(frame: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    """Give every row of a pair the pair's latest fold (test over valid over train), counting
    the pairs that were in two folds; the usual duplicate rule then keeps one row per pair."""
    frame = frame.reset_index(drop=True)
    rank = frame["fold"].map({name: i for i, name in enumerate(_FOLD_ORDER)})
    repeated = frame.duplicated(["user_key", "item_key"], keep=False).to_numpy()
    report["pairs_in_two_folds"] = 0
    if not repeated.any():
        return frame
    rows = frame.loc[repeated, ["user_key", "item_key"]].assign(rank=rank[repeated])
    by_pair = rows.groupby(["user_key", "item_key"], sort=False)["rank"]
    n_folds, latest = by_pair.transform("nunique"), by_pair.transform("max")
    in_two = n_folds > 1
    n_pairs = int(rows[in_two].drop_duplicates(["user_key", "item_key"]).shape[0])
    report["pairs_in_two_folds"] = n_pairs
    if n_pairs:
        example = rows[in_two].iloc[0]
        report["warnings"].append(
            f"{n_pairs} (user, item) pairs are in two of the source's folds (e.g. user "
            f"{example['user_key']!r}, item {example['item_key']!r}): each is kept once, in the "
            "later fold (test over valid over train), so no test pair is also a train pair")
        resolved = latest[in_two].map(dict(enumerate(_FOLD_ORDER)))
        frame.loc[resolved.index, "fold"] = resolved.to_numpy()
    return frame


def assemble_dataset(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    key_space: str = "native",
    keep_inactive: bool = False,
) -> AssembledDataset:
    """Map source keys to contiguous ids and return the three contract tables.

    Duplicate (user, item) pairs keep the latest row (by ``ts`` when present) and are counted;
    rows whose item is null (e.g. an unmapped id in a TSV, ``null_item``) are dropped and counted.
    """
    report: dict[str, Any] = {"source_rows": len(interactions)}
    frame = interactions.copy()
    if key_space == "index":
        frame["user_key"] = _translate_indices(frame["user_key"], users, "user_key", "user")
        frame["item_key"] = _translate_indices(frame["item_key"], items, "item_key", "item")
    elif key_space != "native":
        raise ValueError(f"unknown key_space {key_space!r}")

    report["warnings"] = []
    frame = frame.reset_index(drop=True)
    # Each key column is hashed once (pd.factorize); from here on rows carry int codes, so the
    # duplicate rule, the numbering and the id lookup are integer work whose cost stays
    # linear as the data outgrows the CPU caches (hashing millions of strings three times
    # did not: bench/scaling.py). The outputs are those of the key-based rules.
    user_code, user_keys = pd.factorize(frame["user_key"])
    item_code, item_keys = pd.factorize(frame["item_key"])
    for keys, what in ((user_keys, "user"), (item_keys, "item")):
        n_bad, warning = _non_numeric_keys(pd.Series(keys), what)
        report[f"{what}s_non_numeric_keys"] = n_bad
        if warning:
            report["warnings"].append(warning)

    null_rows = (item_code < 0) | (user_code < 0)
    report["rows_with_unknown_item_dropped"] = int(null_rows.sum())
    keep = ~null_rows
    has_folds = "fold" in frame.columns
    if has_folds:  # the pairs a source puts in two folds get their later fold first
        fold = frame["fold"].to_numpy(dtype=object).copy()
        fold[keep] = _resolve_folds(frame[keep], report)["fold"].to_numpy(dtype=object)
    if frame["ts"].notna().any():  # the latest row of a pair wins: rows in time order
        order = np.argsort(_ts_rank(frame["ts"]), kind="stable")
        keep = order[keep[order]]
    else:
        keep = np.flatnonzero(keep)
    pair = pd.Series(user_code[keep].astype(np.int64) * max(len(item_keys), 1) + item_code[keep])
    duplicated = pair.duplicated(keep="last").to_numpy()
    report["duplicate_pairs_dropped"] = int(duplicated.sum())
    keep = keep[~duplicated]
    user_code, item_code = user_code[keep], item_code[keep]

    user_table, user_stats, user_id_of = _number_codes(user_code, user_keys, users, "user_key",
                                                       keep_inactive)
    item_table, item_stats, item_id_of = _number_codes(item_code, item_keys, items, "item_key",
                                                       keep_inactive)
    report.update({f"users_{k}": v for k, v in user_stats.items()})
    report.update({f"items_{k}": v for k, v in item_stats.items()})

    user_id, item_id = user_id_of[user_code], item_id_of[item_code]
    if (user_id < 0).any() or (item_id < 0).any():  # keys and the id tables disagree in type
        raise AssertionError("assemble_dataset: a used key got no id")
    # rows by (user_id, item_id); pairs are unique now, so one int64 key orders them
    order = np.argsort(user_id.astype(np.int64) * max(len(item_table), 1) + item_id,
                       kind="stable")
    rows = keep[order]
    out = pd.DataFrame(
        {
            "user_id": user_id[order].astype(np.int32),
            "item_id": item_id[order].astype(np.int32),
            "rating": frame["rating"].to_numpy(np.float32)[rows],
            "ts": frame["ts"].to_numpy()[rows],
            "label": frame["label"].to_numpy()[rows],
        }
    )
    out = out.astype({"ts": "Int64", "label": "Int8"})
    if has_folds:
        folds = pd.Series(fold[rows])
        out["fold"] = folds.where(folds.notna(), None).to_numpy(dtype=object)
        for name in _FOLD_ORDER:
            report[f"fold_{name}_pairs"] = int((out["fold"] == name).sum())

    if "title" not in item_table.columns:
        item_table["title"] = None
    report.update(n_users=len(user_table), n_items=len(item_table), n_interactions=len(out))
    return AssembledDataset(users=user_table, items=item_table, interactions=out, report=report)


def enrich_items(items: pd.DataFrame | None, metadata: pd.DataFrame) -> tuple[pd.DataFrame | None, int]:
    """Fill the items' missing ``title``/``year``/``genres`` from ``metadata`` (same item keys).

    Returns the enriched catalogue and how many items gained a title. Without a catalogue the
    metadata itself becomes the catalogue's side information.
    """
    metadata = metadata.drop_duplicates("item_key").set_index("item_key")
    if items is None:
        return None, 0
    items = items.copy()
    had_title = items["title"].notna() if "title" in items.columns else pd.Series(False, index=items.index)
    for column in ("title", "year", "genres"):
        if column not in metadata.columns:
            continue
        extra = items["item_key"].map(metadata[column])
        items[column] = items[column].where(items[column].notna(), extra) if column in items.columns else extra
    gained = int((items["title"].notna() & ~had_title).sum())
    return items, gained


def dataset_statistics(n_users: int, n_items: int, n_interactions: int) -> dict[str, float | int]:
    """The paper's Table-1 block for the interaction part of a dataset."""
    cells = n_users * n_items
    return {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_interactions,
        "density": n_interactions / cells if cells else 0.0,
        "sparsity": 1 - n_interactions / cells if cells else 1.0,
        "interactions_per_user": n_interactions / n_users if n_users else 0.0,
        "interactions_per_item": n_interactions / n_items if n_items else 0.0,
    }
