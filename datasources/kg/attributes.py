"""Attribute triples built from item side information (MovieLens, OMDb, Amazon categories).

These complement (or, for ML-1M whose Freebase triples are not available, replace) the
Freebase/Satori KGs: every attribute value becomes an entity with a readable name, so the text
modality has something to encode for attribute entities too.

Every ``*_triples`` function returns a :class:`~datasources.kg.readers.Triples` with

* ``triples``: DataFrame[head_key, relation_key, tail_key]; heads are ``item:<item_key>`` so that
  :func:`datasources.kg.build.build_kg` maps them onto items without needing a link file;
* ``names``: DataFrame[entity_key, name, kind], one row per tail entity.

Tail keys are namespaced by what they denote, not by where they came from (``genre:Comedy``,
``person:Joss Whedon``), so equal values from different sources (MovieLens and OMDb genres,
a person who both directs and writes) are one entity.
"""

from __future__ import annotations

import ast
import html
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from datasources.errors import MalformedInputError
from datasources.kg.readers import (
    ITEM_PREFIX,
    NAME_COLUMNS,
    TRIPLE_COLUMNS,
    Triples,
    _physical_line_of_row,
    read_recbole_atomic,
)
from datasources.textio import iter_json_records

__all__ = [
    "OMDB_FIELDS",
    "PERSON_FIELDS",
    "amazon_category_triples",
    "movielens_metadata_triples",
    "omdb_triples",
    "read_omdb_metadata",
    "read_recbole_item_titles",
]

#: OMDb JSON field -> the ``field`` value used in :func:`read_omdb_metadata`'s output.
OMDB_FIELDS: dict[str, str] = {
    "Director": "director",
    "Writer": "writer",
    "Actors": "actor",
    "Genre": "genre",
    "Language": "language",
    "Country": "country",
    "Production": "production",
    "Rated": "rated",
}
#: Fields whose values are people; they share one ``person:<name>`` entity per name.
PERSON_FIELDS: tuple[str, ...] = ("director", "writer", "actor")  # also the kind priority
_SINGLE_VALUED = {"rated"}  # "Not Rated" etc. contain no list separator

# A comma that is not inside parentheses: OMDb writes "X (story \"Louis 19, le roi\")".
_LIST_SPLIT = r",(?![^()]*\))"


def _frame(triples: pd.DataFrame, names: pd.DataFrame) -> Triples:
    t = triples.loc[:, TRIPLE_COLUMNS].drop_duplicates().reset_index(drop=True)
    n = names.loc[:, NAME_COLUMNS].drop_duplicates("entity_key").reset_index(drop=True)
    return Triples(t.astype(object), n.astype(object))


def _clean_values(values: pd.Series) -> pd.Series:
    """Unescape HTML entities, collapse whitespace and strip; ``""`` and ``"N/A"`` become NA.

    OMDb has a few HTML-escaped names (``Children&#39;s Television Workshop``); unescaping only
    the values that contain ``&`` keeps this cheap.
    """
    index = values.index  # may have duplicates (after explode): work positionally
    values = values.reset_index(drop=True)
    values = values.where(values.notna(), "").astype(str)
    escaped = values.str.contains("&", regex=False)
    if escaped.any():
        values[escaped] = values[escaped].map(html.unescape)
    values = values.str.replace(r"\s+", " ", regex=True).str.strip()
    values = values.where(~values.isin(["", "N/A"]))
    return values.set_axis(index)


# --------------------------------------------------------------------------------------------
# MovieLens genres / year
# --------------------------------------------------------------------------------------------


