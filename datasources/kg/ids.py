"""Entity and relation ids: provisional ids over every input triple, final ids over the kept ones.

Cleaning works on integer ids rather than keys (fast, vectorised); only once it is done is it
known which attribute entities and relations survive, so the final, gap-free ids come last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasources.kg.inputs import CollectedTriples
from datasources.kg.linking import ItemKeyLookup

INVERSE_SUFFIX = "~inv"


@dataclass(frozen=True)
class ProvisionalGraph:
    """Every collected triple (same rows, same order) as provisional node and relation ids.

    Attributes:
        head, relation, tail: int64 ids per row. Nodes ``0..n_items-1`` are the items (their
            final ids); node ``n_items + i`` is the attribute entity ``attribute_keys[i]``.
        attribute_keys: every key that is not an item, sorted.
        relation_keys: every relation key, sorted; relation ``i`` is ``relation_keys[i]``.
        n_items: number of items.
    """

    head: np.ndarray
    relation: np.ndarray
    tail: np.ndarray
    attribute_keys: np.ndarray
    relation_keys: np.ndarray
    n_items: int

    @property
    def n_nodes(self) -> int:
        """Items plus every attribute entity, dropped or not."""
        return self.n_items + len(self.attribute_keys)


def assign_provisional_ids(
    triples: CollectedTriples, lookup: ItemKeyLookup, n_items: int, add_reverse: bool
) -> ProvisionalGraph:
    """Number every key: item keys by their item, other keys and relations by sorted key.

    Sorted-key numbering (``factorize(sort=True)``) makes every later ordering (final ids, the
    hub-cap draw) independent of the order of input rows. With ``add_reverse`` a relation key
    must not already end in :data:`INVERSE_SUFFIX`, or a reverse could not be told from it.
    """
    # One hash pass over every endpoint key; the item lookup and the sorted numbering of the
    # attribute keys then work on the distinct keys only (hashing millions of row keys three
    # times grew faster than the rows: bench/scaling.py)
    n_rows = len(triples.rows)
    codes, keys = pd.factorize(np.concatenate([triples.rows["head_key"].to_numpy(object),
                                               triples.rows["tail_key"].to_numpy(object)]))
    keys = np.asarray(keys, dtype=object)
    node = lookup.item_ids_of(keys)
    is_attr = node < 0
    attr_keys = keys[is_attr]
    order = np.argsort(attr_keys, kind="stable")  # sorted-key numbering, as factorize(sort=True)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    node[is_attr] = n_items + rank
    head, tail = node[codes[:n_rows]], node[codes[n_rows:]]
    attr_uniques = attr_keys[order]
    relation, rel_uniques = pd.factorize(triples.rows["relation_key"].to_numpy(object), sort=True)
    rel_uniques = np.asarray(rel_uniques, dtype=object)
    if add_reverse and any(str(k).endswith(INVERSE_SUFFIX) for k in rel_uniques):
        raise ValueError(f"relation keys already end in {INVERSE_SUFFIX!r}; cannot add reverses")
    return ProvisionalGraph(
        head=head,
        relation=relation.astype(np.int64),
        tail=tail,
        attribute_keys=np.asarray(attr_uniques, dtype=object),
        relation_keys=rel_uniques,
        n_items=n_items,
    )


@dataclass(frozen=True)
class KeptGraph:
    """The kept forward triples under their final ids.

    Items keep their ids; the kept attribute entities follow as ``n_items..`` and the kept
    relations as ``0..``, both in provisional (sorted key) order.

    Attributes:
        head_id, relation_id, tail_id: final ids, one per kept triple, in input-row order.
        source: position of each kept triple's source.
        attribute_keys: key of entity ``n_items + i``.
        relation_keys: key of forward relation ``i``.
        n_items: number of items.
    """

    head_id: np.ndarray
    relation_id: np.ndarray
    tail_id: np.ndarray
    source: np.ndarray
    attribute_keys: np.ndarray
    relation_keys: np.ndarray
    n_items: int


def distinct_ids(ids: np.ndarray, upper: int) -> np.ndarray:
    """The sorted distinct values of ``ids`` (ints in ``[0, upper)``): ``np.unique`` by a bitmap.

    NumPy 2.4's hash-based ``np.unique`` takes ~2 s for 3 million ids (bench/scaling.py at
    16× ML-1M); ids are dense and bounded, so one boolean array of ``upper`` does it at once."""
    seen = np.zeros(upper, dtype=bool)
    seen[ids] = True
    return np.flatnonzero(seen)


def assign_final_ids(graph: ProvisionalGraph, kept: np.ndarray, source: np.ndarray) -> KeptGraph:
    """Renumber the triples selected by ``kept`` so used entities and relations have no gaps.

    Items are numbered whether or not a kept triple uses them: item id is entity id.
    """
    n_items = graph.n_items
    fh, fr, ft = graph.head[kept], graph.relation[kept], graph.tail[kept]
    used_nodes = distinct_ids(np.concatenate([fh[fh >= n_items], ft[ft >= n_items]]),
                              graph.n_nodes)
    node_map = np.full(graph.n_nodes, -1, dtype=np.int64)
    node_map[:n_items] = np.arange(n_items)
    node_map[used_nodes] = n_items + np.arange(len(used_nodes))
    used_rel = distinct_ids(fr, len(graph.relation_keys))
    rel_map = np.full(len(graph.relation_keys), -1, dtype=np.int64)
    rel_map[used_rel] = np.arange(len(used_rel))
    return KeptGraph(
        head_id=node_map[fh],
        relation_id=rel_map[fr],
        tail_id=node_map[ft],
        source=source[kept],
        attribute_keys=graph.attribute_keys[used_nodes - n_items],
        relation_keys=graph.relation_keys[used_rel],
        n_items=n_items,
    )
