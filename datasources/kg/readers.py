"""Readers for the item-entity link files, KG triple files and Freebase name/type files.

Over 400 lines: one short reader per upstream file format (KB4Rec links, RecBole link/kg,
KGAT item lists and kg_final, MKR/RippleNet triples, Freebase names/types), each with its own quirks documented next to it.

Every reader is a pure function ``path -> pandas.DataFrame`` with string keys (object dtype
holding ``str``). Files ending in ``.gz`` are decompressed transparently; CRLF line ends (the
KB4Rec and MKR files have them) and blank lines are accepted.

Parsing is vectorised (pyarrow.csv for tab-separated files, pandas' C parser for the
whitespace-separated KGAT files). Those parsers do not report *which* line was wrong, so on any
parse or validation failure the file is scanned again line by line (only on that error path) and
a :class:`~datasources.errors.MalformedInputError` naming ``file:line`` is raised.

Key conventions shared by the whole ``datasources.kg`` package:

* Freebase entities keep their MID form ``m.0dyb1`` / ``g.11b...`` (full RDF URLs are reduced to
  it, see :func:`normalize_freebase_key`).
* Satori entities (MKR / RippleNet) become ``satori:<int>``; KGAT ids that cannot be mapped back
  to a Freebase key become ``kgat:<int>``.
* Metadata triples name their item heads ``item:<item_key>`` (see :data:`ITEM_PREFIX`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from datasources.errors import MalformedInputError
from datasources.textio import iter_lines as _iter_lines
from datasources.textio import open_text, read_recbole_atomic

__all__ = [
    "ITEM_PREFIX",
    "LINK_COLUMNS",
    "NAME_COLUMNS",
    "TRIPLE_COLUMNS",
    "Triples",
    "empty_names",
    "empty_triples",
    "normalize_freebase_key",
    "open_text",
    "read_freebase_names",
    "read_freebase_types",
    "read_item_index2entity_id",
    "read_kb4rec_links",
    "read_kgat_item_list",
    "read_kgat_kg_final",
    "read_kgat_remap_list",
    "read_mkr_kg",
    "read_recbole_atomic",
    "read_recbole_kg",
    "read_recbole_link",
]

#: Prefix of the key that names an item directly (``item:<item_key>``) in metadata triples.
ITEM_PREFIX = "item:"
LINK_COLUMNS = ["item_key", "entity_key"]
TRIPLE_COLUMNS = ["head_key", "relation_key", "tail_key"]
NAME_COLUMNS = ["entity_key", "name", "kind"]

_FREEBASE_NS = "http://rdf.freebase.com/ns/"
_INT_RE = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Triples:
    """Triples from one source plus readable names/kinds for the entities it introduces.

    ``triples`` has :data:`TRIPLE_COLUMNS`; ``names`` has :data:`NAME_COLUMNS` (``name`` may be
    None when only the kind is known). Returned by the metadata builders and the Wikidata client
    so that :func:`datasources.kg.build.build_kg` can take names and triples from one object.
    """

    triples: pd.DataFrame
    names: pd.DataFrame


def empty_triples() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in TRIPLE_COLUMNS})


def empty_names() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in NAME_COLUMNS})


# --------------------------------------------------------------------------------------------
# Low-level helpers
# --------------------------------------------------------------------------------------------


def _compression(path: Path) -> str | None:
    return "gzip" if path.suffix == ".gz" else None


def normalize_freebase_key(key: str) -> str:
    """Reduce a Freebase RDF URL (``http://rdf.freebase.com/ns/m.0abc``) to ``m.0abc``.

    Also strips N-Triples angle brackets; keys from other vocabularies (``http://www.w3.org/...``)
    are returned unchanged so that they stay distinguishable.
    """
    if key.startswith("<") and key.endswith(">"):
        key = key[1:-1]
    if key.startswith(_FREEBASE_NS):
        key = key[len(_FREEBASE_NS) :]
    return key


def _normalize_freebase_series(keys: pd.Series) -> pd.Series:
    keys = keys.str.replace(r"^<(.*)>$", r"\1", regex=True)
    return keys.str.removeprefix(_FREEBASE_NS)


ColumnKind = Literal["str", "int", "any"]


@dataclass(frozen=True)
class _Layout:
    """What one line of a delimited file must look like (used by the fast and the slow path)."""

    columns: tuple[str, ...]
    kinds: tuple[ColumnKind, ...]
    header: tuple[str, ...] | None = None  # expected field names (RecBole ``name:type`` ok)
    whitespace: bool = False  # split on runs of blanks (KGAT) instead of one tab

    def split(self, line: str) -> list[str]:
        return line.split() if self.whitespace else line.split("\t")

    @property
    def separator_name(self) -> str:
        return "whitespace-separated" if self.whitespace else "tab-separated"


def _header_matches(fields: Sequence[str], expected: Sequence[str]) -> bool:
    # RecBole headers carry a type suffix (``item_id:token``); compare names only.
    names = [f.split(":", 1)[0].strip() for f in fields]
    return names == list(expected)


def _check_header(path: Path, layout: _Layout) -> None:
    assert layout.header is not None
    for number, line in _iter_lines(path):
        if not line.strip():
            raise MalformedInputError(path, number, "empty first line, expected a header")
        if not _header_matches(layout.split(line), layout.header):
            raise MalformedInputError(
                path, number, f"unexpected header {line!r}, expected fields {list(layout.header)}"
            )
        return
    raise MalformedInputError(path, None, "empty file, expected a header")


def _scan_for_bad_line(path: Path, layout: _Layout) -> int:
    """Re-read ``path`` line by line and raise for the first line that violates ``layout``.

    Only called after the vectorised parser failed, so its speed does not matter. Returns the
    number of data lines when every line is fine (0 for a file without data, which the fast
    parsers refuse but which is a valid, empty table).
    """
    n = len(layout.columns)
    n_data = 0
    for number, line in _iter_lines(path):
        if layout.header is not None and number == 1:
            continue  # already validated by _check_header
        # The fast parsers skip empty lines (and, for whitespace-separated files, blank ones);
        # anything else must be a well-formed line.
        if line == "" or (layout.whitespace and not line.strip()):
            continue
        fields = layout.split(line)
        if len(fields) != n:
            raise MalformedInputError(
                path,
                number,
                f"expected {n} {layout.separator_name} fields {list(layout.columns)}, "
                f"got {len(fields)}: {line[:120]!r}",
            )
        for name, kind, value in zip(layout.columns, layout.kinds, fields, strict=True):
            if kind == "str" and not value.strip():
                raise MalformedInputError(path, number, f"empty {name}: {line[:120]!r}")
            if kind == "int" and not _INT_RE.fullmatch(value.strip()):
                raise MalformedInputError(
                    path, number, f"{name} is not an integer ({value!r}): {line[:120]!r}"
                )
        n_data += 1
    return n_data


def _read_delimited(path: str | Path, layout: _Layout) -> pd.DataFrame:
    """Vectorised read of a delimited file into string columns (int columns as int64).

    Strict about the number of fields on every line and about empty/non-integer values; any
    violation is reported with its line number by :func:`_scan_for_bad_line`.
    """
    path = Path(path)
    if layout.header is not None:
        _check_header(path, layout)
    skip = 1 if layout.header is not None else 0
    try:
        if layout.whitespace:
            df = pd.read_csv(
                path,
                sep=r"\s+",
                header=None,
                skiprows=skip,
                dtype=str,
                quoting=csv.QUOTE_NONE,
                na_filter=False,
                compression=_compression(path),
                engine="c",
            )
            if df.shape[1] != len(layout.columns):
                raise ValueError(f"{df.shape[1]} columns")
            df.columns = list(layout.columns)
        else:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=list(layout.columns), skip_rows=skip),
                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in layout.columns},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            df = table.to_pandas()
        for name, kind in zip(layout.columns, layout.kinds, strict=True):
            if kind == "any":
                continue
            col = df[name].str.strip()
            if (col == "").any():
                raise ValueError(f"empty {name}")
            df[name] = col.astype(np.int64) if kind == "int" else col
    except (ValueError, pa.ArrowInvalid, pd.errors.ParserError, UnicodeDecodeError) as exc:
        if _scan_for_bad_line(path, layout) > 0:
            raise MalformedInputError(path, None, f"could not parse: {exc}") from exc
        df = pd.DataFrame(
            {
                c: pd.Series(dtype=np.int64 if k == "int" else object)
                for c, k in zip(layout.columns, layout.kinds, strict=True)
            }
        )
    return df


def _str_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Select ``columns`` with object-dtype ``str`` values, fresh index."""
    out = df.loc[:, list(columns)].reset_index(drop=True)
    for c in columns:
        out[c] = out[c].astype(str).astype(object)
    return out


# --------------------------------------------------------------------------------------------
# Item -> entity links
# --------------------------------------------------------------------------------------------


def read_kb4rec_links(path: str | Path) -> pd.DataFrame:
    """KB4Rec ``ml2fb.txt`` / ``ab2fb.txt``: ``item_key<TAB>mid`` without header.

    Returns DataFrame[item_key, entity_key] in file order, exact duplicate rows removed.
    """
    df = _read_delimited(path, _Layout(("item_key", "entity_key"), ("str", "str")))
    return _str_columns(df.drop_duplicates(), LINK_COLUMNS)


def read_recbole_link(path: str | Path) -> pd.DataFrame:
    """RecBole ``.link`` file (header ``item_id:token<TAB>entity_id:token``)."""
    layout = _Layout(("item_key", "entity_key"), ("str", "str"), header=("item_id", "entity_id"))
    df = _read_delimited(path, layout)
    return _str_columns(df.drop_duplicates(), LINK_COLUMNS)


def read_kgat_item_list(path: str | Path) -> pd.DataFrame:
    """KGAT ``item_list.txt`` (header ``org_id remap_id freebase_id``, space-separated).

    Rows whose Freebase id is ``non`` (DERK's marker for an unlinked item) are not links and are
    left out. Returns DataFrame[item_key, entity_key]; the remap ids are validated but not
    returned (use :func:`read_kgat_remap_list` on the same file when they are needed).
    """
    layout = _Layout(
        ("item_key", "remap_id", "entity_key"),
        ("str", "int", "str"),
        header=("org_id", "remap_id", "freebase_id"),
        whitespace=True,
    )
    df = _read_delimited(path, layout)
    df = df[df["entity_key"] != "non"]
    df = df.assign(entity_key=_normalize_freebase_series(df["entity_key"]))
    return _str_columns(df.drop_duplicates(LINK_COLUMNS), LINK_COLUMNS)


def read_item_index2entity_id(path: str | Path) -> pd.DataFrame:
    """MKR / RippleNet ``item_index2entity_id*.txt``: ``movie_id<TAB>satori_entity_int``.

    The Satori ids are only meaningful together with the same repository's ``kg.txt``, so they
    are namespaced as ``satori:<int>`` (matching :func:`read_mkr_kg`).
    """
    df = _read_delimited(path, _Layout(("item_key", "satori"), ("str", "int")))
    df = df.assign(entity_key="satori:" + df["satori"].astype(str))
    return _str_columns(df.drop_duplicates(LINK_COLUMNS), LINK_COLUMNS)


def read_kgat_remap_list(path: str | Path) -> pd.DataFrame:
    """KGAT ``entity_list.txt`` / ``relation_list.txt`` / ``user_list.txt``: ``org_id remap_id``.

    The remap id is the *last* space-separated token: amazon-book's entity list contains
    Freebase literals with spaces and quotes (``\"\"\"Power Play\"\"@en\" 59314``), so the line
    is split at its last blank. An empty ``org_id`` (one such line exists upstream) is kept as
    ``""``; callers decide how to name it. Returns DataFrame[org_id (str), remap_id (int64)].
    """
    path = Path(path)
    with open_text(path) as fh:
        lines = fh.read().split("\n")
    if not lines or lines[0].split() != ["org_id", "remap_id"]:
        raise MalformedInputError(
            path, 1, f"unexpected header {lines[0] if lines else ''!r}, expected 'org_id remap_id'"
        )
    s = pd.Series(lines[1:], dtype=object)
    s = s.str.rstrip()
    keep = s != ""
    parts = s.str.rpartition(" ")
    # A line without a blank has its whole text in column 2; treat "org_id" as empty then.
    org, rid = parts[0], parts[2]
    bad = keep & ~rid.str.fullmatch(r"\d+")
    if bad.any():
        idx = int(np.flatnonzero(bad.to_numpy())[0])
        raise MalformedInputError(
            path, idx + 2, f"remap_id is not an integer: {lines[idx + 1][:120]!r}"
        )
    out = pd.DataFrame({"org_id": org[keep].astype(object), "remap_id": rid[keep].astype(np.int64)})
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Triples
# --------------------------------------------------------------------------------------------


def _remap_lookup(
    path: str | Path | None, prefix: str, *, name: str
) -> Callable[[pd.Series], pd.Series]:
    """Build ``ints -> keys`` from a KGAT remap list (or the ``prefix<int>`` fallback)."""
    if path is None:
        return lambda ints: prefix + ints.astype(str)
    df = read_kgat_remap_list(path)
    if df["remap_id"].duplicated().any():
        dup = int(df.loc[df["remap_id"].duplicated(), "remap_id"].iloc[0])
        raise MalformedInputError(path, None, f"{name} remap_id {dup} appears twice")
    keys = _normalize_freebase_series(df["org_id"].str.strip())
    # An empty or whitespace-only org id cannot be a key: fall back to the KGAT integer.
    keys = keys.where(keys != "", prefix + df["remap_id"].astype(str))
    table = pd.Series(keys.to_numpy(), index=df["remap_id"].to_numpy())
    return lambda ints: pd.Series(table.reindex(ints.to_numpy()).to_numpy(), index=ints.index)


def read_kgat_kg_final(
    path: str | Path,
    entity_list_path: str | Path | None = None,
    relation_list_path: str | Path | None = None,
) -> pd.DataFrame:
    """KGAT ``kg_final.txt``: space-separated integer ``h r t`` lines, no header.

    With ``entity_list.txt`` / ``relation_list.txt`` the integers are mapped back to their
    original keys (Freebase URLs reduced to MIDs / relation names); without them the keys are
    ``kgat:<int>`` and ``kgat:r<int>``. An id missing from a given list is a malformed line.
    """
    path = Path(path)
    layout = _Layout(("h", "r", "t"), ("int", "int", "int"), whitespace=True)
    df = _read_delimited(path, layout)
    ent = _remap_lookup(entity_list_path, "kgat:", name="entity")
    rel = _remap_lookup(relation_list_path, "kgat:r", name="relation")
    out = pd.DataFrame(
        {"head_key": ent(df["h"]), "relation_key": rel(df["r"]), "tail_key": ent(df["t"])}
    )
    missing = out.isna().any(axis=1).to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        number = _physical_line_of_row(path, row, header_lines=0)
        raise MalformedInputError(
            path, number, f"id not in the entity/relation list: {df.iloc[row].tolist()}"
        )
    return _str_columns(out, TRIPLE_COLUMNS)


def _physical_line_of_row(path: Path, row: int, header_lines: int) -> int | None:
    """Line number of the ``row``-th data row (0-based), counting skipped blank lines."""
    seen = -1
    for number, line in _iter_lines(path):
        if number <= header_lines or not line.strip():
            continue
        seen += 1
        if seen == row:
            return number
    return None


def read_recbole_kg(path: str | Path) -> pd.DataFrame:
    """RecBole ``.kg`` (header ``head_id:token<TAB>relation_id:token<TAB>tail_id:token``)."""
    layout = _Layout(
        tuple(TRIPLE_COLUMNS), ("str", "str", "str"), header=("head_id", "relation_id", "tail_id")
    )
    df = _read_delimited(path, layout)
    return _str_columns(df, TRIPLE_COLUMNS)


def read_mkr_kg(path: str | Path) -> pd.DataFrame:
    """MKR ``kg.txt``: ``head_int<TAB>relation_name<TAB>tail_int`` → ``satori:<int>`` keys."""
    df = _read_delimited(path, _Layout(("h", "relation_key", "t"), ("int", "str", "int")))
    out = pd.DataFrame(
        {
            "head_key": "satori:" + df["h"].astype(str),
            "relation_key": df["relation_key"],
            "tail_key": "satori:" + df["t"].astype(str),
        }
    )
    return _str_columns(out, TRIPLE_COLUMNS)


# --------------------------------------------------------------------------------------------
# Names and types
# --------------------------------------------------------------------------------------------

# Letters of the Latin script plus the punctuation/symbol blocks names commonly use. A name made
# only of these characters counts as "Latin"; anything with CJK, Cyrillic, Greek, Arabic, ...
# does not. This is a cheap script check, not language detection.
_LATIN_NAME_RE = r"[\x00-\u024F\u1E00-\u1EFF\u2000-\u206F\u20A0-\u20CF\u2100-\u214F]*"


def read_freebase_names(path: str | Path) -> pd.DataFrame:
    """``e_names_fb.tsv``: ``mid<TAB>name`` → DataFrame[entity_key, name], one row per MID.

    The upstream dump is multilingual (a third of the ML-1M names are Chinese/Japanese). When a
    MID has several names the first *Latin-script* one wins (readable for English text
    encoders), else the first one: rows are stable-sorted by "is not Latin" and de-duplicated,
    which keeps file order within each group. In the staged file every MID has exactly one name,
    so non-Latin names stay (better than none).
    """
    df = _read_delimited(path, _Layout(("entity_key", "name"), ("str", "str")))
    df["name"] = df["name"].str.replace(r"\s+", " ", regex=True)
    not_latin = ~df["name"].str.fullmatch(_LATIN_NAME_RE)
    df = df.assign(_not_latin=not_latin.to_numpy())
    df = df.sort_values("_not_latin", kind="stable").drop_duplicates("entity_key")
    df = df.sort_index()
    return _str_columns(df, ["entity_key", "name"])


def read_freebase_types(path: str | Path) -> pd.DataFrame:
    """``e_types_fb.tsv``: ``mid<TAB>type`` → DataFrame[entity_key, type] (duplicates dropped).

    The types are the role under which the MID entered the KB4Rec subgraph (``actor``,
    ``directed_by``, ``films_in_this_genre``, ...); :func:`datasources.kg.build.build_kg` maps
    them to entity kinds.
    """
    df = _read_delimited(path, _Layout(("entity_key", "type"), ("str", "str")))
    return _str_columns(df.drop_duplicates(), ["entity_key", "type"])


# --------------------------------------------------------------------------------------------
# RecBole atomic files with CSV quoting (.item)
# --------------------------------------------------------------------------------------------


