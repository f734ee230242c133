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
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

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
    order = np.lexsort((pair_hash(seed, user_ids, item_ids), user_ids))
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


STRATEGIES = ("random", "cold_items")


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
