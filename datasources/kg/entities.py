"""The ``entities`` table: every entity's key, name and kind (items first).

Names and kinds come from whichever sources have them, in a fixed priority (see
:func:`datasources.kg.build.build_kg`), because no single source covers every entity: the
Satori KG has no names at all, Freebase names miss many MIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasources.kg.ids import KeptGraph
from datasources.kg.inputs import as_keys, require_columns
from datasources.kg.readers import ITEM_PREFIX

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


@dataclass(frozen=True)
class KnownLabels:
    """``entity_key -> name`` and ``entity_key -> kind`` from the names frames, first wins."""

    name_of: pd.Series
    kind_of: pd.Series


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


def known_labels(name_frames: list[pd.DataFrame], names: pd.DataFrame | None) -> KnownLabels:
    """Names and kinds from the triple sources' names (in source order), then global ``names``.

    A source's own names come first: they describe its keys as that source means them.
    """
    frames = [*name_frames]
    if names is not None:
        require_columns(names, ["entity_key", "name"], "names")
        frames.append(names)
    return KnownLabels(_first_non_null(frames, "name"), _first_non_null(frames, "kind"))


def item_keys_and_names(
    items: pd.DataFrame, item_links: pd.DataFrame, name_of: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """Each item's entity key and name.

    Key: its first linked key (link-source order), else ``item:<item_key>``. Name: its title,
    else the name of that key, since a dataset without titles still has linked names.
    """
    first_link = item_links.drop_duplicates("item_id")
    item_entity_key = pd.Series(ITEM_PREFIX + as_keys(items["item_key"]), dtype=object)
    item_entity_key.iloc[first_link["item_id"].to_numpy()] = first_link["entity_key"].to_numpy()
    if "title" in items.columns:
        titles = items["title"].astype(object).where(items["title"].notna(), None)
    else:
        titles = pd.Series([None] * len(items), dtype=object)
    fallback = item_entity_key.map(name_of)
    item_names = titles.where(titles.notna(), fallback)
    item_names = item_names.astype(object).where(item_names.notna(), None)
    return item_entity_key, item_names


def _kinds_by_type(types: pd.DataFrame) -> pd.Series:
    """``entity_key -> kind`` from Freebase roles (first type of a key wins)."""
    require_columns(types, ["entity_key", "type"], "types")
    t = types.drop_duplicates("entity_key")
    return pd.Series(
        t["type"].map(lambda x: FREEBASE_TYPE_KINDS.get(x, x)).to_numpy(dtype=object),
        index=t["entity_key"].astype(str).to_numpy(),
    )


def _kinds_by_relation(kept: KeptGraph) -> pd.Series:
    """Attribute position (entity id - n_items) -> kind its incoming relations imply.

    Of several such relations the smallest key decides, so the kind does not depend on row
    order.
    """
    is_attr_tail = kept.tail_id >= kept.n_items
    tail_relations = kept.relation_keys[kept.relation_id[is_attr_tail]]
    rel_kind = pd.Series(tail_relations).map(RELATION_TAIL_KINDS)
    tails = pd.DataFrame(
        {
            "e": kept.tail_id[is_attr_tail] - kept.n_items,
            "rel": tail_relations,
            "kind": rel_kind.to_numpy(),
        }
    ).dropna(subset=["kind"])
    tails = tails.sort_values(["e", "rel"], kind="stable").drop_duplicates("e")
    return pd.Series(tails["kind"].to_numpy(), index=tails["e"].to_numpy())


def _prefix_kind(keys: pd.Series) -> pd.Series:
    """Kind from the key itself: known prefixes, else the text before ``:``, else ``entity``.

    One pass of plain string methods per key (the known prefixes exclude one another): the
    masked assignments of a Series per prefix cost ~10 µs a key at 10⁵ keys."""
    def kind_of(key: str) -> str:
        for prefix, name in _PREFIX_KINDS:
            if key.startswith(prefix):
                return name
        head, colon, _ = key.partition(":")
        return head if colon else "entity"

    return pd.Series([kind_of(k) for k in keys], index=keys.index, dtype=object)


def attribute_kinds(
    attr: pd.Series, kind_of: pd.Series, types: pd.DataFrame | None, kept: KeptGraph
) -> pd.Series:
    """Kind of each attribute entity: names frames, then ``types``, then relations, then prefix.

    Each later source only fills what the earlier ones left empty, so the more specific
    sources win and every entity ends up with some kind.
    """
    kinds = attr.map(kind_of)
    if types is not None:
        kinds = kinds.fillna(attr.map(_kinds_by_type(types)))
    if (kept.tail_id >= kept.n_items).any():
        kinds = kinds.fillna(pd.Series(np.arange(len(attr))).map(_kinds_by_relation(kept)))
    missing = kinds.isna().to_numpy()
    if missing.any():
        kinds = kinds.fillna(_prefix_kind(attr[missing]))
    return kinds


def entities_table(
    items: pd.DataFrame,
    item_links: pd.DataFrame,
    kept: KeptGraph,
    name_frames: list[pd.DataFrame],
    names: pd.DataFrame | None,
    types: pd.DataFrame | None,
) -> pd.DataFrame:
    """DataFrame[entity_id, entity_key, name, kind]: the items (kind ``item``), then the kept
    attribute entities in id order; a missing name is ``None``."""
    n_items = len(items)
    labels = known_labels(name_frames, names)
    item_entity_key, item_names = item_keys_and_names(items, item_links, labels.name_of)
    attr = pd.Series(kept.attribute_keys, dtype=object)
    attr_names = attr.map(labels.name_of)
    attr_kind = attribute_kinds(attr, labels.kind_of, types, kept)
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
