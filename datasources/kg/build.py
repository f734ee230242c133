"""Merge item links and triple sources into one id-mapped knowledge graph.

Produces the four tables of the data contract (``item_links``, ``entities``, ``relations``,
``kg_triples``) plus the statistics the paper reports in its Table 1, overall and per source.

How keys become ids
-------------------
* Every item is an entity and **keeps its id**: ``entity_id == item_id`` for ids ``0..n_items-1``
  (KGAT-style models index item embeddings and entity embeddings with the same number).
* A head/tail key that some link source maps to an item, or that is ``item:<item_key>``,
  becomes that item's id. An item linked to several keys (a Freebase MID *and* a Satori id)
  unifies all of them into the item, which is how independent KGs get merged.
* Every other key is an *attribute entity*; attribute ids follow the items, in the order of
  their keys (sorted), so the numbering does not depend on the order of input rows.
* Relations are numbered by sorted key; with ``add_reverse`` the inverse of relation ``i`` is
  ``i + n_forward`` and is called ``<key>~inv``.

Cleaning, in this order (all vectorised with NumPy/pandas; no Python loop over triples):

1. triples naming an ``item:<key>`` that is not in ``items`` are dropped (counted);
2. self-loops (head == tail after unification) are dropped (counted);
3. duplicates (same head, relation, tail after unification, across all sources) are dropped,
   keeping the copy of the earliest source in ``triple_sources`` (counted per source);
4. hub cap (``max_entity_degree``), see :class:`KGBuildOptions`;
5. ``min_relation_triples`` and ``min_entity_degree`` applied together until nothing changes,
   so the result satisfies both (dropping a relation can push an entity under the degree limit
   and vice versa).

:func:`build_kg` runs these steps in order, each a pure function in a sibling module (kept
apart so each can be read and tested on its own): :mod:`.inputs` (checks, one table of triples),
:mod:`.linking` (links and key → item lookup), :mod:`.ids` (provisional, then final ids),
:mod:`.cleaning` (the drops above), :mod:`.tables` and :mod:`.entities` (the output tables),
:mod:`.stats` (the statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from datasources.kg.cleaning import clean
from datasources.kg.entities import FREEBASE_TYPE_KINDS, RELATION_TAIL_KINDS, entities_table
from datasources.kg.ids import INVERSE_SUFFIX, assign_final_ids, assign_provisional_ids
from datasources.kg.inputs import TripleSource, as_keys, check_items, collect_triples
from datasources.kg.linking import item_key_lookup, resolve_links
from datasources.kg.stats import by_source_stats, dropped_stats, overall_stats, to_json_scalars
from datasources.kg.tables import relations_table, triples_table

__all__ = [
    "FREEBASE_TYPE_KINDS",
    "INVERSE_SUFFIX",
    "RELATION_TAIL_KINDS",
    "TABLE1_COLUMNS",
    "KGBuildOptions",
    "KGResult",
    "build_kg",
    "validate_kg",
]

TABLE1_COLUMNS = [
    "source",
    "source_type",
    "n_items",
    "n_items_linked",
    "share_items_linked",
    "n_entities",
    "n_relations",
    "n_triples",
    "n_items_with_kg_neighbours",
    "share_items_with_kg_neighbours",
]


@dataclass(frozen=True)
class KGBuildOptions:
    """Knobs of :func:`build_kg`.

    Attributes:
        add_reverse: add ``(t, <r>~inv, h)`` for every triple (relation id ``r + n_forward``).
        min_relation_triples: relations with fewer triples are dropped with their triples.
        min_entity_degree: attribute entities in fewer triples are dropped with their triples
            (items are never dropped). Degrees count forward triples, head or tail.
        max_entity_degree: hub cap. Every triple is charged to one attribute endpoint — its tail
            if the tail is an attribute entity, else its head if that is one (item–item triples
            are never capped) — and of the triples charged to an entity at most this many are
            kept. Which ones is random but reproducible: triples are put in canonical
            (head, relation, tail) key order, given ``numpy.random.default_rng(seed)`` draws
            in that order, and the smallest draws win. The choice therefore depends only on the
            set of triples and the seed, not on the order of input rows.
        seed: seed of the hub-cap draw.
    """

    add_reverse: bool = field(default=False, metadata={
        "doc": "Add an inverse triple (relation '<key>~inv') for every triple."})
    min_relation_triples: int = field(default=1, metadata={
        "doc": "Drop relations with fewer triples."})
    min_entity_degree: int = field(default=1, metadata={
        "doc": "Drop attribute entities in fewer triples (items are kept)."})
    max_entity_degree: int | None = field(default=None, metadata={
        "doc": "Cap hub entities at this many triples (a seeded, order-independent choice)."})
    seed: int = field(default=0, metadata={"doc": "Seed of the hub-cap draw."})

    def __post_init__(self) -> None:
        if self.min_relation_triples < 0 or self.min_entity_degree < 0:
            raise ValueError("thresholds must be >= 0")
        if self.max_entity_degree is not None and self.max_entity_degree < 1:
            raise ValueError("max_entity_degree must be >= 1 or None")


@dataclass
class KGResult:
    """The built KG (see the module docstring for the id rules).

    Attributes:
        item_links: DataFrame[item_id, entity_key, source], one row per (item, key), the source
            being the first link source (in argument order) that gave it.
        entities: DataFrame[entity_id, entity_key, name, kind], items first.
        relations: DataFrame[relation_id, relation_key, n_triples].
        kg_triples: DataFrame[head_id, relation_id, tail_id, source], sorted, unique.
        stats: JSON-serialisable dict: ``overall`` and ``by_source`` (Table-1 fields),
            ``links`` (per link source, with unknown-item examples), ``dropped`` (counts of
            everything removed and why). :meth:`table1` shows the Table-1 part as a frame.
    """

    item_links: pd.DataFrame
    entities: pd.DataFrame
    relations: pd.DataFrame
    kg_triples: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)

    def table1(self) -> pd.DataFrame:
        """Table-1 block: one row ``all``, then one per link source and per triple source."""
        rows = [{"source": "all", "source_type": "all", **self.stats["overall"]}]
        for name, s in self.stats["links"].items():
            rows.append({"source": name, "source_type": "links", **s})
        for name, s in self.stats["by_source"].items():
            rows.append({"source": name, "source_type": "triples", **s})
        frame = pd.DataFrame(rows)
        for col in TABLE1_COLUMNS:
            if col not in frame.columns:
                frame[col] = np.nan
            if col.startswith("n_"):  # counts stay integers; "not applicable" is <NA>
                frame[col] = frame[col].astype("Int64")
        return frame.loc[:, TABLE1_COLUMNS]


def build_kg(
    items: pd.DataFrame,
    links: Sequence[tuple[str, pd.DataFrame]] = (),
    triple_sources: Sequence[TripleSource] = (),
    names: pd.DataFrame | None = None,
    types: pd.DataFrame | None = None,
    options: KGBuildOptions | None = None,
) -> KGResult:
    """Build the id-mapped KG; see the module docstring for the rules.

    Args:
        items: the ingested items (``item_id`` 0..n-1, ``item_key``; ``title`` used as name).
        links: ``(source_name, DataFrame[item_key, entity_key])``; links whose item_key is not
            an item are counted (with examples) in ``stats["links"]`` and otherwise ignored.
        triple_sources: ``(source_name, DataFrame[head_key, relation_key, tail_key],
            names DataFrame[entity_key, name, kind] | None)`` or ``(source_name, Triples)``.
        names: global names, DataFrame[entity_key, name] (+ optional kind), e.g. Freebase names.
        types: DataFrame[entity_key, type] (Freebase roles, mapped by FREEBASE_TYPE_KINDS).
        options: :class:`KGBuildOptions`.

    Names of attribute entities: first non-null over the triple sources' names (in order),
    then ``names``. Kinds: the same sources, then ``types``, then the relation the entity is a
    tail of (:data:`RELATION_TAIL_KINDS`), then the key prefix (``freebase``, ``satori``,
    ``wikidata``, the text before ``:``, else ``entity``). Item entities are named by their
    title (else the name of their first linked key) and have kind ``item``.
    """
    options = options or KGBuildOptions()
    items = check_items(items)
    item_keys = as_keys(items["item_key"])
    item_links = resolve_links(pd.Index(item_keys), list(links))
    lookup = item_key_lookup(item_links.table, item_keys)
    triples = collect_triples(triple_sources)
    graph = assign_provisional_ids(triples, lookup, len(items), options.add_reverse)
    drops = clean(
        graph,
        triples,
        max_entity_degree=options.max_entity_degree,
        seed=options.seed,
        min_relation_triples=options.min_relation_triples,
        min_entity_degree=options.min_entity_degree,
    )
    kept = assign_final_ids(graph, drops.kept, triples.source)
    kg_triples = triples_table(kept, triples.source_names, options.add_reverse)
    relations = relations_table(kept.relation_keys, kg_triples, options.add_reverse)
    entities = entities_table(items, item_links.table, kept, triples.name_frames, names, types)
    stats = {
        "overall": overall_stats(
            item_links.table, kept, len(entities), len(relations), len(kg_triples)
        ),
        "by_source": by_source_stats(triples, kept, drops),
        "links": item_links.stats,
        "dropped": dropped_stats(graph, drops, item_links),
    }
    return KGResult(
        item_links.table.reset_index(drop=True),
        entities,
        relations,
        kg_triples,
        to_json_scalars(stats),
    )


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


def validate_kg(result: KGResult, n_items: int) -> list[str]:
    """Return the violated invariants of ``result`` (empty list = valid).

    Checked: expected columns; entity ids are 0..n-1 in order; the first ``n_items`` entities
    are the items (kind ``item``) and no later entity is; entity keys unique; relation ids
    0..m-1 with unique keys and correct ``n_triples``; every triple's ids in range; no duplicate
    triple; no self-loop; item links point at items.
    """
    problems: list[str] = []
    expected = {
        "entities": (result.entities, ["entity_id", "entity_key", "name", "kind"]),
        "relations": (result.relations, ["relation_id", "relation_key", "n_triples"]),
        "kg_triples": (result.kg_triples, ["head_id", "relation_id", "tail_id", "source"]),
        "item_links": (result.item_links, ["item_id", "entity_key", "source"]),
    }
    for table, (df, cols) in expected.items():
        missing = [c for c in cols if c not in df.columns]
        if missing:
            problems.append(f"{table} lacks columns {missing}")
    if problems:
        return problems

    ent, rel, kg, links = result.entities, result.relations, result.kg_triples, result.item_links
    n_ent, n_rel = len(ent), len(rel)
    if not np.array_equal(ent["entity_id"].to_numpy(), np.arange(n_ent)):
        problems.append("entity ids are not contiguous 0..n_entities-1 in order")
    if n_ent < n_items:
        problems.append(f"fewer entities ({n_ent}) than items ({n_items})")
    kinds = ent["kind"].to_numpy(object)
    if (kinds[:n_items] != "item").any():
        problems.append("items-first violated: an entity id < n_items is not an item")
    if (kinds[n_items:] == "item").any():
        problems.append("items-first violated: an entity id >= n_items has kind 'item'")
    if ent["entity_key"].isna().any() or ent["entity_key"].duplicated().any():
        problems.append("entity keys are missing or not unique")
    if ent["kind"].isna().any():
        problems.append("entities with no kind")
    if not np.array_equal(rel["relation_id"].to_numpy(), np.arange(n_rel)):
        problems.append("relation ids are not contiguous 0..n_relations-1 in order")
    if rel["relation_key"].duplicated().any():
        problems.append("relation keys are not unique")
    for col, bound in (("head_id", n_ent), ("tail_id", n_ent), ("relation_id", n_rel)):
        values = kg[col].to_numpy()
        if len(values) and (values.min() < 0 or values.max() >= bound):
            problems.append(f"kg_triples.{col} out of range [0, {bound})")
    if kg.duplicated(["head_id", "relation_id", "tail_id"]).any():
        problems.append("duplicate triples")
    if (kg["head_id"] == kg["tail_id"]).any():
        problems.append("self-loops")
    counts = np.bincount(kg["relation_id"].to_numpy(), minlength=n_rel)[:n_rel]
    if len(rel) and not np.array_equal(counts, rel["n_triples"].to_numpy()):
        problems.append("relations.n_triples does not match kg_triples")
    link_ids = links["item_id"].to_numpy()
    if len(link_ids) and (link_ids.min() < 0 or link_ids.max() >= n_items):
        problems.append("item_links.item_id out of range [0, n_items)")
    if links.duplicated(["item_id", "entity_key"]).any():
        problems.append("duplicate item links")
    return problems
