"""High-order neighbour sequences S_i for every item (Multi-KG4Rec, ESWA 2025, section 4.2.2).

Over 400 lines because this docstring *is* the definition of the sequences (hops,
truncation, tie-breaks) the code and its reference twin implement; the code itself is ~300 lines.

For each item v_i the multimodal fusion module reads a sequence of its high-order neighbours,
gathered by breadth-first search over the collaborative KG (users, items, attribute entities)
up to a count ``n`` and sorted by distance: the item itself, its 1st-order users and attribute
entities, then 2nd-order nodes, and so on.  The paper does not publish ``n`` or how a hop is
truncated; this module fixes both.

Definition (truncated BFS, implemented identically by the vectorised
:func:`bfs_neighbor_sequences` and the per-item :func:`model.sequence_checks.reference_bfs`)
--------------------------------------------------------------------------------------------
* position 0 = the item itself, hop 0; ``visited = {item}``; ``frontier = [item]``.
* hop h >= 1: the candidates are all *unvisited* neighbours of the hop-(h-1) nodes that were
  KEPT in the sequence (the frontier), deduplicated.  They are ranked by the tie-break rule; the
  first ``n - length`` are appended in that order and become the next frontier.
* stop when the sequence holds ``n`` nodes, the frontier is empty, or after ``max_hops`` hops.
  Items whose connected component has fewer than ``n`` nodes stay shorter (padding ``-1``,
  ``mask`` False); an isolated item has length 1.

Why expand only from KEPT nodes: it bounds the cost (the frontier of an item never exceeds
``n``, so no hop-2 explosion through popular users) and it is what lets a cold-start item reach
further -- an item with 5 neighbours keeps all of them and goes on to hop 2, a popular one fills
up at hop 1.  Note that candidates are only ever dropped when the sequence becomes full, so
every hop before the last keeps its whole layer: the definition coincides with the classic
layer-by-layer BFS whose last layer is cut by the ranking.  Positions are ordered by hop, and
inside a hop by the ranking.

Tie-break (deterministic; it decides which nodes of the last, truncated layer are kept)
* ``"degree"`` -- higher undirected degree in the collaborative KG first, then lower node id.
  Well-connected neighbours carry the most collaborative signal and their features are the
  best trained.
* ``"random"`` -- ascending 64-bit hash of ``(seed, item, node)`` (SplitMix64 finaliser, see
  :func:`neighbor_hash`), then lower node id.  It depends only on those three integers, so it is
  identical across runs, machines, chunk sizes and item orders.

Default ``n = 32`` (:data:`DEFAULT_SEQUENCE_LENGTH`)
----------------------------------------------------
The paper gives no ``n``.  Degree statistics of ML-1M (collaborative KG built by
``bench/neighbors.py`` from a seeded random 80 % = 799,775 of the 999,719 mapped interactions
plus the MKR Satori KG: 3,883 items, 4,661 attribute entities, 6,040 users, 819,500 edges):
item degree p10/p25/p50/p75/p90 = 6 / 26 / 92 / 270 / 578 (median 109.5 over the 3,620
non-isolated items; 263 movies have no train interaction and no KG link); user degree median
76, max 1,807.  With ``n = 32`` the median item (92 neighbours) fills its sequence with
1st-order users/entities, while the 27.9 % of items with fewer than ``n - 1 = 31`` neighbours
(1,082 items: the cold-start tail, p25 = 26) continue to 2nd- and 3rd-order nodes -- the
behaviour the paper describes; on that graph every non-isolated item reaches the full 32.
Taking ``n`` at the median degree (~96) would triple the attention cost (O(n^2) per item, for
two modalities) only to add more 1st-order users to items that already have plenty, and a
power of two keeps the attention kernels aligned.

Memory and vectorisation
------------------------
Items are processed ``chunk_size`` at a time; inside a chunk there is one Python iteration per
hop (never per item).  The frontier is a pair of flat arrays ``(item, node)``; its neighbours are
gathered with ``np.repeat`` over the CSR ranges, visited nodes are removed with a
``searchsorted`` on packed ``item * n_nodes + node`` int64 keys, and a vectorised
rank-within-item keeps the first ``n - length`` of each item.  For ``"degree"`` the CSR rows are
pre-sorted by the global ranking and only the first ``n`` entries of each frontier node's row are
gathered: a kept candidate at position p of a row is preceded only by visited nodes (< length of
them) and by better-ranked kept candidates (< n - length), so p < n and the cut is exact.  For
``"random"`` the ranking is per item, so whole rows are gathered, but before the sort each item
keeps only the pairs whose hash lies in the lowest ``RANDOM_PREFILTER_FACTOR * space / pairs``
of the hash range, falling back to all its pairs when fewer than ``space`` distinct unvisited
nodes survive -- also exact.  Any hop whose gather would exceed ``max_pairs`` (item, neighbour)
pairs is split into item groups, which bounds peak memory for both rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa

from model.graph import NODE_TYPE_NAMES, CollaborativeKG

DEFAULT_SEQUENCE_LENGTH = 32
DEFAULT_CHUNK_SIZE = 4096
#: Upper bound on the (item, neighbour) pairs materialised by one gather (~40 B each).
DEFAULT_MAX_PAIRS = 2_000_000
TIE_BREAKS = ("degree", "random")
#: "random" rule: an item that needs s nodes first keeps the gathered pairs whose hash falls in
#: the lowest FACTOR * s / pairs of the hash range (exact; see _Ranker._random_prefilter).
RANDOM_PREFILTER_FACTOR = 4.0
PAD = -1

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


# --------------------------------------------------------------------------- hashing


def _mix64_np(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (array arithmetic wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_MIX1)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


def neighbor_hash(seed: int, item, node) -> np.ndarray:
    """Deterministic 64-bit hash of ``(seed, item, node)`` used by the ``"random"`` tie-break.

    ``h = mix(mix(mix(seed + GOLDEN) ^ item) ^ node)`` with the SplitMix64 finaliser ``mix``;
    plain integer arithmetic modulo 2**64, hence machine- and run-independent.
    """
    s = np.full(1, (int(seed) + _GOLDEN) & _MASK64, dtype=np.uint64)
    h = _mix64_np(s)
    h = _mix64_np(h ^ np.asarray(item, dtype=np.int64).astype(np.uint64))
    return _mix64_np(h ^ np.asarray(node, dtype=np.int64).astype(np.uint64))


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array.

    Sort + adjacent comparison: ~10x faster than ``np.unique`` in NumPy 2.4, whose hash-based
    path dominated the whole BFS on multi-million-pair gathers.
    """
    if keys.size == 0:
        return keys
    keys = np.sort(keys)
    keep = np.empty(keys.size, dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class NeighborSequences:
    """Padded neighbour sequences, one row per item (row r describes item ``item_id[r]``).

    ``node_id``, ``hop``, ``node_type`` have shape ``(n_rows, n)`` and are ``-1`` on padding;
    ``mask`` is True on real positions; ``length`` is the number of real positions (>= 1: the
    item itself).  With the default ``items=None`` the rows are all items, ``item_id = arange``.
    """

    item_id: np.ndarray  # int64 (n_rows,)
    node_id: np.ndarray  # int64 (n_rows, n)
    hop: np.ndarray  # int32 (n_rows, n)
    node_type: np.ndarray  # int8 (n_rows, n)
    mask: np.ndarray  # bool (n_rows, n)
    length: np.ndarray  # int64 (n_rows,)
    n: int
    tie_break: str
    seed: int

    def __len__(self) -> int:
        return int(self.item_id.shape[0])

    def to_table(self) -> pa.Table:
        """Long format of the project contract ``neighbor_sequences``.

        Columns ``item_id`` (int64), ``pos`` (int32), ``node_id`` (int64), ``node_type``
        (string ``"item"``/``"entity"``/``"user"``), ``hop`` (int32); one row per real
        position, no padding rows, ordered by (row, pos).
        """
        rows, pos = np.nonzero(self.mask)
        names = np.asarray(NODE_TYPE_NAMES, dtype=object)
        return pa.table(
            {
                "item_id": pa.array(self.item_id[rows], pa.int64()),
                "pos": pa.array(pos.astype(np.int32), pa.int32()),
                "node_id": pa.array(self.node_id[rows, pos], pa.int64()),
                "node_type": pa.array(names[self.node_type[rows, pos]], pa.string()),
                "hop": pa.array(self.hop[rows, pos].astype(np.int32), pa.int32()),
            }
        )


# --------------------------------------------------------------------------- vectorised BFS


class _Ranker:
    """Per-graph precomputation for one tie-break rule.

    For ``"degree"`` the CSR values are mapped to *rank space* (rank 0 = highest degree, lowest
    id) and sorted within each row, so a packed key ``item * n_nodes + rank`` sorts straight
    into output order and a row prefix holds its best candidates.
    """

    def __init__(self, graph: CollaborativeKG, tie_break: str, n: int, seed: int):
        self.n_nodes = graph.n_nodes
        self.indptr = graph.indptr
        self.deg = graph.degree()
        self.tie_break = tie_break
        self.seed = seed
        if tie_break == "degree":
            node = np.arange(self.n_nodes, dtype=np.int64)
            self.order = np.lexsort((node, -self.deg))  # rank -> node
            rank = np.empty(self.n_nodes, dtype=np.int64)
            rank[self.order] = node
            self.rank = rank
            rows = np.repeat(node, self.deg)
            # rows are already in order (CSR): the stable sort (radix/timsort) only orders each
            # row's ranks, ~3x faster than quicksort on millions of edges (bench/scaling.py)
            packed = np.sort(rows * self.n_nodes + rank[graph.indices], kind="stable")
            self.values = packed - rows * self.n_nodes  # neighbour ranks, ascending per row
            self.cap = n  # exact prefix length, see module docstring
        else:
            self.rank = None
            self.values = graph.indices.astype(np.int64)
            self.cap = None

    def key_of(self, node: np.ndarray) -> np.ndarray:
        """Value stored in packed keys for these nodes (rank for "degree", id for "random")."""
        return self.rank[node] if self.rank is not None else node

    def gather_counts(self, f_node: np.ndarray) -> np.ndarray:
        cnt = self.deg[f_node]
        return np.minimum(cnt, self.cap) if self.cap is not None else cnt

    def candidates(
        self,
        f_item: np.ndarray,
        f_node: np.ndarray,
        cnt: np.ndarray,
        visited: np.ndarray,
        chunk_items: np.ndarray,
        space: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unvisited, deduplicated neighbours of the frontier, in output order.

        ``space[i]`` is how many nodes chunk-local item ``i`` can still take.  Returns
        ``(item_local, node, key)`` sorted by item, then by rank; ``key`` is the packed
        visited-key of each candidate.  For ``"random"`` only candidates that can still make
        the cut are guaranteed to be returned (see :meth:`_random_prefilter`).
        """
        total = int(cnt.sum())
        if total == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        # CSR range gather: position = row start + offset inside the row, built with two
        # np.repeat calls and no per-pair fancy indexing of the frontier arrays.
        seg_start = np.cumsum(cnt) - cnt
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(self.indptr[f_node] - seg_start, cnt)
        item = np.repeat(f_item, cnt)
        vals = self.values[pos]
        del pos
        if self.rank is None:
            item, vals = self._random_prefilter(item, vals, chunk_items, space, visited)
        keys = item * self.n_nodes + vals
        del item, vals
        keys = _drop_visited(keys, visited)
        keys = _sorted_unique(keys)  # dedupe; sorted by (item, key value)
        item = keys // self.n_nodes
        val = keys - item * self.n_nodes
        if self.rank is not None:
            return item, self.order[val], keys
        # "random": val is the node id, ascending within each item after the sort; the
        # stable lexsort on (item, hash) therefore breaks hash ties by lower node id.
        h = neighbor_hash(self.seed, chunk_items[item], val)
        o = np.lexsort((h, item))
        return item[o], val[o], keys[o]

    def _random_prefilter(
        self,
        item: np.ndarray,
        node: np.ndarray,
        chunk_items: np.ndarray,
        space: np.ndarray,
        visited: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact hash-threshold prefilter for the ``"random"`` rule.

        Sorting every gathered pair is the dominant cost when popular users are expanded
        (tens of millions of pairs on Amazon-Book).  An item with ``C`` gathered pairs that
        needs ``s`` nodes first keeps only pairs whose hash is below ``RANDOM_PREFILTER_FACTOR
        * s / C`` of the hash range.  If at least ``s`` distinct unvisited nodes survive, the
        ``s`` smallest hashes overall are among them (everything cut has a larger hash), so the
        result is exact; items that fall short (heavy duplication) are redone unfiltered.
        """
        m = space.size
        pairs = np.bincount(item, minlength=m)
        want = RANDOM_PREFILTER_FACTOR * space.astype(np.float64)
        filtered = want < pairs
        if not filtered.any():
            return item, node
        frac = np.where(filtered, want / np.maximum(pairs, 1), 1.0)
        thr = np.full(m, np.iinfo(np.uint64).max, dtype=np.uint64)
        thr[filtered] = (frac[filtered] * 2.0**64).astype(np.uint64)
        h = neighbor_hash(self.seed, chunk_items[item], node)
        sel = h <= thr[item]
        del h
        # Distinct unvisited survivors per item decide which items are settled.
        k = _sorted_unique(_drop_visited(item[sel] * self.n_nodes + node[sel], visited))
        distinct = np.bincount(k // self.n_nodes, minlength=m)
        redo = filtered & (distinct < space)
        sel |= redo[item]
        return item[sel], node[sel]


def _drop_visited(keys: np.ndarray, visited: np.ndarray) -> np.ndarray:
    """Remove packed keys present in the sorted array ``visited``."""
    if visited.size == 0 or keys.size == 0:
        return keys
    at = np.searchsorted(visited, keys)
    np.minimum(at, visited.size - 1, out=at)
    return keys[visited[at] != keys]


def _bfs_chunk(
    ranker: _Ranker,
    chunk_items: np.ndarray,
    n: int,
    max_hops: int | None,
    max_pairs: int,
    node_out: np.ndarray,
    hop_out: np.ndarray,
) -> np.ndarray:
    """Fill ``node_out``/``hop_out`` (views of shape (m, n)) for one chunk; return lengths."""
    m = chunk_items.size
    N = np.int64(ranker.n_nodes)
    length = np.ones(m, dtype=np.int64)
    node_out[:, 0] = chunk_items
    hop_out[:, 0] = 0
    local = np.arange(m, dtype=np.int64)
    f_item, f_node = local, chunk_items.copy()
    visited = np.sort(local * N + ranker.key_of(chunk_items))
    h = 0
    while f_item.size and (max_hops is None or h < max_hops):
        active = length < n
        keep_f = active[f_item]
        f_item, f_node = f_item[keep_f], f_node[keep_f]
        if f_item.size == 0:
            break
        h += 1
        cnt = ranker.gather_counts(f_node)
        # Split the hop into item groups so that no gather exceeds max_pairs pairs; the
        # frontier is sorted by item, so groups are contiguous slices.
        per_item = np.bincount(f_item, weights=cnt, minlength=m).astype(np.int64)
        if int(per_item.sum()) <= max_pairs:
            bounds = [0, f_item.size]
        else:
            group = (np.cumsum(per_item) - per_item) // max_pairs
            g = group[f_item]
            bounds = [0, *(np.flatnonzero(g[1:] != g[:-1]) + 1).tolist(), f_item.size]
        new_item, new_node, new_key = [], [], []
        for lo, hi in pairwise(bounds):
            c_item, c_node, c_key = ranker.candidates(
                f_item[lo:hi], f_node[lo:hi], cnt[lo:hi], visited, chunk_items, n - length
            )
            if c_item.size == 0:
                continue
            counts = np.bincount(c_item, minlength=m)
            rank = np.arange(c_item.size, dtype=np.int64) - (np.cumsum(counts) - counts)[c_item]
            space = n - length
            keep = rank < space[c_item]
            c_item, c_node, c_key = c_item[keep], c_node[keep], c_key[keep]
            pos = length[c_item] + rank[keep]
            node_out[c_item, pos] = c_node
            hop_out[c_item, pos] = h
            length += np.minimum(counts, space)
            new_item.append(c_item)
            new_node.append(c_node)
            new_key.append(c_key)
        if not new_item:
            break
        f_item = np.concatenate(new_item)
        f_node = np.concatenate(new_node)
        # Visited keys of finished items are never queried again: drop them to keep the
        # searchsorted table small.
        visited = np.concatenate([visited, *new_key])
        visited = np.sort(visited[length[visited // N] < n])
    return length


def bfs_neighbor_sequences(
    graph: CollaborativeKG,
    n: int = DEFAULT_SEQUENCE_LENGTH,
    max_hops: int | None = None,
    tie_break: str = "degree",
    seed: int = 0,
    *,
    items: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> NeighborSequences:
    """Truncated-BFS neighbour sequences for every item at once (see the module docstring).

    Args:
        graph: collaborative KG built from TRAIN interactions only.
        n: sequence length including the item itself (>= 1).
        max_hops: stop after this many hops (None = until full or the frontier is empty).
        tie_break: ``"degree"`` or ``"random"``.
        seed: seed of the ``"random"`` rule (ignored by ``"degree"``).
        items: item ids to compute (default: all ``graph.n_items`` in id order).
        chunk_size: items processed together; bounds the output/visited working set.
        max_pairs: bound on the (item, neighbour) pairs of one gather; bounds peak memory
            (a group exceeds it only when a single item's gather alone does: at most
            ``n * max_degree`` pairs).
            Neither ``chunk_size`` nor ``max_pairs`` changes the result.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_hops is not None and max_hops < 0:
        raise ValueError(f"max_hops must be >= 0 or None, got {max_hops}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    if chunk_size < 1 or max_pairs < 1:
        raise ValueError("chunk_size and max_pairs must be >= 1")
    if items is None:
        item_ids = np.arange(graph.n_items, dtype=np.int64)
    else:
        item_ids = np.asarray(items, dtype=np.int64).reshape(-1)
        if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= graph.n_items):
            raise ValueError(f"items out of range [0, {graph.n_items})")
    rows = item_ids.size
    node_id = np.full((rows, n), PAD, dtype=np.int64)
    hop = np.full((rows, n), PAD, dtype=np.int32)
    length = np.zeros(rows, dtype=np.int64)
    ranker = _Ranker(graph, tie_break, n, seed)
    for start in range(0, rows, chunk_size):
        stop = min(start + chunk_size, rows)
        length[start:stop] = _bfs_chunk(
            ranker,
            item_ids[start:stop],
            n,
            max_hops,
            max_pairs,
            node_id[start:stop],
            hop[start:stop],
        )
    mask = node_id >= 0
    node_type = np.where(mask, graph.node_type[np.where(mask, node_id, 0)], PAD).astype(np.int8)
    return NeighborSequences(
        item_id=item_ids,
        node_id=node_id,
        hop=hop,
        node_type=node_type,
        mask=mask,
        length=length,
        n=int(n),
        tie_break=tie_break,
        seed=int(seed),
    )
