"""Composable KG sources: what to read for each dataset's knowledge graph, and how.

A :class:`KGSource` names a *kind* (which reader), the file locations it needs (URLs, ``file://``
or local paths, ``<zip>!/<member>`` for archive members — resolved by the same download layer as
the ingest stage) and a label used in the Table-1 statistics. :data:`DEFAULT_KG_SOURCES` lists the
real upstream files for each dataset partition (its dataset file's ``kg.sources``); a run config can replace the list (that is how
``configs/offline.yaml`` points at ``../shared/data``).

Kinds:

==============================  ==============================================================
``links.kb4rec``                KB4Rec ``ml2fb.txt`` / ``ab2fb.txt`` (item key TAB Freebase MID)
``links.recbole``               RecBole ``.link`` (item_id, entity_id)
``links.kgat_item_list``        KGAT ``item_list.txt`` (org_id remap_id freebase_id)
``links.item_index2entity_id``  MKR/RippleNet ``item_index2entity_id.txt`` (→ ``satori:<id>``)
``triples.kgat``                KGAT ``kg_final.txt`` [+ ``entity_list.txt``, ``relation_list.txt``]
``triples.recbole``             RecBole ``.kg`` (MID relation MID)
``triples.mkr``                 MKR/RippleNet ``kg.txt`` (Satori ids)
``meta.movielens``              genre and year triples from the ``items`` table (no file)
``meta.omdb``                   OMDb records (JSON lines): director, writer, actors, genre, ...
``meta.amazon_categories``      RecBole Amazon-Books ``.item`` categories
``names.freebase``              Freebase names (``mid TAB name``)
``types.freebase``              Freebase types/roles (``mid TAB type``)
``triples.table``               your own triples: named head/relation/tail columns, each
                                declared an item key or an entity key (``datasources.kg.generic``)
``links.table``                 your own item → entity links (named columns)
``names.table``                 your own entity names and kinds (named columns)
==============================  ==============================================================

Only the ``*.table`` kinds take ``options`` (:data:`KIND_OPTIONS`); a misspelled option is an
error with a suggestion, never ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from datasources.kg import attributes, generic, readers
from datasources.kg.readers import Triples

RECBOLE_EXAMPLE = "https://raw.githubusercontent.com/RUCAIBox/RecBole/master/recbole/dataset_example/ml-100k"
KB4REC = "https://raw.githubusercontent.com/RUCDM/KB4Rec/master/Linkage"
MKR_MOVIE = "https://raw.githubusercontent.com/hwwang55/MKR/master/data/movie"
REXREX9_FBKG = (
    "https://raw.githubusercontent.com/rexrex9/kb4recMovielensDataProcess/master/data_set/ml-1m/easy-fbkg"
)


@dataclass(frozen=True)
class KGSource:
    name: str
    kind: str
    locations: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass
class KGInputs:
    """Loaded sources, in the shape :func:`datasources.kg.build.build_kg` takes."""

    links: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    triple_sources: list[tuple[str, Triples]] = field(default_factory=list)
    names: list[pd.DataFrame] = field(default_factory=list)
    types: list[pd.DataFrame] = field(default_factory=list)

    def merged_names(self) -> pd.DataFrame | None:
        return pd.concat(self.names, ignore_index=True) if self.names else None

    def merged_types(self) -> pd.DataFrame | None:
        return pd.concat(self.types, ignore_index=True) if self.types else None

    def linked_mids(self) -> list[str]:
        """Freebase MIDs any link source gives (what a Wikidata lookup starts from)."""
        keys = pd.concat([df["entity_key"] for _, df in self.links], ignore_index=True) if self.links else pd.Series([], dtype=str)
        return sorted(k for k in keys.unique() if isinstance(k, str) and k[:2] in ("m.", "g."))


def _one(source: KGSource, paths: Sequence[Path]) -> Path:
    if len(paths) != 1:
        raise ValueError(f"KG source {source.name!r} ({source.kind}) needs exactly one location, got {len(paths)}")
    return paths[0]


def _triples_only(frame: pd.DataFrame) -> Triples:
    return Triples(frame, readers.empty_names())


# kind -> (group, loader(source, paths, items))
_LOADERS: dict[str, tuple[str, Callable[[KGSource, Sequence[Path], pd.DataFrame], object]]] = {
    "links.kb4rec": ("links", lambda s, p, _: readers.read_kb4rec_links(_one(s, p))),
    "links.recbole": ("links", lambda s, p, _: readers.read_recbole_link(_one(s, p))),
    "links.kgat_item_list": ("links", lambda s, p, _: readers.read_kgat_item_list(_one(s, p))),
    "links.item_index2entity_id": ("links", lambda s, p, _: readers.read_item_index2entity_id(_one(s, p))),
    "triples.kgat": ("triples", lambda s, p, _: _triples_only(readers.read_kgat_kg_final(*p))),
    "triples.recbole": ("triples", lambda s, p, _: _triples_only(readers.read_recbole_kg(_one(s, p)))),
    "triples.mkr": ("triples", lambda s, p, _: _triples_only(readers.read_mkr_kg(_one(s, p)))),
    "meta.movielens": ("triples", lambda s, p, items: attributes.movielens_metadata_triples(items)),
    "meta.omdb": ("triples", lambda s, p, _: attributes.omdb_triples(attributes.read_omdb_metadata(_one(s, p)))),
    "meta.amazon_categories": ("triples", lambda s, p, _: attributes.amazon_category_triples(_one(s, p))),
    "names.freebase": ("names", lambda s, p, _: readers.read_freebase_names(_one(s, p))),
    "types.freebase": ("types", lambda s, p, _: readers.read_freebase_types(_one(s, p))),
    "triples.table": ("triples", lambda s, p, items: generic.read_triples_table(_one(s, p), s.options, items)),
    "links.table": ("links", lambda s, p, _: generic.read_links_table(_one(s, p), s.options)),
    "names.table": ("names", lambda s, p, _: generic.read_names_table(_one(s, p), s.options)),
}
KG_SOURCE_KINDS = tuple(_LOADERS)
#: The options each kind accepts (the upstream kinds know their format and take none).
KIND_OPTIONS: Mapping[str, frozenset[str]] = {kind: generic.KIND_OPTIONS.get(kind, frozenset())
                                              for kind in KG_SOURCE_KINDS}


def source_problem(kind: str, options: Mapping[str, str]) -> tuple[str, str] | None:
    """``(field, message)`` when ``kind`` is unknown or an option is not one it takes."""
    if kind not in _LOADERS:
        return "kind", f"unknown KG source kind {kind!r}{_did_you_mean(kind, KG_SOURCE_KINDS)}; known: {', '.join(KG_SOURCE_KINDS)}"
    for key in options:
        if key not in KIND_OPTIONS[kind]:
            allowed = sorted(KIND_OPTIONS[kind])
            return (f"options.{key}", f"{kind} takes no option {key!r}{_did_you_mean(key, allowed)}"
                    f"; it takes: {', '.join(allowed) or 'none'}")
    return None


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_kg_sources(
    sources: Sequence[KGSource], resolve: Callable[[str], Path], items: pd.DataFrame
) -> KGInputs:
    """Resolve every source's locations to local files and read them."""
    inputs = KGInputs()
    for source in sources:
        problem = source_problem(source.kind, source.options)
        if problem is not None:
            raise ValueError(f"KG source {source.name!r}: {problem[0]}: {problem[1]}")
        group, loader = _LOADERS[source.kind]
        paths = [resolve(location) for location in source.locations]
        loaded = loader(source, paths, items)
        if group == "links":
            inputs.links.append((source.name, loaded))
        elif group == "triples":
            inputs.triple_sources.append((source.name, loaded))
        elif group == "names":
            inputs.names.append(loaded)
        else:
            inputs.types.append(loaded)
    return inputs


def _declared_sources() -> dict[str, tuple[KGSource, ...]]:
    """Each dataset file's ``kg.sources``, with their kinds checked here (where they are known)."""
    from datasources.dataset_files import DatasetFileError
    from datasources.registry import DECLARATIONS

    out = {}
    for name, declaration in DECLARATIONS.items():
        for i, source in enumerate(declaration.kg_sources):
            problem = source_problem(source.kind, source.options)
            if problem is not None:
                raise DatasetFileError(declaration.path, f"kg.sources[{i}].{problem[0]}", problem[1])
        out[name] = tuple(KGSource(s.name, s.kind, s.locations, dict(s.options))
                          for s in declaration.kg_sources)
    return out


#: The real upstream files each dataset merges by default (its file's ``kg.sources``).
DEFAULT_KG_SOURCES: Mapping[str, tuple[KGSource, ...]] = _declared_sources()
