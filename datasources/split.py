"""The 8:1:1 per-user random split (the paper's protocol), deterministic across runs and machines.

Each user's positive interactions are ordered by a keyed hash of ``(seed, user_id, item_id)``
(SplitMix64), not by a stateful RNG: the split of a pair never depends on row order, chunking,
NumPy version or platform. The first ``n_train`` pairs of that order go to train, the next
``n_valid`` to valid, the rest to test.

How many pairs each part of a user gets (``size_rule``):

* ``"unbiased"`` (default): ``n_part = floor(r_part * n + u)`` with ``u`` a uniform number hashed
  from ``(seed, user, part)`` — stochastic rounding, so every part's *expected* size is exactly
  ``r_part * n`` and the dataset-wide shares match 8:1:1 even when most users have few pairs
  (Amazon-Book: 5 pairs is the most common count). Train always keeps at least one pair; a user
  with 5 pairs gets a test pair with probability 0.5 (users without held-out pairs are simply
  not evaluated).
* ``"recbole"``: RecBole's ``split_by_ratio`` rule, for like-for-like comparisons with RecBole
  runs: ``floor(r * n)`` per held-out part, then from the last part backwards a part whose share
  ``r * n`` is between 0 and 1 takes one pair from train while train keeps at least one. A user
  with 2 pairs gets train + test, 3 to 19 pairs exactly one valid and one test pair, 20 pairs
  16/2/2. On datasets of small users this over-represents valid/test (Amazon-Book: 77/11/11).

Strategies (``STRATEGIES``): ``random`` (the above), ``cold_items`` (:func:`split_cold_items`)
and ``predefined`` (:func:`split_predefined`): the source's own published folds (KGAT's
train.txt/test.txt) — test is the source's test fold, valid is carved per user from its train
fold by the rule above with the train:valid ratios renormalised (1/9 of the train fold for
8:1:1). :func:`split_problems` is the blocking check for all three.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "valid", "test")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised: a well-mixed 64-bit hash of uint64 inputs."""
    z = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pair_hash(seed: int, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        key = splitmix64(np.asarray(user_ids, dtype=np.uint64) + splitmix64(np.array([seed], np.uint64)))
        return splitmix64(key ^ (np.asarray(item_ids, dtype=np.uint64) * _GOLDEN))


SIZE_RULES = ("unbiased", "recbole")


def part_sizes(
    n: np.ndarray, ratios: Sequence[float], rule: str = "unbiased", uniforms: np.ndarray | None = None
) -> np.ndarray:
    """Per-user sizes of each part, shape ``(len(n), len(ratios))`` (rules: see the module doc).

    ``uniforms`` (shape ``(len(n), len(ratios))``, values in [0, 1)) drive the unbiased rule's
    rounding; ``split_interactions`` hashes them from the seed and the user id.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or len(ratios) < 2 or (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError(f"ratios must be >= 2 non-negative numbers, got {list(ratios)}")
    if rule not in SIZE_RULES:
        raise ValueError(f"unknown split size rule {rule!r}; known: {', '.join(SIZE_RULES)}")
    ratios = ratios / ratios.sum()
    n = np.asarray(n, dtype=np.int64)
    exact = n[:, None] * ratios[None, :]
    if rule == "unbiased":
        if uniforms is None:
            raise ValueError("the unbiased rule needs uniforms")
        sizes = np.floor(exact + uniforms).astype(np.int64)
        sizes[:, 0] = 0
        # Train keeps at least one pair: trim held-out parts from the last one backwards.
        for part in range(len(ratios) - 1, 0, -1):
            excess = np.maximum(sizes[:, 1:].sum(axis=1) - (n - 1), 0)
            sizes[:, part] -= np.minimum(excess, sizes[:, part])
        sizes[:, 0] = n - sizes[:, 1:].sum(axis=1)
        return sizes
    sizes = np.floor(exact + 1e-9).astype(np.int64)
    sizes[:, 0] = n - sizes[:, 1:].sum(axis=1)
    for part in range(len(ratios) - 1, 0, -1):
        can_give = sizes[:, 0] > 1
        bump = can_give & (exact[:, part] > 0) & (exact[:, part] < 1)
        sizes[bump, part] += 1
        sizes[bump, 0] -= 1
    return sizes


def expected_shares(counts: np.ndarray, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                    rule: str = "unbiased") -> np.ndarray:
    """The dataset-wide share of each part that the rule gives these per-user pair counts.

    Not the ratios themselves: a user with one positive keeps it in train, one with two gets a
    held-out pair only sometimes, so on a dataset of small users the train share is above 0.8
    by design. Exact: under the unbiased rule each held-out part rounds ``r n`` up with
    probability ``frac(r n)``, so the expectation is a sum over the 2^(parts-1) ways the parts
    can round (each with its probability), per distinct count; the recbole rule is fixed.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0:
        return np.zeros(len(ratios))
    values, users = np.unique(counts, return_counts=True)
    weights = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    if rule != "unbiased":
        mean_sizes = part_sizes(values, ratios, rule).astype(np.float64)
    else:
        frac = values[:, None] * weights[None, 1:]
        frac = frac - np.floor(frac)
        mean_sizes = np.zeros((len(values), len(weights)))
        for ups in itertools.product((False, True), repeat=len(weights) - 1):
            up = np.array(ups)
            uniforms = np.zeros((len(values), len(weights)))
            uniforms[:, 1:] = np.where(up, 1 - 1e-12, 0.0)  # rounds up exactly when frac > 0
            probability = np.where(up, frac, 1 - frac).prod(axis=1)
            mean_sizes += probability[:, None] * part_sizes(values, ratios, rule, uniforms)
    totals = (mean_sizes * users[:, None]).sum(axis=0)
    return totals / totals.sum()


def order_by_user_then_hash(user_ids: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """``np.lexsort((hashes, user_ids))``, ~3x faster on millions of rows: one uint64 key, the
    user in the high bits and the hash's top bits below it, sorted stably. Two rows of one user
    whose hashes agree in those top bits (odds ~ count² / 2^(64 - user bits)) would be ordered
    differently than lexsort orders them, so then lexsort runs instead: the order is always
    lexsort's. (Two lexsort keys gather out of cache as the data grows: bench/scaling.py.)"""
    if user_ids.min() < 0:
        return np.lexsort((hashes, user_ids))
    bits = max(int(user_ids.max()).bit_length(), 1)
    if bits > 32:
        return np.lexsort((hashes, user_ids))
    key = (user_ids.astype(np.uint64) << np.uint64(64 - bits)) | (
        hashes.astype(np.uint64) >> np.uint64(bits))
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if np.any(ordered[1:] == ordered[:-1]):  # a truncated-hash tie: lexsort decides
        return np.lexsort((hashes, user_ids))
    return order


def split_interactions(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
    size_rule: str = "unbiased",
) -> np.ndarray:
    """Return the part (0 = train, 1 = valid, 2 = test) of every (user, item) pair.

    ``(user_id, item_id)`` pairs must be unique. Vectorised: one lexsort over all pairs.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if user_ids.shape != item_ids.shape:
        raise ValueError("user_ids and item_ids must have the same shape")
    if len(user_ids) == 0:
        return np.zeros(0, dtype=np.int8)
    order = order_by_user_then_hash(user_ids, pair_hash(seed, user_ids, item_ids))
    sorted_users = user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    users = sorted_users[starts].astype(np.uint64)
    n_parts = len(ratios)
    part_keys = users[:, None] * np.uint64(n_parts) + np.arange(n_parts, dtype=np.uint64)[None, :]
    # 53 high bits of a hash -> a float in [0, 1), independent of row order and platform.
    uniforms = (pair_hash(seed + 1, part_keys, np.zeros_like(part_keys)) >> np.uint64(11)) / float(1 << 53)
    sizes = part_sizes(counts, ratios, size_rule, uniforms)
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    bounds = np.cumsum(sizes, axis=1)  # end (exclusive) of each part, per user
    per_row_bounds = np.repeat(bounds, counts, axis=0)
    parts_sorted = (rank[:, None] >= per_row_bounds).sum(axis=1).astype(np.int8)
    parts = np.empty(len(order), dtype=np.int8)
    parts[order] = parts_sorted
    return parts


STRATEGIES = ("random", "cold_items", "predefined")


def cold_items(item_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which of ``item_ids`` are cold: a keyed hash of (seed, item) below ``fraction``.

    The same item is cold (or not) whatever the rows, their order or the platform; the share of
    cold items is ``fraction`` in expectation.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold item fraction must be in (0, 1), got {fraction}")
    item_ids = np.asarray(item_ids, dtype=np.int64)
    u = (pair_hash(seed + 2, np.zeros_like(item_ids), item_ids) >> np.uint64(11)) / float(1 << 53)
    return u < fraction


def split_cold_items(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
    fraction: float = 0.1,
) -> np.ndarray:
    """Strict item cold start: every pair of a cold item is held out, no other pair is.

    A seeded ``fraction`` of the items (:func:`cold_items`) is cold; their pairs are divided
    between valid and test in the ratio of ``ratios[1]:ratios[2]`` by a hash of the pair, and
    every pair of the other (warm) items is train. A cold item therefore never appears in a
    train pair, so it has no user–item edge in the collaborative KG and no user in any BFS
    sequence; what a model knows about it is its KG triples and its content features.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if user_ids.shape != item_ids.shape:
        raise ValueError("user_ids and item_ids must have the same shape")
    ratios = np.asarray(ratios, dtype=np.float64)
    if len(ratios) != 3 or ratios[1] + ratios[2] <= 0:
        raise ValueError(f"cold_items needs train/valid/test ratios with held-out parts, got {list(ratios)}")
    cold = cold_items(item_ids, fraction, seed)
    u = (pair_hash(seed + 3, user_ids, item_ids) >> np.uint64(11)) / float(1 << 53)
    held_out = np.where(u < ratios[1] / (ratios[1] + ratios[2]), 1, 2)
    return np.where(cold, held_out, 0).astype(np.int8)


# --------------------------------------------------------------------------- predefined folds

#: The folds a source may declare for its rows (the ``folds`` option of its interactions table).
FOLD_NAMES = SPLIT_NAMES


def _fold_labels(folds) -> np.ndarray:
    """Fold labels as an object array of ``str``, missing ones (None, NaN, pd.NA) as None."""
    series = pd.Series(folds, dtype=object)
    return series.where(series.notna(), None).to_numpy(dtype=object)


def split_predefined(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    folds,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
    size_rule: str = "unbiased",
) -> np.ndarray:
    """The source's own split (``strategy: predefined``): part 0/1/2 of every (user, item) pair.

    * test = exactly the pairs of the source's ``test`` fold;
    * valid = the source's ``valid`` fold when it publishes one (used as is, nothing carved);
      otherwise carved from each user's ``train``-fold pairs by the random split's seeded
      per-user rule (:func:`split_interactions`, same ``seed`` and ``size_rule``) with the train
      and valid ratios renormalised: ``ratios[1] / (ratios[0] + ratios[1])`` of the train fold,
      1/9 for 8:1:1. ``ratios[2]`` is not used: the test share is what the source published;
    * train = the rest of the train fold (a user keeps at least one train pair, as always).

    ``(user, item)`` pairs must be unique (the assembler keeps a pair that a source puts in two
    folds once, in the later fold: test over valid over train). Deterministic: the carving
    depends on ``seed`` and the pairs, never on row order. A pair without a fold is an error.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    folds = _fold_labels(folds)
    if not user_ids.shape == item_ids.shape == folds.shape:
        raise ValueError("user_ids, item_ids and folds must have the same shape")
    ratios = [float(r) for r in ratios]
    if len(ratios) < 2 or ratios[0] <= 0 or ratios[1] < 0:
        raise ValueError(f"predefined needs train/valid ratios (train > 0, valid >= 0), got {ratios}")
    unknown = ~np.isin(folds, np.array(FOLD_NAMES, dtype=object))
    if unknown.any():
        named = [f for f in folds[unknown] if f is not None]
        raise ValueError(
            f"{int(unknown.sum())} pairs have no fold or an unknown one"
            + (f" (e.g. {named[0]!r})" if named else "")
            + f": a predefined split needs every pair in one of {', '.join(FOLD_NAMES)}")
    parts = np.full(len(folds), 2, dtype=np.int8)
    parts[folds == "valid"] = 1
    train = folds == "train"
    if (folds == "valid").any() or ratios[1] == 0:
        parts[train] = 0
    elif train.any():
        parts[train] = split_interactions(user_ids[train], item_ids[train], (ratios[0], ratios[1]),
                                          seed, size_rule)
    return parts


def predefined_split_problems(
    split: pd.DataFrame, folds: pd.DataFrame, ratios: Sequence[float], tolerance: float = 0.01,
    size_rule: str = "unbiased",
) -> tuple[list[str], dict[str, float]]:
    """What must hold for a predefined split (``split``: user_id, item_id, split; ``folds``:
    user_id, item_id, fold of the interactions): no pair in two parts, test exactly the test
    fold, valid only from the train fold (or exactly the source's valid fold), and the valid
    share of the train fold within ``tolerance`` of what the size rule gives these users'
    train-fold counts with ratios ``ratios[0]:ratios[1]`` (three binomial standard deviations
    at least, as in :func:`datasources.validate.check_split`)."""
    from datasources.validate import check_split  # validate imports this module

    if split.empty:
        return ["the split is empty: no positive interaction to split"], {}
    problems = []
    dupes = split.duplicated(["user_id", "item_id"])
    if dupes.any():
        problems.append(f"{int(dupes.sum())} (user, item) pairs appear in more than one part (leak)")
    joined = split.merge(folds[["user_id", "item_id", "fold"]], on=["user_id", "item_id"], how="left")
    fold, part = joined["fold"], joined["split"]
    for name, wrong in (("test", (part == "test") != (fold == "test")),
                        ("valid", (part == "valid") & ~fold.isin(["train", "valid"]))):
        if wrong.any():
            row = joined[wrong].iloc[0]
            problems.append(f"{int(wrong.sum())} pairs break the source's {name} fold (e.g. user "
                            f"{row['user_id']}, item {row['item_id']}: fold {row['fold']!r}, "
                            f"split {row['split']!r})")
    shares = {k: float(v) for k, v in part.value_counts(normalize=True).items()}
    shares["predefined"] = 1.0
    published_valid = bool((fold == "valid").any())
    if published_valid:
        wrong = (part == "valid") != (fold == "valid")
        if wrong.any():
            problems.append(f"{int(wrong.sum())} pairs differ from the source's valid fold")
        return problems, shares
    in_train = joined[fold == "train"]
    if len(in_train):
        train_problems, train_shares = check_split(in_train, list(ratios)[:2], tolerance, size_rule)
        problems += [f"train fold: {p}" for p in train_problems if "leak" not in p]
        shares["valid_of_train_fold"] = float(train_shares.get("valid", 0.0))
    return problems, shares


def _interaction_folds(tables) -> pd.DataFrame | None:
    """The interactions' (user_id, item_id, fold), or None when the source declared no fold."""
    import pyarrow as pa

    try:
        frame = tables.read_pandas("interactions", ["user_id", "item_id", "fold"])
    except (pa.ArrowInvalid, KeyError):  # no fold column: the source declares no fold
        return None
    return frame if frame["fold"].notna().any() else None


def split_problems(tables, ratios: Sequence[float], tolerance: float = 0.01,
                   size_rule: str = "unbiased") -> tuple[list[str], dict[str, float]]:
    """The split's blocking check on a table reader (``read``/``read_pandas``), whatever the
    strategy: a split whose test pairs are exactly the interactions' declared ``test`` fold is
    a predefined one (:func:`predefined_split_problems`); any other goes to
    :func:`datasources.validate.check_split` (random, and cold_items, which it recognises)."""
    from datasources.validate import check_split

    split = tables.read_pandas("split")
    folds = _interaction_folds(tables)
    if folds is not None and not split.empty:
        joined = split[["user_id", "item_id", "split"]].merge(folds, on=["user_id", "item_id"], how="left")
        if ((joined["split"] == "test") == (joined["fold"] == "test")).all():
            return predefined_split_problems(split, folds, ratios, tolerance, size_rule)
    return check_split(split, ratios, tolerance, size_rule)
