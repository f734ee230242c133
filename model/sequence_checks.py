"""Checks of the neighbour sequences: an independent reference BFS, and their statistics.

:func:`reference_bfs` is the per-item, pure-Python oracle of :func:`model.sequences.
bfs_neighbor_sequences` (tests compare both; ``bench/neighbors.py`` times both);
:func:`sequence_stats` is what the neighbour stage's asset check and metadata read.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from model.graph import NODE_TYPE_NAMES, CollaborativeKG
from model.sequences import (
    _GOLDEN,
    _MASK64,
    _MIX1,
    _MIX2,
    DEFAULT_SEQUENCE_LENGTH,
    TIE_BREAKS,
    NeighborSequences,
)


def _mix64_py(x: int) -> int:
    x ^= x >> 30
    x = (x * _MIX1) & _MASK64
    x ^= x >> 27
    x = (x * _MIX2) & _MASK64
    return x ^ (x >> 31)


def _neighbor_hash_py(seed: int, item: int, node: int) -> int:
    """Pure-Python twin of :func:`neighbor_hash` (independent of it, so tests cross-check both)."""
    h = _mix64_py((int(seed) + _GOLDEN) & _MASK64)
    h = _mix64_py(h ^ (item & _MASK64))
    return _mix64_py(h ^ (node & _MASK64))


def reference_bfs(
    graph: CollaborativeKG,
    item: int,
    n: int = DEFAULT_SEQUENCE_LENGTH,
    tie_break: str = "degree",
    seed: int = 0,
    max_hops: int | None = None,
) -> tuple[list[int], list[int]]:
    """Plain per-item BFS with the same truncated definition; returns ``(nodes, hops)``.

    Deliberately naive (Python sets, full neighbour lists, a pure-Python hash) so that it is an
    independent check of :func:`bfs_neighbor_sequences`, and the baseline of the benchmark.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    indptr, indices = graph.indptr, graph.indices
    deg = graph.degree()

    def rank_key(v: int) -> tuple[int, int]:
        if tie_break == "degree":
            return (-int(deg[v]), v)
        return (_neighbor_hash_py(seed, item, v), v)

    nodes, hops = [int(item)], [0]
    visited = {int(item)}
    frontier = deque([int(item)])
    h = 0
    while len(nodes) < n and frontier and (max_hops is None or h < max_hops):
        h += 1
        cand: set[int] = set()
        for u in frontier:
            for v in indices[indptr[u] : indptr[u + 1]].tolist():
                if v not in visited:
                    cand.add(v)
        kept = sorted(cand, key=rank_key)[: n - len(nodes)]
        nodes.extend(kept)
        hops.extend([h] * len(kept))
        visited.update(kept)
        frontier = deque(kept)
    return nodes, hops


def sequence_stats(
    seqs: NeighborSequences, graph: CollaborativeKG, max_examples: int = 10
) -> dict[str, Any]:
    """Summary of a set of sequences (plain Python types, JSON-serialisable after str keys).

    Keys: ``n``, ``rows``; ``length`` (min/median/mean/max and ``histogram`` {length: count});
    ``type_share_by_hop`` {hop: {"count", "item", "entity", "user"}} (shares of the real
    positions at that hop); ``short`` (items with length < n: count, share, the number that
    are isolated (length 1) and up to ``max_examples`` examples with their graph degree).
    """
    length = seqs.length
    rows = len(seqs)
    out: dict[str, Any] = {"n": seqs.n, "rows": rows}
    if rows == 0:
        out["length"] = {"min": 0, "median": 0.0, "mean": 0.0, "max": 0, "histogram": {}}
        out["type_share_by_hop"] = {}
        out["short"] = {"count": 0, "share": 0.0, "isolated": 0, "examples": []}
        return out
    hist = np.bincount(length, minlength=seqs.n + 1)
    out["length"] = {
        "min": int(length.min()),
        "median": float(np.median(length)),
        "mean": float(length.mean()),
        "max": int(length.max()),
        "histogram": {int(k): int(hist[k]) for k in np.flatnonzero(hist)},
    }
    hops = seqs.hop[seqs.mask]
    types = seqs.node_type[seqs.mask].astype(np.int64)
    by_hop: dict[int, dict[str, float]] = {}
    for h in np.unique(hops).tolist():
        t = np.bincount(types[hops == h], minlength=len(NODE_TYPE_NAMES))
        total = int(t.sum())
        share = {name: float(t[k] / total) for k, name in enumerate(NODE_TYPE_NAMES)}
        by_hop[int(h)] = {"count": total, **share}
    out["type_share_by_hop"] = by_hop
    short = np.flatnonzero(length < seqs.n)
    deg = graph.degree()
    out["short"] = {
        "count": int(short.size),
        "share": float(short.size / rows),
        "isolated": int((length == 1).sum()),
        "examples": [
            {
                "item_id": int(seqs.item_id[r]),
                "length": int(length[r]),
                "degree": int(deg[seqs.item_id[r]]),
                "max_hop": int(seqs.hop[r, length[r] - 1]),
            }
            for r in short[:max_examples]
        ],
    }
    return out
