"""Parsers for the interaction/item/user files of the datasets we ingest, in their upstream formats.

Over 400 lines: one short parser per upstream format (MovieLens-1M and -100K, RecBole atomic
files, the KGAT release), then the generic interaction formats for a user's own data (``tsv``,
``csv``, ``jsonl``, ``parquet``, ``npy``), which share one column mapping (``user_col``,
``item_col``, ``rating_col``, ``ts_col``, ``label_col``, ``threshold``, ``null_item``). They share
the line-numbered error helpers here. :data:`FORMAT_OPTIONS` lists the option keys each format
takes; :func:`check_options` rejects any other key with a did-you-mean.

Every parser is a pure function ``parse(path, options) -> pandas.DataFrame`` returning string keys
and typed columns. The frames they return have one of three shapes:

* interactions: ``user_key, item_key, rating (float, NaN = none), ts (Int64), label (Int8)``
* items: ``item_key, title, year (Int64), genres (list[str] | None)`` + format-specific extras
* users: ``user_key`` + format-specific extras (gender, age, occupation, zip_code, ...)

Big files are parsed with pandas' C reader; when that reader or a type conversion finds a bad
line, the error names ``file:line`` (a :class:`MalformedInputError`); Parquet and NumPy files
have no lines, so their errors name ``row N`` (counting from 0). ``.gz`` text files are read
transparently.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasources.errors import MalformedInputError
from datasources.textio import (
    decode,
    iter_json_objects,
    iter_lines,
    read_bytes,
    read_header,
    read_recbole_atomic,
)

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
    options: frozenset[str] = frozenset()  # the option keys it reads (check_options)


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


# --------------------------------------------------------------------------- your own data
#
# The generic interaction formats (tsv, csv, parquet, jsonl, npy) are for a user's own files. Each
# reader only turns its file into a _Table of raw values; _map_interactions then applies the one
# column mapping they all share (user_col, item_col, rating_col, ts_col, label_col, threshold,
# null_item), so a column means the same thing whatever file it came from.

_DEFAULT_COLUMNS: Mapping[str, str | None] = {
    "user_col": "user_id", "item_col": "item_id", "rating_col": None, "ts_col": None, "label_col": None,
}
#: The options every generic interactions format takes.
MAPPING_OPTIONS = frozenset({*_DEFAULT_COLUMNS, "threshold", "null_item"})
_MISSING_TEXT = ("", "NA")  # how a delimited file writes "no value" ("NA": R and pandas exports)


@dataclass(frozen=True)
class _Table:
    """A user's file before the column mapping: its raw values and where each row came from."""

    path: Path
    columns: list[str]  # every column the file has, for the "no such column" message
    frame: pd.DataFrame  # the raw values of (at least) the mapped columns
    header_line: int | None  # where the column names are (1 for a header row; None: no header)
    lines: np.ndarray | None  # the line of each row; None for binary files, reported as "row N"

    def error(self, row: int | None, reason: str) -> MalformedInputError:
        """The error for ``row`` (a position in ``frame``), or for the columns when ``row`` is None."""
        if row is None:
            return MalformedInputError(self.path, self.header_line, reason)
        if self.lines is None:
            return MalformedInputError(self.path, None, f"row {row} (counting from 0): {reason}")
        return MalformedInputError(self.path, int(self.lines[row]), reason)


def _mapped_columns(options: Mapping[str, str]) -> dict[str, str]:
    """option -> column name, for the columns the options map (user and item always)."""
    names = {option: options.get(option, default) for option, default in _DEFAULT_COLUMNS.items()}
    # str(): a NumPy matrix's columns are named "0", "1", ... and a caller may pass the int.
    return {option: str(name) for option, name in names.items() if name is not None}


def _wanted(options: Mapping[str, str]) -> list[str]:
    return list(dict.fromkeys(_mapped_columns(options).values()))


def _first(mask: pd.Series | np.ndarray) -> int | None:
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None


def _shown(value) -> str:
    """A value for an error message: a NumPy scalar as the value it holds (4.5, not np.float64(4.5))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _key_text(value) -> str | None:
    """One user/item key as text; None if the value cannot be a key (missing, 1.5, a list...).

    An integral float is written without ``.0``: a NumPy matrix stores ids as floats, and item
    ``7`` must be the same key whether it came from a TSV, a JSON int or a float matrix.
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bytes):  # NumPy "S" fields
        try:
            return value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return None