def movielens_metadata_triples(items: pd.DataFrame) -> Triples:
    """Genre and release-year triples from the ingested ``items`` table.

    Relations ``movie.genre`` (tail ``genre:<Genre>``, kind ``genre``) and ``movie.year`` (tail
    ``year:<YYYY>``, kind ``year``). Items without genres/year (or an ``items`` table without
    those columns) simply get no triple;
    ``(no genres listed)`` (MovieLens >= 20M) is not a genre.
    """
    heads = ITEM_PREFIX + items["item_key"].astype(str)
    none = pd.Series([None] * len(items), dtype=object, index=items.index)
    genre_col = items["genres"] if "genres" in items.columns else none
    year_col = items["year"] if "year" in items.columns else none
    genres = pd.DataFrame({"head_key": heads.to_numpy(), "value": genre_col.to_numpy()})
    genres = genres.explode("value")
    genres["value"] = _clean_values(genres["value"])
    genres = genres[genres["value"].notna() & (genres["value"] != "(no genres listed)")]
    g = pd.DataFrame(
        {
            "head_key": genres["head_key"],
            "relation_key": "movie.genre",
            "tail_key": "genre:" + genres["value"],
        }
    )
    g_names = pd.DataFrame({"entity_key": g["tail_key"], "name": genres["value"], "kind": "genre"})

    year = pd.to_numeric(year_col, errors="coerce")
    has_year = year.notna().to_numpy()
    year_str = year[has_year].astype("int64").astype(str).to_numpy()
    y = pd.DataFrame(
        {
            "head_key": heads.to_numpy()[has_year],
            "relation_key": "movie.year",
            "tail_key": "year:" + pd.Series(year_str, dtype=object),
        }
    )
    y_names = pd.DataFrame({"entity_key": y["tail_key"], "name": year_str, "kind": "year"})
    return _frame(pd.concat([g, y], ignore_index=True), pd.concat([g_names, y_names]))


# --------------------------------------------------------------------------------------------
# OMDb
# --------------------------------------------------------------------------------------------


