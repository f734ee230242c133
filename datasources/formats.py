"""Parsers for the interaction/item/user files of the datasets we ingest, in their upstream formats.

Over 400 lines: one short parser per upstream format (MovieLens-1M and -100K, RecBole atomic
files, the KGAT release, generic TSV); they share the line-numbered error helpers here.

Every parser is a pure function ``parse(path, options) -> pandas.DataFrame`` returning string keys
and typed columns. The frames they return have one of three shapes:

* interactions: ``user_key, item_key, rating (float, NaN = none), ts (Int64), label (Int8)``
* items: ``item_key, title, year (Int64), genres (list[str] | None)`` + format-specific extras
* users: ``user_key`` + format-specific extras (gender, age, occupation, zip_code, ...)

Big files are parsed with pandas' C reader; when that reader or a type conversion finds a bad
line, the error names ``file:line`` (a :class:`MalformedInputError`). ``.gz`` files are read
transparently.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datasources.errors import MalformedInputError
from datasources.textio import decode, iter_lines, read_bytes, read_header, read_recbole_atomic

INTERACTION_COLUMNS = ("user_key", "item_key", "rating", "ts", "label")

# u.genre of ml-100k, in the order of u.item's 19 flag columns.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(?P<body>.*), (?P<article>The|A|An)$")


@dataclass(frozen=True)
class Parser:
    role: str  # "interactions" | "items" | "users"
    parse: Callable[[Path, Mapping[str, str]], pd.DataFrame]


# --------------------------------------------------------------------------- low-level helpers


def check_field_counts(raw: bytes, path: Path, sep: str, n_fields: int, skip_lines: int = 0) -> None:
    """Every line after ``skip_lines`` must have exactly ``n_fields`` fields.

    Counted on the raw bytes with NumPy (a separator count per line), because pandas' C reader
    silently pads short lines; this is what lets a bad line be named even in a 1M-line file.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    ends = newlines + 1
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    starts = np.r_[0, ends[:-1]].astype(np.int64)
    if len(starts) <= skip_lines:
        return
    # Each segment [start, end) includes its own newline, so no segment is empty (reduceat
    # would misread empty segments).
    counts = np.add.reduceat(data == ord(sep), starts, dtype=np.int64)[skip_lines:] + 1
    bad = counts != n_fields
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        line_no = index + skip_lines + 1
        start = starts[index + skip_lines]
        blank = raw[start:start + 1] in (b"\n", b"") or raw[start:start + 2] == b"\r\n"
        reason = "blank line" if blank else f"expected {n_fields} fields, found {int(counts[index])}"
        raise MalformedInputError(path, line_no, reason)