def _keys(table: _Table, values: pd.Series, what: str, null_item: str | None = None) -> pd.Series:
    if values.dtype.kind in "iu" and not values.hasnans:  # (a pandas Int64 column may hold NA)
        return values.astype(str)
    if pd.api.types.infer_dtype(values) == "string":
        keys = values.str.strip().reset_index(drop=True)  # text (TSV, CSV): vectorised
    else:
        keys = pd.Series([_key_text(v) for v in values], dtype=object)
    bad = (keys.isna() | (keys == "")) & (keys != null_item)
    row = _first(bad)
    if row is not None:
        raise table.error(row, f"{what} is not a key: {_shown(values.iloc[row])}")
    return keys


def _number(value) -> float | None:
    """One rating/ts/label value as a float, NaN for no value; None if it is not a number."""
    if value is None or value is pd.NA:
        return np.nan
    if isinstance(value, str):
        text = value.strip()
        if text in _MISSING_TEXT:
            return np.nan
        try:
            return float(text)
        except ValueError:
            return None
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        return float(value)
    return None


def _numbers(table: _Table, values: pd.Series, what: str) -> pd.Series:
    """A column as float64, NaN where it has no value; a value that is not a number is an error."""
    if values.dtype.kind in "biuf":
        parsed, invalid = values.astype("float64"), np.zeros(len(values), dtype=bool)
    elif pd.api.types.infer_dtype(values) in ("string", "empty"):
        # Text (TSV, CSV) is parsed vectorised: these files can have millions of lines.
        text = values.str.strip()
        missing = (text.isna() | text.isin(_MISSING_TEXT)).to_numpy()
        parsed = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
        invalid = parsed.isna().to_numpy() & ~missing
    else:  # mixed Python values (JSON): one at a time
        numbers = [_number(v) for v in values]
        invalid = np.array([n is None for n in numbers], dtype=bool)
        parsed = pd.Series([np.nan if n is None else n for n in numbers], dtype="float64")
    row = _first(invalid | (parsed.notna() & ~np.isfinite(parsed)).to_numpy())
    if row is not None:
        raise table.error(row, f"{what} is not a number: {_shown(values.iloc[row])}")
    return parsed.reset_index(drop=True)