def read_omdb_metadata(path: str | Path) -> pd.DataFrame:
    """OMDb JSON lines (``{"imdb_id", "ml_title", "movie_id", "omdb": {...}}``) → long table.

    Returns DataFrame[item_key (str movie_id), field, value] for the fields in
    :data:`OMDB_FIELDS` (``field`` is the lower-case role: director, writer, actor, genre,
    language, country, production, rated). Multi-valued fields are split on commas outside
    parentheses; for people the parenthetical role is dropped (``Joss Whedon (screenplay)`` →
    ``Joss Whedon``, also ``Tigay(co-director)``) because the role is already the relation;
    for other fields the parenthesis is part of the name (``Egyptian (Ancient)``) and kept.
    Whitespace is collapsed, ``N/A`` dropped, and repeated (item, field, value) rows — the same
    writer credited for story and screenplay — are kept once, in file order.
    Records with ``"Response": "False"`` (OMDb found nothing) contribute nothing.
    """
    path = Path(path)
    item_keys: list[str] = []
    fields: list[str] = []
    raw: list[str] = []
    for number, record in iter_json_records(path, "movie_id"):
        omdb = record.get("omdb")
        if not isinstance(omdb, dict):
            raise MalformedInputError(path, number, "record without an 'omdb' object")
        if str(omdb.get("Response", "True")) == "False":
            continue
        key = str(record["movie_id"])
        for json_field, field in OMDB_FIELDS.items():
            value = omdb.get(json_field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise MalformedInputError(
                    path, number, f"OMDb field {json_field} is not a string: {value!r}"
                )
            item_keys.append(key)
            fields.append(field)
            raw.append(value)
    df = pd.DataFrame({"item_key": item_keys, "field": fields, "value": raw}, dtype=object)
    multi = ~df["field"].isin(_SINGLE_VALUED)
    df["value"] = df["value"].where(~multi, df["value"].str.split(_LIST_SPLIT, regex=True))
    df = df.explode("value")
    people = df["field"].isin(PERSON_FIELDS)
    stripped = df["value"].str.replace(r"\s*\([^)]*(\)|$)", "", regex=True)
    df["value"] = _clean_values(df["value"].where(~people, stripped))
    df = df[df["value"].notna()].drop_duplicates(["item_key", "field", "value"])
    return df.reset_index(drop=True).astype(object)


def omdb_triples(df: pd.DataFrame) -> Triples:
    """Triples from :func:`read_omdb_metadata`'s table.

    Relation ``omdb.<field>``; tail ``person:<name>`` for director/writer/actor (one entity
    per person across roles) and ``<field>:<value>`` otherwise (``genre:Comedy``,
    ``language:English``, ``country:USA``, ``production:Pixar Animation Studios``,
    ``rated:PG``). A person's kind is their most specific role anywhere in the table, in the
    order director > writer > actor, so each entity has one kind.
    """
    people = df["field"].isin(PERSON_FIELDS).to_numpy()
    prefix = df["field"].where(~people, "person") + ":"
    triples = pd.DataFrame(
        {
            "head_key": ITEM_PREFIX + df["item_key"].astype(str),
            "relation_key": "omdb." + df["field"],
            "tail_key": prefix + df["value"],
        }
    )
    rank = df["field"].map({f: i for i, f in enumerate(PERSON_FIELDS)}).fillna(len(PERSON_FIELDS))
    names = pd.DataFrame(
        {"entity_key": triples["tail_key"], "name": df["value"], "kind": df["field"], "_r": rank}
    )
    names = names.sort_values("_r", kind="stable").drop_duplicates("entity_key")
    return _frame(triples, names.sort_index())


# --------------------------------------------------------------------------------------------
# Amazon-Books (RecBole .item)
# --------------------------------------------------------------------------------------------


def _parse_categories(path: Path, cats: pd.Series) -> pd.Series:
    """Decode ``'Books', "Children's Books"`` token sequences into lists of strings.

    The RecBole export writes each category as a Python string literal; ``ast.literal_eval``
    decodes exactly that and nothing executable. Only the distinct strings (a few hundred)
    are parsed.
    """
    parsed: dict[str, list[str]] = {}
    for row, text in zip(range(len(cats)), cats.to_numpy(), strict=True):
        if text in parsed:
            continue
        stripped = text.strip()
        if not stripped:
            parsed[text] = []
            continue
        try:
            value = ast.literal_eval(f"[{stripped}]")
        except (ValueError, SyntaxError) as exc:
            line = _physical_line_of_row(path, row, header_lines=1)
            raise MalformedInputError(path, line, f"bad categories {text[:80]!r}") from exc
        if not all(isinstance(v, str) for v in value):
            line = _physical_line_of_row(path, row, header_lines=1)
            raise MalformedInputError(path, line, f"categories are not strings: {text[:80]!r}")
        parsed[text] = value
    return cats.map(parsed)


def amazon_category_triples(
    path: str | Path, *, drop_categories: Collection[str] = ("Books",)
) -> Triples:
    """``book.category`` triples from a RecBole ``Amazon-Books.item`` file.

    ``drop_categories`` defaults to the root ``Books``: every row carries it (23,175 of 23,348
    rows carry nothing else), so as an entity it would be one hub adjacent to every item, which
    adds no signal and makes all items two hops apart. Tail ``category:<name>``, kind
    ``category``.
    """
    path = Path(path)
    df = read_recbole_atomic(path)
    for col in ("item_id", "categories"):
        if col not in df.columns:
            raise MalformedInputError(path, 1, f"no {col!r} column in header")
    lists = _parse_categories(path, df["categories"])
    long = pd.DataFrame({"item_key": df["item_id"].str.strip(), "value": lists}).explode("value")
    long["value"] = _clean_values(long["value"])
    long = long[long["value"].notna() & ~long["value"].isin(list(drop_categories))]
    long = long[long["item_key"] != ""]
    triples = pd.DataFrame(
        {
            "head_key": ITEM_PREFIX + long["item_key"],
            "relation_key": "book.category",
            "tail_key": "category:" + long["value"],
        }
    )
    names = pd.DataFrame(
        {"entity_key": triples["tail_key"], "name": long["value"], "kind": "category"}
    )
    return _frame(triples, names)


def read_recbole_item_titles(path: str | Path) -> pd.DataFrame:
    """DataFrame[item_key, title] from a RecBole ``.item`` file (rows with a title only).

    Titles have their whitespace collapsed; items with an empty title are left out (ingest
    left-joins, so they keep ``title = None``).
    """
    path = Path(path)
    df = read_recbole_atomic(path)
    title_col = next((c for c in ("title", "movie_title") if c in df.columns), None)
    if "item_id" not in df.columns or title_col is None:
        raise MalformedInputError(path, 1, "header has no item_id/title columns")
    out = pd.DataFrame(
        {"item_key": df["item_id"].str.strip(), "title": _clean_values(df[title_col])}
    )
    out = out[out["title"].notna() & (out["item_key"] != "")]
    return out.drop_duplicates("item_key").reset_index(drop=True).astype(object)