def read_delimited(
    path: Path,
    *,
    sep: str,
    n_fields: int,
    header: bool = False,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a delimited file as strings with exactly ``n_fields`` columns per line.

    Lines are never skipped or padded silently: a blank line or a line with the wrong number of
    fields raises :class:`MalformedInputError` naming ``file:line``. Returned columns are named
    ``0..n_fields-1`` (the header row, if any, is dropped).
    """
    raw = read_bytes(path)
    check_field_counts(raw, path, sep, n_fields, skip_lines=1 if header else 0)
    text = decode(raw, path, encoding)
    if not text.strip():
        return pd.DataFrame({i: pd.Series(dtype=str) for i in range(n_fields)})
    frame = pd.read_csv(
        io.StringIO(text),
        sep=sep,
        header=None,
        skiprows=1 if header else 0,
        names=list(range(n_fields)),
        dtype=str,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=False,
        engine="c",
    )
    return frame


def to_int(values: pd.Series, path: Path, first_line: int, what: str, nullable: bool = False) -> pd.Series:
    """Parse a string column as integers; a bad value names its ``file:line``."""
    stripped = values.str.strip()
    parsed = pd.to_numeric(stripped, errors="coerce")
    bad = parsed.isna() & (stripped != "" if nullable else True)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise MalformedInputError(path, row + first_line, f"{what} is not an integer: {values.iloc[row]!r}")
    if not nullable and (parsed != np.floor(parsed)).any():
        row = int(np.flatnonzero((parsed != np.floor(parsed)).to_numpy())[0])
        raise MalformedInputError(path, row + first_line, f"{what} is not an integer: {values.iloc[row]!r}")
    return parsed.astype("Int64")


def to_float(values: pd.Series, path: Path, first_line: int, what: str, nullable: bool = False) -> pd.Series:
    stripped = values.str.strip()
    parsed = pd.to_numeric(stripped, errors="coerce")
    bad = parsed.isna() & (stripped != "" if nullable else True)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise MalformedInputError(path, row + first_line, f"{what} is not a number: {values.iloc[row]!r}")
    return parsed.astype("float64")


def _interactions(user_key: pd.Series, item_key: pd.Series, rating=None, ts=None, label=None) -> pd.DataFrame:
    n = len(user_key)
    return pd.DataFrame(
        {
            "user_key": user_key.astype(str).to_numpy(),
            "item_key": item_key.astype(str).to_numpy(),
            "rating": rating.to_numpy() if rating is not None else np.full(n, np.nan),
            "ts": ts.to_numpy() if ts is not None else pd.array([pd.NA] * n, dtype="Int64"),
            "label": label.to_numpy() if label is not None else pd.array([pd.NA] * n, dtype="Int8"),
        }
    ).astype({"ts": "Int64", "label": "Int8"})


def split_title_year(raw: str) -> tuple[str, int | None]:
    """``"American President, The (1995)"`` -> ``("The American President", 1995)``."""
    raw = raw.strip()
    year = None
    match = _TITLE_YEAR.match(raw)
    if match:
        raw, year = match.group("title"), int(match.group("year"))
    article = _TRAILING_ARTICLE.match(raw)
    if article:
        raw = f"{article.group('article')} {article.group('body')}"
    return raw, year


def _items_frame(keys: list[str], raw_titles: list[str], genres: list[list[str] | None], **extra) -> pd.DataFrame:
    titles, years = zip(*(split_title_year(t) for t in raw_titles), strict=True) if keys else ((), ())
    frame = pd.DataFrame(
        {
            "item_key": keys,
            "title": list(titles),
            "year": pd.array(list(years), dtype="Int64"),
            "genres": genres,
            "original_title": raw_titles,
        }
    )
    for name, values in extra.items():
        frame[name] = values
    return frame


# --------------------------------------------------------------------------- MovieLens 1M (.dat)


def _split_double_colon(path: Path, n_fields: int) -> list[tuple[int, list[str]]]:
    rows = []
    for number, line in iter_lines(path, "latin-1"):
        parts = line.split("::")
        if len(parts) != n_fields:
            raise MalformedInputError(path, number, f"expected {n_fields} '::'-separated fields, found {len(parts)}")
        rows.append((number, parts))
    return rows


def parse_ml1m_ratings(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``UserID::MovieID::Rating::Timestamp`` (ML-1M ratings.dat, Latin-1)."""
    # ':' as a one-character separator keeps pandas on its C reader (a multi-character separator
    # falls back to the slow Python engine); the empty columns between the colons are checked.
    try:
        frame = read_delimited(path, sep=":", n_fields=7, encoding="latin-1")
    except MalformedInputError as exc:
        if exc.reason.startswith("expected"):
            raise MalformedInputError(exc.path, exc.line, "expected fields UserID::MovieID::Rating::Timestamp") from None
        raise
    stray = (frame[[1, 3, 5]] != "").to_numpy().any(axis=1)
    if stray.any():
        raise MalformedInputError(path, int(np.flatnonzero(stray)[0]) + 1, "expected 'a::b::c::d'")
    return _interactions(
        to_int(frame[0], path, 1, "UserID"),
        to_int(frame[2], path, 1, "MovieID"),
        rating=to_float(frame[4], path, 1, "Rating"),
        ts=to_int(frame[6], path, 1, "Timestamp"),
    )


def parse_ml1m_movies(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``MovieID::Title (Year)::Genre|Genre`` (ML-1M movies.dat, Latin-1)."""
    rows = _split_double_colon(path, 3)
    keys = []
    for number, parts in rows:
        if not parts[0].strip().isdigit():
            raise MalformedInputError(path, number, f"MovieID is not an integer: {parts[0]!r}")
        keys.append(parts[0].strip())
    return _items_frame(
        keys,
        [p[1] for _, p in rows],
        [p[2].split("|") if p[2] else None for _, p in rows],
    )


def parse_ml1m_users(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``UserID::Gender::Age::Occupation::Zip-code`` (ML-1M users.dat)."""
    rows = _split_double_colon(path, 5)
    for number, parts in rows:
        if not parts[0].strip().isdigit():
            raise MalformedInputError(path, number, f"UserID is not an integer: {parts[0]!r}")
    return pd.DataFrame(
        {
            "user_key": [p[0].strip() for _, p in rows],
            "gender": [p[1] for _, p in rows],
            "age": pd.array([int(p[2]) if p[2].isdigit() else None for _, p in rows], dtype="Int64"),
            "occupation": [p[3] for _, p in rows],
            "zip_code": [p[4] for _, p in rows],
        }
    )


# --------------------------------------------------------------------------- MovieLens 100K


def parse_ml100k_data(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``user item rating timestamp``, tab-separated (ml-100k u.data)."""
    frame = read_delimited(path, sep="\t", n_fields=4)
    return _interactions(
        to_int(frame[0], path, 1, "user id"),
        to_int(frame[1], path, 1, "item id"),
        rating=to_float(frame[2], path, 1, "rating"),
        ts=to_int(frame[3], path, 1, "timestamp"),
    )


def parse_ml100k_item(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``id|title|release date|video release date|IMDb URL|19 genre flags`` (u.item, Latin-1)."""
    frame = read_delimited(path, sep="|", n_fields=5 + len(ML100K_GENRES), encoding="latin-1")
    flags = frame.iloc[:, 5:]
    bad = ~flags.isin(["0", "1"]).to_numpy().all(axis=1)
    if bad.any():
        raise MalformedInputError(path, int(np.flatnonzero(bad)[0]) + 1, "genre flags must be 0 or 1")
    flag_matrix = flags.to_numpy() == "1"
    genres = [[g for g, on in zip(ML100K_GENRES, row, strict=True) if on] or None for row in flag_matrix]
    to_int(frame[0], path, 1, "movie id")
    return _items_frame(
        frame[0].str.strip().tolist(),
        frame[1].tolist(),
        genres,
        release_date=frame[2].replace("", None).tolist(),
        imdb_url=frame[4].replace("", None).tolist(),
    )


def parse_ml100k_user(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """``user id|age|gender|occupation|zip code`` (u.user)."""
    frame = read_delimited(path, sep="|", n_fields=5)
    return pd.DataFrame(
        {
            "user_key": to_int(frame[0], path, 1, "user id").astype(str).to_numpy(),
            "age": to_int(frame[1], path, 1, "age").to_numpy(),
            "gender": frame[2].to_numpy(),
            "occupation": frame[3].to_numpy(),
            "zip_code": frame[4].to_numpy(),
        }
    )


# --------------------------------------------------------------------------- RecBole atomic files


def _column(frame: pd.DataFrame, path: Path, *names: str, required: bool = True) -> str | None:
    for name in names:
        if name in frame.columns:
            return name
    if required:
        raise MalformedInputError(path, 1, f"missing column {names[0]!r} (have {list(frame.columns)})")
    return None


def parse_recbole_inter(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    frame = read_recbole_atomic(path)
    user, item = _column(frame, path, "user_id"), _column(frame, path, "item_id")
    rating = _column(frame, path, "rating", required=False)
    ts = _column(frame, path, "timestamp", required=False)
    label = _column(frame, path, "label", required=False)
    return _interactions(
        frame[user],
        frame[item],
        rating=to_float(frame[rating], path, 2, "rating", nullable=True) if rating else None,
        ts=to_float(frame[ts], path, 2, "timestamp", nullable=True).round().astype("Int64") if ts else None,
        label=to_int(frame[label], path, 2, "label", nullable=True).astype("Int8") if label else None,
    )


def parse_recbole_item(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    frame = read_recbole_atomic(path)
    key = _column(frame, path, "item_id")
    title_col = _column(frame, path, "movie_title", "title", required=False)
    year_col = _column(frame, path, "release_year", "year", required=False)
    genre_col = _column(frame, path, "class", "genre", "categories", required=False)
    titles = frame[title_col].tolist() if title_col else [""] * len(frame)
    genres = (
        [_split_token_seq(v) for v in frame[genre_col]] if genre_col else [None] * len(frame)
    )
    items = _items_frame(frame[key].tolist(), titles, genres)
    if year_col:
        # A year is side information, not a key: RecBole's ml-100k.item writes "unkonwn" for a
        # missing one, so unparseable years become null rather than failing the dataset.
        years = pd.to_numeric(frame[year_col].str.strip(), errors="coerce").astype("Int64")
        items["year"] = items["year"].fillna(years) if title_col else years
    items["title"] = items["title"].replace("", None)
    return items


def _split_token_seq(value: str) -> list[str] | None:
    # RecBole token_seq fields are space-separated; Amazon categories are quoted: "'Books' 'Fiction'".
    if not value:
        return None
    tokens = re.findall(r"'([^']*)'", value) if value.startswith("'") else value.split()
    return [t for t in tokens if t] or None


def parse_recbole_user(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    frame = read_recbole_atomic(path)
    key = _column(frame, path, "user_id")
    out = frame.rename(columns={key: "user_key"})
    if "age" in out.columns:
        out["age"] = to_int(out["age"], path, 2, "age", nullable=True)
    return out


# --------------------------------------------------------------------------- KGAT release


def parse_kgat_pairs(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """KGAT ``train.txt``/``test.txt``: one line per user, ``user item item ...`` (row indices).

    Keys are the integer indices as strings; the assembler maps them through the user/item lists.
    """
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    for number, line in iter_lines(path, "utf-8"):
        fields = line.split()
        if not fields:
            raise MalformedInputError(path, number, "blank line (expected 'user item item ...')")
        try:
            values = np.array(fields, dtype=np.int64)
        except ValueError:
            bad = next(f for f in fields if not f.lstrip("-").isdigit())
            raise MalformedInputError(path, number, f"not an integer: {bad!r}") from None
        if (values < 0).any():
            raise MalformedInputError(path, number, "negative index")
        items.append(values[1:])
        users.append(np.full(len(values) - 1, values[0], dtype=np.int64))
    user_idx = np.concatenate(users) if users else np.zeros(0, np.int64)
    item_idx = np.concatenate(items) if items else np.zeros(0, np.int64)
    return _interactions(pd.Series(user_idx.astype(str)), pd.Series(item_idx.astype(str)))


def _parse_kgat_list(path: Path, n_fields: int, key_name: str) -> pd.DataFrame:
    frame = read_delimited(path, sep=" ", n_fields=n_fields, header=True)
    index = to_int(frame[1], path, 2, "remap_id")
    out = pd.DataFrame({key_name: frame[0].to_numpy(), "source_index": index.to_numpy()})
    if n_fields == 3:
        out["freebase_mid"] = frame[2].where(frame[2] != "non", None).to_numpy()
    return out


def parse_kgat_item_list(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """KGAT ``item_list.txt``: ``org_id remap_id freebase_id`` (header row; 'non' = unlinked)."""
    frame = _parse_kgat_list(path, 3, "item_key")
    frame.insert(1, "title", None)
    frame.insert(2, "year", pd.array([pd.NA] * len(frame), dtype="Int64"))
    frame.insert(3, "genres", None)
    return frame


def parse_kgat_user_list(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """KGAT ``user_list.txt``: ``org_id remap_id`` (header row)."""
    return _parse_kgat_list(path, 2, "user_key")


# --------------------------------------------------------------------------- plain TSV


def parse_tsv(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """A delimited interactions file with a header row, for users' own data.

    Options (all optional): ``user_col`` (default ``user_id``), ``item_col`` (``item_id``),
    ``rating_col``, ``ts_col``, ``label_col``, ``delimiter`` (tab), ``null_item`` (an item key
    meaning "unknown item": such rows are dropped and counted by the assembler).
    """
    delimiter = options.get("delimiter", "\t")
    header = read_header(path).split(delimiter)
    frame = read_delimited(path, sep=delimiter, n_fields=len(header), header=True)
    frame.columns = header

    def column(option: str, default: str | None) -> str | None:
        name = options.get(option, default)
        if name is not None and name not in header:
            raise MalformedInputError(path, 1, f"column {name!r} ({option}) not in header {header}")
        return name

    user, item = column("user_col", "user_id"), column("item_col", "item_id")
    rating, ts, label = column("rating_col", None), column("ts_col", None), column("label_col", None)
    null_item = options.get("null_item")
    out = _interactions(
        frame[user].str.strip(),
        frame[item].str.strip(),
        rating=to_float(frame[rating].replace("NA", ""), path, 2, rating, nullable=True) if rating else None,
        ts=to_int(frame[ts].replace("NA", ""), path, 2, ts, nullable=True) if ts else None,
        label=to_int(frame[label].replace("NA", ""), path, 2, label, nullable=True).astype("Int8") if label else None,
    )
    if null_item is not None:
        out.loc[out["item_key"] == null_item, "item_key"] = None
    return out


PARSERS: Mapping[str, Parser] = {
    "ml1m.ratings": Parser("interactions", parse_ml1m_ratings),
    "ml1m.movies": Parser("items", parse_ml1m_movies),
    "ml1m.users": Parser("users", parse_ml1m_users),
    "ml100k.data": Parser("interactions", parse_ml100k_data),
    "ml100k.item": Parser("items", parse_ml100k_item),
    "ml100k.user": Parser("users", parse_ml100k_user),
    "recbole.inter": Parser("interactions", parse_recbole_inter),
    "recbole.item": Parser("items", parse_recbole_item),
    "recbole.user": Parser("users", parse_recbole_user),
    "kgat.pairs": Parser("interactions", parse_kgat_pairs),
    "kgat.item_list": Parser("items", parse_kgat_item_list),
    "kgat.user_list": Parser("users", parse_kgat_user_list),
    "tsv": Parser("interactions", parse_tsv),
}


def parse_table(fmt: str, role: str, path: str | Path, options: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Parse ``path`` with the parser registered as ``fmt``, checking it serves ``role``."""
    if fmt not in PARSERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(PARSERS))}")
    parser = PARSERS[fmt]
    if parser.role != role:
        raise ValueError(f"format {fmt!r} parses {parser.role}, not {role}")
    return parser.parse(Path(path), options or {})
