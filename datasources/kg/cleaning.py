"""Which triples the build drops, and why (the cleaning order of :mod:`datasources.kg.build`).

Every step returns a mask over the collected rows instead of removing them, so that the
statistics can count each drop per source and per reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasources.kg.ids import ProvisionalGraph
from datasources.kg.inputs import CollectedTriples
from datasources.kg.readers import ITEM_PREFIX


@dataclass(frozen=True)
class ThresholdDrops:
    """What ``min_relation_triples`` and ``min_entity_degree`` removed.

    Attributes:
        by_relation, by_degree: per collected row, dropped by that threshold.
        relations_dropped: per provisional relation, dropped for having too few triples.
        entities_dropped: per provisional node, dropped for too low a degree.
    """

    by_relation: np.ndarray
    by_degree: np.ndarray
    relations_dropped: np.ndarray
    entities_dropped: np.ndarray


@dataclass(frozen=True)
class Drops:
    """Why each collected row was dropped: one mask per reason, each row under one reason at most.

    Attributes:
        unknown_item: names an ``item:<key>`` that is not an item.
        unknown_item_examples: up to 10 such keys, in row order.
        self_loop: head and tail are the same entity.
        duplicate: a later copy of a (head, relation, tail) that an earlier row has.
        capped: over the hub cap (``max_entity_degree``).
        thresholds: what the relation and degree thresholds removed.
    """

    unknown_item: np.ndarray
    unknown_item_examples: list[str]
    self_loop: np.ndarray
    duplicate: np.ndarray
    capped: np.ndarray
    thresholds: ThresholdDrops

    @property
    def kept(self) -> np.ndarray:
        """Rows that no step dropped: the triples of the graph."""
        return ~(
            self.unknown_item
            | self.self_loop
            | self.duplicate
            | self.capped
            | self.thresholds.by_relation
            | self.thresholds.by_degree
        )


def unknown_item_rows(graph: ProvisionalGraph) -> np.ndarray:
    """Rows with an ``item:<key>`` endpoint that did not resolve to an item.

    Such a triple is a fact about something outside the item set (an item the dataset does not
    keep); as an attribute entity it would be a stray node.
    """
    # tested once per distinct attribute key (an unresolved endpoint's key is its attribute
    # key), not once per row: string work stays proportional to the entities
    item_key = pd.Series(graph.attribute_keys, dtype=object).str.startswith(ITEM_PREFIX, na=False)
    item_key = np.append(item_key.to_numpy(dtype=bool), False)  # index -1: a resolved endpoint
    head = np.where(graph.head >= graph.n_items, graph.head - graph.n_items, -1)
    tail = np.where(graph.tail >= graph.n_items, graph.tail - graph.n_items, -1)
    return item_key[head] | item_key[tail]


def unknown_item_examples(
    graph: ProvisionalGraph, triples: CollectedTriples, unknown_item: np.ndarray
) -> list[str]:
    """Up to 10 distinct unresolved ``item:`` keys, so a report shows what was missing."""
    head_keys = triples.rows["head_key"].to_numpy(object)
    tail_keys = triples.rows["tail_key"].to_numpy(object)
    unresolved_head = graph.head[unknown_item] >= graph.n_items
    return (
        pd.Series(np.where(unresolved_head, head_keys[unknown_item], tail_keys[unknown_item]))
        .drop_duplicates()
        .head(10)
        .tolist()
    )


def duplicate_rows(graph: ProvisionalGraph, alive: np.ndarray) -> np.ndarray:
    """Live rows repeating the (head, relation, tail) of an earlier row.

    The first copy (source order, then file order) is the one kept, so its source is the one
    credited. Whether a row was dropped earlier depends only on its (h, r, t), so all copies of
    a dropped row are dropped too and the first copy of a live row is always live.
    """
    keyframe = pd.DataFrame({"h": graph.head, "r": graph.relation, "t": graph.tail})
    return alive & keyframe.duplicated().to_numpy()


def hub_capped_rows(
    graph: ProvisionalGraph, alive: np.ndarray, max_entity_degree: int | None, seed: int
) -> np.ndarray:
    """Live rows over the hub cap; see ``KGBuildOptions.max_entity_degree`` for the rule.

    The draw is made in canonical (head, relation, tail) order so that which rows survive
    depends on the set of triples and the seed only, not on the order of input rows.
    """
    capped = np.zeros(len(graph.head), dtype=bool)
    if max_entity_degree is None or not alive.any():
        return capped
    n_items = graph.n_items
    idx = np.flatnonzero(alive)
    hh, rr, tt = graph.head[idx], graph.relation[idx], graph.tail[idx]
    group = np.where(tt >= n_items, tt, np.where(hh >= n_items, hh, -1))
    canonical = np.lexsort((tt, rr, hh))
    draw = np.empty(len(idx))
    draw[canonical] = np.random.default_rng(seed).random(len(idx))
    order = np.lexsort((draw, group))
    g_sorted = group[order]
    starts = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    positions = np.arange(len(order))
    rank_sorted = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = rank_sorted
    over = (group >= 0) & (rank >= max_entity_degree)
    capped[idx[over]] = True
    return capped


def threshold_drops(
    graph: ProvisionalGraph, alive: np.ndarray, min_relation_triples: int, min_entity_degree: int
) -> ThresholdDrops:
    """Apply both thresholds until nothing changes, so the result satisfies both.

    Dropping a relation can push an entity under the degree limit and vice versa. Items are
    never dropped: every item stays an entity whatever its degree.
    """
    h, r, t = graph.head, graph.relation, graph.tail
    n_relations, n_nodes, n_items = len(graph.relation_keys), graph.n_nodes, graph.n_items
    alive = alive.copy()
    by_relation = np.zeros(len(h), dtype=bool)
    by_degree = np.zeros(len(h), dtype=bool)
    entities_dropped = np.zeros(n_nodes, dtype=bool)
    relations_dropped = np.zeros(n_relations, dtype=bool)
    while True:
        changed = False
        if min_relation_triples > 1:
            counts = np.bincount(r[alive], minlength=n_relations)
            low = (counts > 0) & (counts < min_relation_triples)
            kill = alive & low[r]
            if kill.any():
                relations_dropped |= low
                by_relation |= kill
                alive &= ~kill
                changed = True
        if min_entity_degree > 1:
            deg = np.bincount(h[alive], minlength=n_nodes) + np.bincount(
                t[alive], minlength=n_nodes
            )
            low = (deg > 0) & (deg < min_entity_degree)
            low[:n_items] = False  # items are never dropped
            kill = alive & (low[h] | low[t])
            if kill.any():
                entities_dropped |= low
                by_degree |= kill
                alive &= ~kill
                changed = True
        if not changed:
            break
    return ThresholdDrops(by_relation, by_degree, relations_dropped, entities_dropped)


def clean(
    graph: ProvisionalGraph,
    triples: CollectedTriples,
    *,
    max_entity_degree: int | None,
    seed: int,
    min_relation_triples: int,
    min_entity_degree: int,
) -> Drops:
    """Run the cleaning steps in the order :mod:`datasources.kg.build` documents.

    Each step only looks at the rows still alive, so a row is charged to its first reason.
    """
    unknown_item = unknown_item_rows(graph)
    alive = ~unknown_item
    self_loop = alive & (graph.head == graph.tail)
    alive &= ~self_loop
    duplicate = duplicate_rows(graph, alive)
    alive &= ~duplicate
    capped = hub_capped_rows(graph, alive, max_entity_degree, seed)
    alive &= ~capped
    return Drops(
        unknown_item=unknown_item,
        unknown_item_examples=unknown_item_examples(graph, triples, unknown_item),
        self_loop=self_loop,
        duplicate=duplicate,
        capped=capped,
        thresholds=threshold_drops(graph, alive, min_relation_triples, min_entity_degree),
    )
