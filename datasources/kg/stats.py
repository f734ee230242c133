"""The build's statistics: Table-1 counts overall and per source, and what was dropped and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from datasources.kg.cleaning import Drops
from datasources.kg.ids import KeptGraph, ProvisionalGraph, distinct_ids
from datasources.kg.inputs import CollectedTriples
from datasources.kg.linking import ItemLinks


def to_json_scalars(value: Any) -> Any:
    """NumPy scalars → Python scalars, so ``stats`` can be stored as JSON metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): to_json_scalars(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_scalars(v) for v in value]
    return value


def overall_stats(
    item_links: pd.DataFrame, kept: KeptGraph, n_entities: int, n_relations: int, n_triples: int
) -> dict[str, Any]:
    """Table-1 counts of the whole graph; ``n_triples`` includes reverses, if added.

    An item counts as linked (``n_items_linked``) when the KG reaches it at all: a link source
    maps a key to it, or a kept triple names it as an item entity — which is also how the
    ``item:<item_key>`` route of metadata triples joins an item, without any link row. Items
    with KG neighbours are those of the second kind only (a linked key may have no kept triple).
    """
    n_items = kept.n_items
    head_id, tail_id = kept.head_id, kept.tail_id
    items_touched = distinct_ids(
        np.concatenate([head_id[head_id < n_items], tail_id[tail_id < n_items]]), n_items
    )
    linked = np.union1d(item_links["item_id"].to_numpy(np.int64), items_touched)
    return {
        "n_items": n_items,
        "n_items_linked": len(linked),
        "share_items_linked": len(linked) / n_items if n_items else 0.0,
        "n_entities": n_entities,
        "n_attribute_entities": n_entities - n_items,
        "n_relations": n_relations,
        "n_triples": n_triples,
        "n_triples_forward": len(head_id),
        "n_items_with_kg_neighbours": len(items_touched),
        "share_items_with_kg_neighbours": len(items_touched) / n_items if n_items else 0.0,
    }


def by_source_stats(
    triples: CollectedTriples, kept: KeptGraph, drops: Drops
) -> dict[str, dict[str, Any]]:
    """Table-1 counts per triple source (forward triples it is credited with), and its drops."""
    n_items = kept.n_items
    fwd = pd.DataFrame(
        {"src": kept.source, "h": kept.head_id, "r": kept.relation_id, "t": kept.tail_id}
    )
    nodes = pd.concat(
        [
            fwd[["src", "h"]].set_axis(["src", "e"], axis=1),
            fwd[["src", "t"]].set_axis(["src", "e"], axis=1),
        ]
    ).drop_duplicates()
    n_ent_src = nodes.groupby("src").size()
    n_item_src = nodes[nodes["e"] < n_items].groupby("src").size()
    n_rel_src = fwd[["src", "r"]].drop_duplicates().groupby("src").size()
    n_tri_src = np.bincount(kept.source, minlength=len(triples.source_names))
    n_input = np.bincount(triples.source, minlength=len(triples.source_names))
    drop_counts = {
        "unknown_item_key": triples.per_source(drops.unknown_item),
        "self_loops": triples.per_source(drops.self_loop),
        "duplicates": triples.per_source(drops.duplicate),
        "max_entity_degree": triples.per_source(drops.capped),
        "min_relation_triples": triples.per_source(drops.thresholds.by_relation),
        "min_entity_degree": triples.per_source(drops.thresholds.by_degree),
    }
    by_source: dict[str, dict[str, Any]] = {}
    for order, name in enumerate(triples.source_names):
        n_it = int(n_item_src.get(order, 0))
        by_source[name] = {
            "n_items": n_items,
            "n_entities": int(n_ent_src.get(order, 0)),
            "n_relations": int(n_rel_src.get(order, 0)),
            "n_triples": int(n_tri_src[order]),
            "n_items_with_kg_neighbours": n_it,
            "share_items_with_kg_neighbours": n_it / n_items if n_items else 0.0,
            "n_input_triples": int(n_input[order]),
            "dropped": {k: int(v[order]) for k, v in drop_counts.items()},
        }
    return by_source


def dropped_stats(graph: ProvisionalGraph, drops: Drops, links: ItemLinks) -> dict[str, Any]:
    """Everything removed, triples and links, totalled over sources."""
    thresholds = drops.thresholds
    return {
        "duplicate_triples": int(drops.duplicate.sum()),
        "self_loops": int(drops.self_loop.sum()),
        "unknown_item_key_triples": int(drops.unknown_item.sum()),
        "unknown_item_key_examples": drops.unknown_item_examples,
        "by_max_entity_degree": int(drops.capped.sum()),
        "by_min_relation_triples": int(thresholds.by_relation.sum()),
        "by_min_entity_degree": int(thresholds.by_degree.sum()),
        "relations_dropped": sorted(
            str(k) for k in graph.relation_keys[thresholds.relations_dropped]
        ),
        "attribute_entities_dropped": int(thresholds.entities_dropped.sum()),
        "links_unknown_item": sum(s["n_links_unknown_item"] for s in links.stats.values()),
        "links_key_claimed_by_other_item": links.n_conflicts,
    }
