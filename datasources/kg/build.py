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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from datasources.kg.readers import ITEM_PREFIX, LINK_COLUMNS, TRIPLE_COLUMNS, Triples

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

INVERSE_SUFFIX = "~inv"

#: Freebase "type" (role) from ``e_types_fb.tsv`` → entity kind. Unlisted types are used as is.
FREEBASE_TYPE_KINDS: dict[str, str] = {
    "actor": "actor",
    "directed_by": "director",
    "director": "director",
    "written_by": "writer",
    "writer": "writer",
    "story_by": "writer",
    "film_story_contributor": "writer",
    "film_story_credits": "writer",
    "films_in_this_genre": "genre",
    "produced_by": "producer",
    "producer": "producer",
    "executive_produced_by": "producer",
    "films_executive_produced": "producer",
    "music": "music",
    "music_contributor": "music",
    "film": "film",
    "films": "film",
    "character": "character",
    "person": "person",
}

#: Relation key → kind of its tail, for tails that no names/types source gives a kind
#: (the Satori KG has no names at all, but its relations say what the tails are).
RELATION_TAIL_KINDS: dict[str, str] = {
    "film.film.genre": "genre",
    "film.film.director": "director",
    "film.film.directed_by": "director",
    "film.film.writer": "writer",
    "film.film.written_by": "writer",
    "film.film.star": "actor",
    "film.film.starring": "actor",
    "film.film.actor": "actor",
    "film.film.language": "language",
    "film.film.country": "country",
    "film.film.rating": "rated",
    "film.film.production_company": "production",
    "film.film.produced_by": "producer",
    "book.written_work.author": "writer",
    "book.book.genre": "genre",
    "book.category": "category",
    "movie.genre": "genre",
    "movie.year": "year",
}

#: Fallback kind by key prefix (``m.0abc`` → freebase, ``satori:12`` → satori, ...).
_PREFIX_KINDS: tuple[tuple[str, str], ...] = (
    ("m.", "freebase"),
    ("g.", "freebase"),
    ("satori:", "satori"),
    ("wd:", "wikidata"),
    ("kgat:", "kgat"),
)

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

    add_reverse: bool = False
    min_relation_triples: int = 1
    min_entity_degree: int = 1
    max_entity_degree: int | None = None
    seed: int = 0

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


TripleSource = tuple[str, pd.DataFrame, pd.DataFrame | None] | tuple[str, Triples]


