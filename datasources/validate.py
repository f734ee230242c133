"""Invariants of the ingest tables, as pure functions returning the problems they find.

Blocking asset checks call these; an empty list means the table is fit for the next stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from datasources.split import expected_shares


def check_id_table(frame: pd.DataFrame, id_col: str, key_col: str) -> list[str]:
    """Ids contiguous from 0 and unique, keys unique, neither null."""
    problems = []
    for col in (id_col, key_col):
        if col not in frame.columns:
            return [f"missing column {col}"]
        if frame[col].isna().any():
            problems.append(f"{int(frame[col].isna().sum())} null {col}")
        duplicated = frame[col].duplicated()
        if duplicated.any():
            problems.append(f"{int(duplicated.sum())} duplicate {col} (e.g. {frame[col][duplicated].iloc[0]!r})")
    ids = frame[id_col].to_numpy()
    if len(ids) and not np.array_equal(np.sort(ids), np.arange(len(ids))):
        problems.append(f"{id_col} is not contiguous from 0")
    return problems


def check_pairs(frame: pd.DataFrame, n_users: int, n_items: int) -> list[str]:
    """User/item ids present and in range; (user, item) unique."""
    problems = []
    for col, n in (("user_id", n_users), ("item_id", n_items)):
        values = frame[col]
        if values.isna().any():
            problems.append(f"{int(values.isna().sum())} null {col}")
        out = (values < 0) | (values >= n)
        if out.any():
            problems.append(f"{int(out.sum())} {col} outside [0, {n})")
    duplicated = frame.duplicated(["user_id", "item_id"])
    if duplicated.any():
        problems.append(f"{int(duplicated.sum())} duplicate (user_id, item_id) pairs")
    return problems


def check_split(split: pd.DataFrame, ratios: Sequence[float], tolerance: float = 0.01,
                size_rule: str = "unbiased") -> tuple[list[str], dict[str, float]]:
    """No pair in two parts, and overall shares within ``tolerance`` of what the split's size
    rule gives these users (:func:`datasources.split.expected_shares`: ``ratios`` for large
    users, more train for users with one or two positives, who cannot be split 8:1:1).

    On tiny datasets a random split cannot hit 8:1:1 to one point, so the allowed deviation is
    never below three binomial standard deviations, ``3 * sqrt(r (1 - r) / n)`` (at ML-100K size,
    0.3 points: the one-point tolerance is what binds on real data).
    """
    if split.empty:  # no share of an empty split is "within tolerance"
        return ["the split is empty: no positive interaction to split"], {}
    problems = []
    pair_dupes = split.duplicated(["user_id", "item_id"])
    if pair_dupes.any():
        problems.append(f"{int(pair_dupes.sum())} (user, item) pairs appear in more than one part (leak)")
    shares = split["split"].value_counts(normalize=True).to_dict()
    held_out = split["split"] != "train"
    if held_out.any() and not np.isin(split.loc[held_out, "item_id"].unique(),
                                      split.loc[~held_out, "item_id"].unique()).any():
        # a cold-item split (strategy cold_items): the held-out items have no train pair, so
        # the pair shares follow the cold items' popularity, not the ratios
        return problems, {k: float(v) for k, v in shares.items()} | {"cold_items": 1.0}
    target = expected_shares(split.groupby("user_id").size().to_numpy(), ratios, size_rule)
    for name, want in zip(("train", "valid", "test"), target, strict=False):
        got = float(shares.get(name, 0.0))
        allowed = max(tolerance, 3 * float(np.sqrt(want * (1 - want) / max(len(split), 1))))
        if abs(got - want) > allowed:
            problems.append(f"{name} share {got:.4f} is more than {allowed:.2%} from {want:.4f}, "
                            f"the share the {size_rule!r} rule gives these users")
    return problems, {k: float(v) for k, v in shares.items()}