def _integers(table: _Table, values: pd.Series, what: str) -> pd.Series:
    """A column as Int64 (NA where it has no value); a fractional value is an error."""
    if values.dtype.kind in "iu":
        return values.astype("Int64").reset_index(drop=True)  # not via float64: ns timestamps are > 2**53
    if pd.api.types.is_datetime64_any_dtype(values):
        # A Parquet/pandas timestamp becomes Unix seconds, the unit of the upstream formats;
        # a time without a zone is read as UTC.
        utc = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        return ((utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("Int64").reset_index(drop=True)
    parsed = _numbers(table, values, what)
    row = _first(parsed.notna() & (parsed != np.floor(parsed)))
    if row is not None:
        raise table.error(row, f"{what} is not an integer: {_shown(values.iloc[row])}")
    return parsed.astype("Int64")


def _labels(table: _Table, values: pd.Series, what: str) -> pd.Series:
    labels = _integers(table, values, what)
    row = _first(labels.notna() & ~labels.isin([0, 1]))
    if row is not None:
        raise table.error(row, f"{what} must be 0 or 1, not {_shown(values.iloc[row])}")
    return labels.astype("Int8")


def _map_interactions(table: _Table, options: Mapping[str, str]) -> pd.DataFrame:
    """The interactions frame of a generic table, its columns named by the options."""
    names = _mapped_columns(options)
    for option, name in names.items():
        if table.columns.count(name) != 1:
            problem = "appears twice in" if name in table.columns else "not in"
            raise table.error(None, f"column {name!r} ({option}) {problem} the columns {table.columns}")

    def column(option: str) -> pd.Series:
        values = table.frame[names[option]]
        # Parquet dictionary columns arrive as categoricals; their values are what counts.
        return values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values

    def what(option: str) -> str:
        return f"{option.removesuffix('_col')} ({names[option]!r})"

    null_item = None if options.get("null_item") is None else str(options["null_item"])
    rating = _numbers(table, column("rating_col"), what("rating_col")) if "rating_col" in names else None
    if "threshold" in options:
        # A rating at or above the threshold is a positive; an unrated row stays unlabelled.
        label = (rating >= float(options["threshold"])).astype("Int8").mask(rating.isna())
    else:
        label = _labels(table, column("label_col"), what("label_col")) if "label_col" in names else None
    out = _interactions(
        _keys(table, column("user_col"), what("user_col")),
        _keys(table, column("item_col"), what("item_col"), null_item),
        rating=rating,
        ts=_integers(table, column("ts_col"), what("ts_col")) if "ts_col" in names else None,
        label=label,
    )
    if null_item is not None:
        out.loc[out["item_key"] == null_item, "item_key"] = None
    return out


def _read_tsv(path: Path, options: Mapping[str, str]) -> _Table:
    # QUOTE_NONE through read_delimited: a TSV field may hold a '"' (titles), so quotes are text.
    delimiter = options.get("delimiter", "\t")
    header = read_header(path).split(delimiter)
    frame = read_delimited(path, sep=delimiter, n_fields=len(header), header=True)
    frame.columns = header
    return _Table(path, header, frame, 1, np.arange(2, len(frame) + 2))


def _read_csv(path: Path, options: Mapping[str, str]) -> _Table:
    # The csv module, not pandas: it honours RFC 4180 quoting ("Smith, J.", doubled quotes,
    # newlines inside quotes) and tells the line each record starts on, and no short line is padded.
    text = decode(read_bytes(path), path, "utf-8")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=options.get("delimiter", ","), strict=True)
    records, lines = [], []
    try:
        header = [name.strip() for name in next(reader, [])]
        start = reader.line_num + 1
        for record in reader:
            if len(record) != len(header):
                reason = "blank line" if not record else f"expected {len(header)} fields, found {len(record)}"
                raise MalformedInputError(path, start, reason)
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MalformedInputError(path, reader.line_num, f"bad CSV quoting: {exc}") from None
    frame = pd.DataFrame(records, columns=range(len(header)), dtype=object).set_axis(header, axis=1)
    return _Table(path, header, frame, 1, np.array(lines, dtype=np.int64))


def _read_jsonl(path: Path, options: Mapping[str, str]) -> _Table:
    wanted = _wanted(options)
    seen: dict[str, None] = {}  # every key any record has, in first-seen order
    records, lines = [], []
    for number, record in iter_json_objects(path, blank_lines="error"):
        seen.update(dict.fromkeys(record))
        records.append([record.get(name) for name in wanted])  # a key a record lacks: no value
        lines.append(number)
    frame = pd.DataFrame(records, columns=range(len(wanted)), dtype=object).set_axis(wanted, axis=1)
    return _Table(path, list(seen), frame, None, np.array(lines, dtype=np.int64))


def _read_parquet(path: Path, options: Mapping[str, str]) -> _Table:
    try:
        parquet = pq.ParquetFile(path)
        columns = parquet.schema_arrow.names
        frame = parquet.read(columns=[c for c in _wanted(options) if c in columns]).to_pandas()
    except pa.ArrowException as exc:
        raise MalformedInputError(path, None, f"not a readable Parquet file: {exc}") from None
    return _Table(path, columns, frame, None, None)


def _read_numpy(path: Path, options: Mapping[str, str]) -> _Table:
    try:
        # allow_pickle=False: loading a pickle runs code; object arrays are not supported.
        arrays = _numpy_columns(path, np.load(path, allow_pickle=False))
    except MalformedInputError:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise MalformedInputError(path, None, f"not a readable NumPy .npy/.npz file: {exc}") from None
    mapped = {name: arrays[name] for name in _wanted(options) if name in arrays}
    for name, array in mapped.items():
        if array.ndim != 1:
            raise MalformedInputError(path, None, f"array {name!r} has shape {array.shape}, expected 1-D")
    lengths = {name: len(array) for name, array in mapped.items()}
    if len(set(lengths.values())) > 1:
        raise MalformedInputError(path, None, f"the mapped arrays differ in length: {lengths}")
    return _Table(path, list(arrays), pd.DataFrame(mapped), None, None)


def _numpy_columns(path: Path, loaded) -> dict[str, np.ndarray]:
    """The named columns of an .npz (its arrays), a structured .npy (its fields) or a 2-D .npy
    (its columns, named by index "0", "1", ...)."""
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:  # an .npz holds its file open until closed
            return {name: loaded[name] for name in loaded.files}
    if loaded.dtype.names:
        return {name: loaded[name] for name in loaded.dtype.names}
    if loaded.ndim == 2:
        return {str(i): loaded[:, i] for i in range(loaded.shape[1])}
    raise MalformedInputError(path, None, f"array of shape {loaded.shape} without named fields: save a "
                              "structured array, a 2-D array (columns by index) or an .npz of named arrays")


def parse_tsv(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """A delimited interactions file with a header row, for users' own data; quotes are plain text.

    Options (all optional): ``user_col`` (default ``user_id``), ``item_col`` (``item_id``),
    ``rating_col``, ``ts_col``, ``label_col``, ``threshold`` (label = rating >= threshold; needs
    ``rating_col``), ``delimiter`` (tab), ``null_item`` (an item key meaning "unknown item": such
    rows get a null item and are dropped and counted by the assembler). ``""`` and ``NA`` mean
    "no value" in the rating, ts and label columns.
    """
    return _map_interactions(_read_tsv(path, options), options)


def parse_csv(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """A comma-separated interactions file with a header row, quoted as RFC 4180 says.

    Options: those of ``tsv`` (``delimiter`` defaults to ``,``). Header names are stripped of
    surrounding spaces; a record may span lines inside quotes (errors name its first line).
    """
    return _map_interactions(_read_csv(path, options), options)


def parse_jsonl(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """JSON lines: one object per line, its keys the columns (a key a record lacks: no value).

    Options: ``user_col``, ``item_col``, ``rating_col``, ``ts_col``, ``label_col``, ``threshold``,
    ``null_item`` as for ``tsv``. Keys may be JSON strings or integers; labels may be booleans.
    """
    return _map_interactions(_read_jsonl(path, options), options)


def parse_parquet(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """A Parquet file (only the mapped columns are read); errors name the row, counting from 0.

    Options: as ``jsonl``. A timestamp-typed ``ts_col`` becomes Unix seconds (no zone: UTC).
    """
    return _map_interactions(_read_parquet(path, options), options)


def parse_npy(path: Path, options: Mapping[str, str]) -> pd.DataFrame:
    """NumPy: a structured ``.npy`` (fields are columns), a 2-D ``.npy`` (columns by index: give
    ``user_col: "0"``, ``item_col: "1"``, ...) or an ``.npz`` of equal-length 1-D arrays (array
    names are columns). Errors name the row, counting from 0. Pickled/object arrays are refused.

    Options: as ``jsonl``.
    """
    return _map_interactions(_read_numpy(path, options), options)


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
    "tsv": Parser("interactions", parse_tsv, MAPPING_OPTIONS | {"delimiter"}),
    "csv": Parser("interactions", parse_csv, MAPPING_OPTIONS | {"delimiter"}),
    "jsonl": Parser("interactions", parse_jsonl, MAPPING_OPTIONS),
    "parquet": Parser("interactions", parse_parquet, MAPPING_OPTIONS),
    "npy": Parser("interactions", parse_npy, MAPPING_OPTIONS),
}

#: format name -> the option keys it accepts (the upstream formats take none).
FORMAT_OPTIONS: Mapping[str, frozenset[str]] = MappingProxyType({name: p.options for name, p in PARSERS.items()})


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_options(fmt: str, options: Mapping, where: str) -> None:
    """Raise ``ValueError`` (starting with ``where``) unless ``options`` suit format ``fmt``.

    Checked before any file is read, so a typo (``ratng_col``) fails at once, by name, instead of
    being ignored and quietly leaving the ratings out.
    """
    if fmt not in PARSERS:
        raise ValueError(f"{where}: unknown format {fmt!r}{_did_you_mean(fmt, PARSERS)}")
    accepted = FORMAT_OPTIONS[fmt]
    for key in options:
        if key not in accepted:
            takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes no options"
            raise ValueError(f"{where}: format {fmt!r} has no option {key!r}{_did_you_mean(key, accepted)} ({takes})")
    delimiter = str(options.get("delimiter", ","))
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValueError(f"{where}: delimiter must be one character other than a quote or newline, "
                         f"not {options['delimiter']!r}")
    if "threshold" in options:
        _check_threshold(options, where)


def _check_threshold(options: Mapping, where: str) -> None:
    try:
        threshold = float(options["threshold"])
    except (TypeError, ValueError):
        threshold = np.nan
    if not np.isfinite(threshold):
        raise ValueError(f"{where}: threshold {options['threshold']!r} is not a number")
    if "rating_col" not in options:
        raise ValueError(f"{where}: threshold labels each row by its rating: give rating_col too")
    if "label_col" in options:
        raise ValueError(f"{where}: give threshold (labels from the rating) or label_col, not both")


def parse_table(fmt: str, role: str, path: str | Path, options: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Parse ``path`` with the parser registered as ``fmt``, checking it serves ``role`` and
    takes ``options``."""
    if fmt not in PARSERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(PARSERS))}")
    parser = PARSERS[fmt]
    if parser.role != role:
        raise ValueError(f"format {fmt!r} parses {parser.role}, not {role}")
    options = options or {}
    check_options(fmt, options, f"options for {path}")
    return parser.parse(Path(path), options)