def _py(value: Any) -> Any:
    """NumPy scalars → Python scalars, so ``stats`` can be stored as JSON metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _py(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_py(v) for v in value]
    return value


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing} (has {list(df.columns)})")


def _keys(values: pd.Series | np.ndarray) -> np.ndarray:
    return pd.Series(values).astype(str).to_numpy(dtype=object)


def _check_items(items: pd.DataFrame) -> pd.DataFrame:
    _require(items, ["item_id", "item_key"], "items")
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    ids = items["item_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(items))):
        raise ValueError("items.item_id must be exactly 0..n_items-1")
    if items["item_key"].astype(str).duplicated().any():
        dup = items.loc[items["item_key"].astype(str).duplicated(), "item_key"].iloc[0]
        raise ValueError(f"items.item_key is not unique (e.g. {dup!r})")
    return items


# --------------------------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------------------------


def _resolve_links(
    item_index: pd.Index, links: Sequence[tuple[str, pd.DataFrame]]
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], int]:
    """Map link rows onto item ids; count unknown items and keys claimed by two items."""
    n_items = len(item_index)
    parts = []
    for order, (name, df) in enumerate(links):
        _require(df, LINK_COLUMNS, f"links {name!r}")
        parts.append(
            pd.DataFrame(
                {
                    "item_key": _keys(df["item_key"]),
                    "entity_key": _keys(df["entity_key"]),
                    "_src": order,
                }
            )
        )
    names = [name for name, _ in links]
    if len(set(names)) != len(names):
        raise ValueError(f"link source names must be unique: {names}")
    if not parts:
        empty = pd.DataFrame(
            {
                "item_id": pd.Series(dtype=np.int64),
                "entity_key": pd.Series(dtype=object),
                "source": pd.Series(dtype=object),
            }
        )
        return empty, {}, 0
    all_links = pd.concat(parts, ignore_index=True)
    all_links["item_id"] = item_index.get_indexer(all_links["item_key"])
    unknown = all_links["item_id"].to_numpy() < 0
    known = all_links[~unknown].drop_duplicates(["item_id", "entity_key"])
    # A key can stand for one item only; the first claim (source order, then file order) wins.
    claimed_twice = known.duplicated("entity_key")
    conflicts = known[claimed_twice]
    known = known[~claimed_twice]

    stats: dict[str, dict[str, Any]] = {}
    for order, name in enumerate(names):
        rows = all_links[all_links["_src"] == order]
        bad = rows[rows["item_id"] < 0]
        linked = known.loc[known["_src"] == order, "item_id"].nunique()
        # Items this source links at all, even where an earlier source already gave the key.
        linked_any = rows.loc[rows["item_id"] >= 0, "item_id"].nunique()
        stats[name] = {
            "n_links": len(rows),
            "n_links_unknown_item": len(bad),
            "unknown_item_examples": bad["item_key"].drop_duplicates().head(10).tolist(),
            "n_links_key_claimed_by_other_item": int((conflicts["_src"] == order).sum()),
            "conflict_examples": conflicts.loc[conflicts["_src"] == order, "entity_key"]
            .head(10)
            .tolist(),
            "n_items": n_items,
            "n_items_linked": linked_any,
            "n_items_linked_new": linked,
            "share_items_linked": linked_any / n_items if n_items else 0.0,
        }
    known = known.sort_values(["item_id", "_src"], kind="stable")
    table = pd.DataFrame(
        {
            "item_id": known["item_id"].to_numpy(dtype=np.int64),
            "entity_key": known["entity_key"].to_numpy(dtype=object),
            "source": np.asarray(names, dtype=object)[known["_src"].to_numpy()],
        }
    )
    return table, stats, len(conflicts)


# --------------------------------------------------------------------------------------------
# Names and kinds
# --------------------------------------------------------------------------------------------


def _first_non_null(frames: list[pd.DataFrame], column: str) -> pd.Series:
    """``entity_key -> value`` taking the first non-null value over ``frames`` in order."""
    usable = [
        f.loc[f[column].notna(), ["entity_key", column]] for f in frames if column in f.columns
    ]
    if not usable:
        return pd.Series(dtype=object)
    merged = pd.concat(usable, ignore_index=True)
    merged = merged.assign(entity_key=merged["entity_key"].astype(str))
    merged = merged.drop_duplicates("entity_key")
    return pd.Series(merged[column].to_numpy(dtype=object), index=merged["entity_key"].to_numpy())


def _prefix_kind(keys: pd.Series) -> pd.Series:
    kind = pd.Series("entity", index=keys.index, dtype=object)
    has_colon = keys.str.contains(":", regex=False)
    kind[has_colon] = keys[has_colon].str.split(":", n=1).str[0]
    for prefix, name in _PREFIX_KINDS:
        kind[keys.str.startswith(prefix)] = name
    return kind


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


def _unpack(entry: Any) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    if len(entry) == 2 and isinstance(entry[1], Triples):
        return entry[0], entry[1].triples, entry[1].names
    if len(entry) == 3:
        return entry[0], entry[1], entry[2]
    raise ValueError("triple sources are (name, triples, names|None) or (name, Triples)")


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
    items = _check_items(items)
    n_items = len(items)
    item_keys = _keys(items["item_key"])
    item_index = pd.Index(item_keys)

    item_links, link_stats, n_link_conflicts = _resolve_links(item_index, list(links))

    # ---- key -> item id -----------------------------------------------------------------
    lookup_keys = np.concatenate(
        [item_links["entity_key"].to_numpy(object), ITEM_PREFIX + item_keys]
    )
    lookup_ids = np.concatenate(
        [item_links["item_id"].to_numpy(np.int64), np.arange(n_items, dtype=np.int64)]
    )
    first = ~pd.Index(lookup_keys).duplicated()
    lookup = pd.Index(lookup_keys[first])
    lookup_ids = lookup_ids[first]

    # ---- all triples, keys -> provisional node ids ----------------------------------------
    source_names: list[str] = []
    source_name_frames: list[pd.DataFrame] = []
    parts: list[pd.DataFrame] = []
    for order, entry in enumerate(triple_sources):
        name, df, src_names = _unpack(entry)
        _require(df, TRIPLE_COLUMNS, f"triples {name!r}")
        source_names.append(name)
        if src_names is not None:
            _require(src_names, ["entity_key"], f"names of {name!r}")
            source_name_frames.append(src_names)
        parts.append(
            pd.DataFrame(
                {
                    "head_key": _keys(df["head_key"]),
                    "relation_key": _keys(df["relation_key"]),
                    "tail_key": _keys(df["tail_key"]),
                    "src": np.full(len(df), order, dtype=np.int64),
                }
            )
        )
    if len(set(source_names)) != len(source_names):
        raise ValueError(f"triple source names must be unique: {source_names}")
    n_src = len(source_names)
    raw = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({c: pd.Series(dtype=object) for c in TRIPLE_COLUMNS}).assign(
            src=pd.Series(dtype=np.int64)
        )
    )
    src = raw["src"].to_numpy(np.int64)
    n_input = np.bincount(src, minlength=n_src)

    def per_source(mask: np.ndarray) -> np.ndarray:
        return np.bincount(src[mask], minlength=n_src)

    head_keys = raw["head_key"].to_numpy(object)
    tail_keys = raw["tail_key"].to_numpy(object)
    h_pos = lookup.get_indexer(head_keys)
    t_pos = lookup.get_indexer(tail_keys)
    h_item = np.where(h_pos >= 0, lookup_ids[np.maximum(h_pos, 0)], -1)
    t_item = np.where(t_pos >= 0, lookup_ids[np.maximum(t_pos, 0)], -1)

    # "item:<key>" that is not an item: a fact about something outside the item set.
    unknown_item = ((h_item < 0) & raw["head_key"].str.startswith(ITEM_PREFIX).to_numpy()) | (
        (t_item < 0) & raw["tail_key"].str.startswith(ITEM_PREFIX).to_numpy()
    )
    unknown_item_examples = (
        pd.Series(
            np.where(h_item[unknown_item] < 0, head_keys[unknown_item], tail_keys[unknown_item])
        )
        .drop_duplicates()
        .head(10)
        .tolist()
    )

    # Attribute keys get provisional ids in *sorted key* order (factorize(sort=True)), which
    # makes every later ordering (final ids, hub-cap draw) independent of input row order.
    attr_h = h_item < 0
    attr_t = t_item < 0
    attr_codes, attr_uniques = pd.factorize(
        np.concatenate([head_keys[attr_h], tail_keys[attr_t]]), sort=True
    )
    attr_uniques = np.asarray(attr_uniques, dtype=object)
    h = h_item.copy()
    t = t_item.copy()
    n_attr_h = int(attr_h.sum())
    h[attr_h] = n_items + attr_codes[:n_attr_h]
    t[attr_t] = n_items + attr_codes[n_attr_h:]
    r, rel_uniques = pd.factorize(raw["relation_key"].to_numpy(object), sort=True)
    r = r.astype(np.int64)
    rel_uniques = np.asarray(rel_uniques, dtype=object)
    if options.add_reverse and any(str(k).endswith(INVERSE_SUFFIX) for k in rel_uniques):
        raise ValueError(f"relation keys already end in {INVERSE_SUFFIX!r}; cannot add reverses")
    n_nodes = n_items + len(attr_uniques)

    alive = ~unknown_item
    self_loop = alive & (h == t)
    alive &= ~self_loop
    keyframe = pd.DataFrame({"h": h, "r": r, "t": t})
    # duplicated() marks every copy after the first (source order, then file order). Whether a
    # row is an unknown-item or self-loop row is a function of its (h, r, t), so all copies of a
    # dropped row are dropped too and the "first" copy of a live row is always live.
    duplicate = alive & keyframe.duplicated().to_numpy()
    alive &= ~duplicate

    # ---- hub cap ------------------------------------------------------------------------------
    capped = np.zeros(len(raw), dtype=bool)
    if options.max_entity_degree is not None and alive.any():
        idx = np.flatnonzero(alive)
        hh, rr, tt = h[idx], r[idx], t[idx]
        group = np.where(tt >= n_items, tt, np.where(hh >= n_items, hh, -1))
        canonical = np.lexsort((tt, rr, hh))
        draw = np.empty(len(idx))
        draw[canonical] = np.random.default_rng(options.seed).random(len(idx))
        order = np.lexsort((draw, group))
        g_sorted = group[order]
        starts = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
        positions = np.arange(len(order))
        rank_sorted = positions - np.maximum.accumulate(np.where(starts, positions, 0))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = rank_sorted
        over = (group >= 0) & (rank >= options.max_entity_degree)
        capped[idx[over]] = True
        alive &= ~capped

    # ---- thresholds to a fixpoint ----------------------------------------------------------
    by_relation = np.zeros(len(raw), dtype=bool)
    by_degree = np.zeros(len(raw), dtype=bool)
    entities_dropped = np.zeros(n_nodes, dtype=bool)
    relations_dropped = np.zeros(len(rel_uniques), dtype=bool)
    while True:
        changed = False
        if options.min_relation_triples > 1:
            counts = np.bincount(r[alive], minlength=len(rel_uniques))
            low = (counts > 0) & (counts < options.min_relation_triples)
            kill = alive & low[r]
            if kill.any():
                relations_dropped |= low
                by_relation |= kill
                alive &= ~kill
                changed = True
        if options.min_entity_degree > 1:
            deg = np.bincount(h[alive], minlength=n_nodes) + np.bincount(
                t[alive], minlength=n_nodes
            )
            low = (deg > 0) & (deg < options.min_entity_degree)
            low[:n_items] = False  # items are never dropped
            kill = alive & (low[h] | low[t])
            if kill.any():
                entities_dropped |= low
                by_degree |= kill
                alive &= ~kill
                changed = True
        if not changed:
            break

    # ---- final ids --------------------------------------------------------------------------
    fh, fr, ft, fsrc = h[alive], r[alive], t[alive], src[alive]
    used_nodes = np.unique(np.concatenate([fh[fh >= n_items], ft[ft >= n_items]]))
    node_map = np.full(n_nodes, -1, dtype=np.int64)
    node_map[:n_items] = np.arange(n_items)
    node_map[used_nodes] = n_items + np.arange(len(used_nodes))
    used_rel = np.unique(fr)
    rel_map = np.full(len(rel_uniques), -1, dtype=np.int64)
    rel_map[used_rel] = np.arange(len(used_rel))
    n_forward_rel = len(used_rel)

    head_id, rel_id, tail_id = node_map[fh], rel_map[fr], node_map[ft]
    src_labels = np.asarray(source_names, dtype=object)
    if options.add_reverse:
        kg = pd.DataFrame(
            {
                "head_id": np.concatenate([head_id, tail_id]),
                "relation_id": np.concatenate([rel_id, rel_id + n_forward_rel]),
                "tail_id": np.concatenate([tail_id, head_id]),
                "source": np.concatenate([src_labels[fsrc], src_labels[fsrc]]),
            }
        )
    else:
        kg = pd.DataFrame(
            {
                "head_id": head_id,
                "relation_id": rel_id,
                "tail_id": tail_id,
                "source": src_labels[fsrc] if len(fsrc) else np.array([], dtype=object),
            }
        )
    kg = kg.sort_values(["head_id", "relation_id", "tail_id"], kind="stable").reset_index(drop=True)
    kg = kg.astype({"head_id": np.int64, "relation_id": np.int64, "tail_id": np.int64})
    kg["source"] = kg["source"].astype(object)

    rel_keys = rel_uniques[used_rel]
    if options.add_reverse:
        rel_keys = np.concatenate(
            [rel_keys, np.asarray([k + INVERSE_SUFFIX for k in rel_keys], dtype=object)]
        )
    rel_counts = np.bincount(kg["relation_id"].to_numpy(), minlength=len(rel_keys))
    relations = pd.DataFrame(
        {
            "relation_id": np.arange(len(rel_keys), dtype=np.int64),
            "relation_key": pd.Series(rel_keys, dtype=object),
            "n_triples": rel_counts.astype(np.int64),
        }
    )

    entities = _entities(
        items,
        item_links,
        attr_keys=attr_uniques[used_nodes - n_items],
        forward=(fr, ft),
        node_map=node_map,
        rel_uniques=rel_uniques,
        n_items=n_items,
        source_name_frames=source_name_frames,
        names=names,
        types=types,
    )

    # ---- statistics ---------------------------------------------------------------------------
    overall = {
        "n_items": n_items,
        "n_items_linked": int(item_links["item_id"].nunique()),
        "share_items_linked": item_links["item_id"].nunique() / n_items if n_items else 0.0,
        "n_entities": len(entities),
        "n_attribute_entities": len(entities) - n_items,
        "n_relations": len(relations),
        "n_triples": len(kg),
        "n_triples_forward": len(fh),
    }
    items_touched = np.unique(
        np.concatenate([head_id[head_id < n_items], tail_id[tail_id < n_items]])
    )
    overall["n_items_with_kg_neighbours"] = len(items_touched)
    overall["share_items_with_kg_neighbours"] = len(items_touched) / n_items if n_items else 0.0

    by_source: dict[str, dict[str, Any]] = {}
    fwd = pd.DataFrame({"src": fsrc, "h": head_id, "r": rel_id, "t": tail_id})
    nodes = pd.concat(
        [
            fwd[["src", "h"]].set_axis(["src", "e"], axis=1),
            fwd[["src", "t"]].set_axis(["src", "e"], axis=1),
        ]
    ).drop_duplicates()
    n_ent_src = nodes.groupby("src").size()
    n_item_src = nodes[nodes["e"] < n_items].groupby("src").size()
    n_rel_src = fwd[["src", "r"]].drop_duplicates().groupby("src").size()
    n_tri_src = np.bincount(fsrc, minlength=n_src)
    drop_counts = {
        "unknown_item_key": per_source(unknown_item),
        "self_loops": per_source(self_loop),
        "duplicates": per_source(duplicate),
        "max_entity_degree": per_source(capped),
        "min_relation_triples": per_source(by_relation),
        "min_entity_degree": per_source(by_degree),
    }
    for order, name in enumerate(source_names):
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
    dropped = {
        "duplicate_triples": int(duplicate.sum()),
        "self_loops": int(self_loop.sum()),
        "unknown_item_key_triples": int(unknown_item.sum()),
        "unknown_item_key_examples": unknown_item_examples,
        "by_max_entity_degree": int(capped.sum()),
        "by_min_relation_triples": int(by_relation.sum()),
        "by_min_entity_degree": int(by_degree.sum()),
        "relations_dropped": sorted(str(k) for k in rel_uniques[relations_dropped]),
        "attribute_entities_dropped": int(entities_dropped.sum()),
        "links_unknown_item": sum(s["n_links_unknown_item"] for s in link_stats.values()),
        "links_key_claimed_by_other_item": n_link_conflicts,
    }
    stats = _py(
        {"overall": overall, "by_source": by_source, "links": link_stats, "dropped": dropped}
    )
    return KGResult(item_links.reset_index(drop=True), entities, relations, kg, stats)


def _entities(
    items: pd.DataFrame,
    item_links: pd.DataFrame,
    *,
    attr_keys: np.ndarray,
    forward: tuple[np.ndarray, np.ndarray],
    node_map: np.ndarray,
    rel_uniques: np.ndarray,
    n_items: int,
    source_name_frames: list[pd.DataFrame],
    names: pd.DataFrame | None,
    types: pd.DataFrame | None,
) -> pd.DataFrame:
    frames = [*source_name_frames]
    if names is not None:
        _require(names, ["entity_key", "name"], "names")
        frames.append(names)
    name_of = _first_non_null(frames, "name")
    kind_of = _first_non_null(frames, "kind")

    # Items: key = first linked key (source order), name = title or the key's name.
    first_link = item_links.drop_duplicates("item_id")
    item_entity_key = pd.Series(ITEM_PREFIX + _keys(items["item_key"]), dtype=object)
    item_entity_key.iloc[first_link["item_id"].to_numpy()] = first_link["entity_key"].to_numpy()
    if "title" in items.columns:
        titles = items["title"].astype(object).where(items["title"].notna(), None)
    else:
        titles = pd.Series([None] * n_items, dtype=object)
    fallback = item_entity_key.map(name_of)
    item_names = titles.where(titles.notna(), fallback)
    item_names = item_names.astype(object).where(item_names.notna(), None)

    attr = pd.Series(attr_keys, dtype=object)
    attr_names = attr.map(name_of)
    attr_kind = attr.map(kind_of)
    if types is not None:
        _require(types, ["entity_key", "type"], "types")
        t = types.drop_duplicates("entity_key")
        type_kind = pd.Series(
            t["type"].map(lambda x: FREEBASE_TYPE_KINDS.get(x, x)).to_numpy(dtype=object),
            index=t["entity_key"].astype(str).to_numpy(),
        )
        attr_kind = attr_kind.fillna(attr.map(type_kind))
    fr, ft = forward
    is_attr_tail = ft >= n_items
    if is_attr_tail.any():
        rel_kind = pd.Series(rel_uniques[fr[is_attr_tail]]).map(RELATION_TAIL_KINDS)
        tails = pd.DataFrame(
            {
                "e": node_map[ft[is_attr_tail]] - n_items,
                "rel": rel_uniques[fr[is_attr_tail]],
                "kind": rel_kind.to_numpy(),
            }
        ).dropna(subset=["kind"])
        tails = tails.sort_values(["e", "rel"], kind="stable").drop_duplicates("e")
        inferred = pd.Series(tails["kind"].to_numpy(), index=tails["e"].to_numpy())
        attr_kind = attr_kind.fillna(pd.Series(np.arange(len(attr))).map(inferred))
    if len(attr):
        attr_kind = attr_kind.fillna(_prefix_kind(attr))

    entities = pd.DataFrame(
        {
            "entity_id": np.arange(n_items + len(attr), dtype=np.int64),
            "entity_key": np.concatenate([item_entity_key.to_numpy(object), attr.to_numpy(object)]),
            "name": np.concatenate([item_names.to_numpy(object), attr_names.to_numpy(object)]),
            "kind": np.concatenate(
                [np.full(n_items, "item", dtype=object), attr_kind.to_numpy(object)]
            ),
        }
    )
    entities["name"] = entities["name"].where(entities["name"].notna(), None)
    return entities


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
