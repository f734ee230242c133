"""KG files in a user's own layout: links, triples and names as named columns of a table file.

The upstream kinds (``triples.kgat``, ``links.kb4rec`` ...) each know one published format and
its key conventions. These three know none: the dataset file says which column is which and
what each key *is*, so a user never has to learn the internal key forms.

``namespace`` options say what a key in a column names:

* ``entity`` — an entity of the KG (a director, a genre, a Freebase MID ...), kept as written;
* ``item`` — an item, by the ``item_key`` of the dataset's items table;
* ``item_or_entity`` — an item when the key is an item key, an entity otherwise (RippleNet-style
  files whose first entity ids are the items).

Options of each kind (every one optional; the column defaults are shown; ``file_format`` /
``delimiter`` choose how the file is read, see :mod:`datasources.columns`):

==================  =========================================================================
``triples.table``   ``head_col: head``, ``relation_col: relation``, ``tail_col: tail``,
                    ``head_namespace: entity``, ``tail_namespace: entity``
``links.table``     ``item_col: item``, ``entity_col: entity`` (an item → entity link each row)
``names.table``     ``entity_col: entity``, ``name_col: name``, ``kind_col`` (a type such as
                    ``person``; optional)
==================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from datasources.columns import READER_OPTIONS, column, read_columns, require_values
from datasources.errors import MalformedInputError
from datasources.kg.readers import ITEM_PREFIX, LINK_COLUMNS, NAME_COLUMNS, TRIPLE_COLUMNS, Triples

NAMESPACES = ("entity", "item", "item_or_entity")

#: Option keys each generic kind accepts (checked before anything is read).
KIND_OPTIONS: Mapping[str, frozenset[str]] = {
    "triples.table": READER_OPTIONS | {"head_col", "relation_col", "tail_col", "head_namespace",
                                       "tail_namespace"},
    "links.table": READER_OPTIONS | {"item_col", "entity_col"},
    "names.table": READER_OPTIONS | {"entity_col", "name_col", "kind_col"},
}


def _namespace(options: Mapping[str, str], option: str, path: Path) -> str:
    value = options.get(option, "entity")
    if value not in NAMESPACES:
        raise ValueError(f"{path}: {option} {value!r} is not one of {', '.join(NAMESPACES)}")
    return value


def _keys(frame: pd.DataFrame, name: str, namespace: str, item_keys: set[str], path: Path) -> pd.Series:
    """The column's keys in the KG builder's key space (items as ``item:<item_key>``)."""
    keys = frame[name].astype(str)
    if namespace == "entity":
        clash = keys.str.startswith(ITEM_PREFIX)
        if clash.any():
            line = int(frame.loc[clash.idxmax(), "line"])
            raise MalformedInputError(path, line, f"entity key {keys[clash.idxmax()]!r} starts with "
                                      f"{ITEM_PREFIX!r}, which names items; declare the column's "
                                      "namespace as 'item' or rename the entity")
        return keys
    if namespace == "item":
        return ITEM_PREFIX + keys
    is_item = keys.isin(item_keys)
    return keys.where(~is_item, ITEM_PREFIX + keys)


def read_triples_table(path: Path, options: Mapping[str, str], items: pd.DataFrame) -> Triples:
    frame = read_columns(path, options)
    head = column(frame, path, "head_col", options.get("head_col", "head"))
    relation = column(frame, path, "relation_col", options.get("relation_col", "relation"))
    tail = column(frame, path, "tail_col", options.get("tail_col", "tail"))
    require_values(frame, path, [head, relation, tail])
    item_keys = set(items["item_key"].astype(str))
    triples = pd.DataFrame({
        TRIPLE_COLUMNS[0]: _keys(frame, head, _namespace(options, "head_namespace", path), item_keys, path),
        TRIPLE_COLUMNS[1]: frame[relation].astype(str),
        TRIPLE_COLUMNS[2]: _keys(frame, tail, _namespace(options, "tail_namespace", path), item_keys, path),
    })
    return Triples(triples.reset_index(drop=True), pd.DataFrame(columns=NAME_COLUMNS))


def read_links_table(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    frame = read_columns(path, options)
    item = column(frame, path, "item_col", options.get("item_col", "item"))
    entity = column(frame, path, "entity_col", options.get("entity_col", "entity"))
    require_values(frame, path, [item, entity])
    return pd.DataFrame({LINK_COLUMNS[0]: frame[item].astype(str),
                         LINK_COLUMNS[1]: frame[entity].astype(str)}).reset_index(drop=True)


def read_names_table(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    frame = read_columns(path, options)
    entity = column(frame, path, "entity_col", options.get("entity_col", "entity"))
    name = column(frame, path, "name_col", options.get("name_col", "name"))
    kind = column(frame, path, "kind_col", options.get("kind_col"))
    require_values(frame, path, [entity])
    return pd.DataFrame({
        "entity_key": frame[entity].astype(str),
        "name": frame[name],
        "kind": frame[kind] if kind else None,
    }).reset_index(drop=True)
