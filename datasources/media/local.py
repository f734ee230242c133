"""Local metadata files and the per-item references the sources work from.

The ML-1M side files staged with the project already hold most of what the media stage needs:
OMDb records (plot + poster URL) for every movie, a poster URL list, and MovieLens ``links``
(movieId → IMDb / TMDB ids, which the APIs are keyed by). This module reads them into plain
dicts and joins them to the lake's ``items`` table, producing one :class:`ItemRef` per item.

ML-100K uses its own movie ids, so its items cannot be joined to these files by id; they can be
by title and year (``match_by="title_year"``), which matches ~96% of ML-100K's 1,682 movies to
the ML-1M files (titles are normalised; ambiguous title-years are dropped, never guessed).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datasources.errors import MalformedInputError
from datasources.formats import split_title_year
from datasources.kg.readers import open_text
from datasources.media.types import ItemRef
from datasources.textio import iter_json_records

__all__ = [
    "LocalMetadata",
    "OmdbRecord",
    "build_item_refs",
    "clean_text",
    "imdb_id_from_url",
    "is_isbn10",
    "normalize_imdb_id",
    "read_links",
    "read_omdb_records",
    "read_poster_list",
    "title_year_key",
]

_MISSING = {"", "n/a", "na", "none", "null", "nan"}


def clean_text(value: Any, max_chars: int = 10_000) -> str | None:
    """Whitespace-collapsed text, or ``None`` for OMDb's ``"N/A"`` and other empty markers."""
    if value is None or not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if text.lower() in _MISSING:
        return None
    return text[:max_chars]


def normalize_imdb_id(value: Any) -> str | None:
    """``"0114709"``, ``114709``, ``"tt0114709"`` → ``"tt0114709"``; anything else → ``None``."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip().lower().removeprefix("tt")
    if text.endswith(".0"):  # read through a float column
        text = text[:-2]
    if not text.isdigit() or int(text) == 0:
        return None
    return f"tt{int(text):07d}"


_IMDB_IN_URL = re.compile(r"\btt(\d{7,8})\b")


def imdb_id_from_url(url: Any) -> str | None:
    """The ``tt…`` id in an IMDb URL; ``None`` for ML-100K's title-search URLs, which have none."""
    if not isinstance(url, str):
        return None
    match = _IMDB_IN_URL.search(url)
    return f"tt{match.group(1)}" if match else None


def is_isbn10(value: Any) -> bool:
    """True for a checksum-valid ISBN-10 (Amazon gives books that as their ASIN)."""
    if not isinstance(value, str) or len(value) != 10:
        return False
    head, check = value[:9], value[9].upper()
    if not head.isdigit() or not (check.isdigit() or check == "X"):
        return False
    total = sum((10 - i) * int(d) for i, d in enumerate(head))
    total += 10 if check == "X" else int(check)
    return total % 11 == 0


def title_year_key(title: Any, year: Any) -> str | None:
    """A normalised ``"title|year"`` for matching catalogues that spell titles slightly apart."""
    if not isinstance(title, str) or not title.strip():
        return None
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().casefold()
    folded = re.sub(r"[^a-z0-9]+", " ", folded.replace("&", " and ")).strip()
    if not folded:
        return None
    year_text = str(int(year)) if year is not None and not pd.isna(year) else ""
    return f"{folded}|{year_text}"


@dataclass(frozen=True)
class OmdbRecord:
    imdb_id: str | None
    title: str | None  # MovieLens title with year, "Toy Story (1995)"
    plot: str | None
    poster: str | None


def read_omdb_records(path: str | Path) -> dict[str, OmdbRecord]:
    """OMDb JSON lines (``{"imdb_id", "ml_title", "movie_id", "omdb": {"Plot", "Poster", …}}``).

    Returns ``{movie_id (str): OmdbRecord}``; ``"N/A"`` values become ``None`` and records with
    ``"Response": "False"`` keep their ids but no text. A malformed line raises
    :class:`~datasources.errors.MalformedInputError` naming it: a silently half-read file would
    look like low coverage instead of a broken input.
    """
    path = Path(path)
    records: dict[str, OmdbRecord] = {}
    for _, record in iter_json_records(path, "movie_id"):
        omdb = record.get("omdb") if isinstance(record.get("omdb"), dict) else {}
        found = str(omdb.get("Response", "True")) != "False"
        records[str(record["movie_id"]).strip()] = OmdbRecord(
            imdb_id=normalize_imdb_id(record.get("imdb_id") or omdb.get("imdbID")),
            title=clean_text(record.get("ml_title")),
            plot=clean_text(omdb.get("Plot")) if found else None,
            poster=_http_url(omdb.get("Poster")) if found else None,
        )
    return records


def _http_url(value: Any) -> str | None:
    text = clean_text(value)
    return text if text and text.lower().startswith(("http://", "https://")) else None


def read_poster_list(path: str | Path) -> dict[str, str]:
    """``movie_id,url`` lines (no header; a header row is tolerated). URLs may contain commas."""
    path = Path(path)
    posters: dict[str, str] = {}
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            key, sep, url = line.partition(",")
            key, url = key.strip(), url.strip()
            if not sep:
                raise MalformedInputError(path, number, "expected 'movie_id,url'")
            if not key.isdigit():
                if number == 1:
                    continue  # a header row
                raise MalformedInputError(path, number, f"movie id is not an integer: {key!r}")
            checked = _http_url(url)
            if checked:
                posters[key] = checked
    return posters


@dataclass(frozen=True)
class LinkRow:
    imdb_id: str | None
    tmdb_id: str | None
    title: str | None = None


def read_links(path: str | Path) -> dict[str, LinkRow]:
    """MovieLens ``links.csv`` (``movieId,imdbId,tmdbId``) or the ``movie_id,title,imdbId,tmdbId``
    variant; columns are found by name. Returns ``{movie_id: LinkRow}``."""
    path = Path(path)
    links: dict[str, LinkRow] = {}
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        names = {n.lower(): n for n in (reader.fieldnames or [])}
        movie = names.get("movieid") or names.get("movie_id")
        imdb, tmdb, title = names.get("imdbid"), names.get("tmdbid"), names.get("title")
        if movie is None or (imdb is None and tmdb is None):
            raise MalformedInputError(
                path, 1, "expected columns movieId (or movie_id), imdbId, tmdbId"
            )
        for number, row in enumerate(reader, start=2):
            key = (row.get(movie) or "").strip()
            if not key.isdigit():
                raise MalformedInputError(path, number, f"movie id is not an integer: {key!r}")
            tmdb_value = (row.get(tmdb) or "").strip().removesuffix(".0") if tmdb else ""
            links[key] = LinkRow(
                imdb_id=normalize_imdb_id(row.get(imdb)) if imdb else None,
                tmdb_id=tmdb_value if tmdb_value.isdigit() and int(tmdb_value) > 0 else None,
                title=clean_text(row.get(title)) if title else None,
            )
    return links


@dataclass
class LocalMetadata:
    """The local files of one dataset, keyed by MovieLens movie id (all optional)."""

    omdb: dict[str, OmdbRecord] = field(default_factory=dict)
    posters: dict[str, str] = field(default_factory=dict)
    links: dict[str, LinkRow] = field(default_factory=dict)
    # a dataset's own files, keyed by its item_key (datasources.media.own_files)
    texts: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    image_files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        omdb_records: str | Path | None = None,
        poster_list: str | Path | None = None,
        links: str | Path | None = None,
        *,
        descriptions: Mapping[str, str] | None = None,
        images: Mapping[str, str] | None = None,
        image_folder: str | Path | None = None,
    ) -> LocalMetadata:
        from datasources.media.own_files import (
            read_descriptions,
            read_image_list,
            scan_image_folder,
        )

        return cls(
            omdb=read_omdb_records(omdb_records) if omdb_records else {},
            posters=read_poster_list(poster_list) if poster_list else {},
            links=read_links(links) if links else {},
            texts=read_descriptions(descriptions) if descriptions else {},
            images=read_image_list(images) if images else {},
            image_files=scan_image_folder(image_folder) if image_folder else {},
        )

    def title_index(self) -> dict[str, str]:
        """``title_year_key`` → movie id over every title the files know; ambiguous keys dropped."""
        seen: dict[str, set[str]] = {}
        titled = [(k, r.title) for k, r in self.links.items()] + [
            (k, r.title) for k, r in self.omdb.items()
        ]
        for key, raw in titled:
            if not raw:
                continue
            title, year = split_title_year(raw)
            norm = title_year_key(title, year)
            if norm:
                seen.setdefault(norm, set()).add(key)
        return {norm: next(iter(keys)) for norm, keys in seen.items() if len(keys) == 1}


def _genres(value: Any) -> tuple[str, ...]:
    if value is None or isinstance(value, float | str):
        return (value,) if isinstance(value, str) and value else ()
    return tuple(str(g) for g in value if g is not None and str(g))


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def build_item_refs(
    items: pd.DataFrame,
    local: LocalMetadata | None = None,
    *,
    kind: str = "movie",
    match_by: str = "item_key",
) -> list[ItemRef]:
    """One :class:`ItemRef` per row of ``items`` (in ``item_id`` order), ids resolved.

    IMDb id: links file, then the OMDb record, then an ``imdb_id``/``imdb_url`` column of the
    items table. TMDB id: links file or a ``tmdb_id`` column. ISBN: the item key when it is a
    valid ISBN-10. ``match_by="title_year"`` joins the local files by normalised title + year
    instead of by item key (ML-100K).
    """
    if match_by not in ("item_key", "title_year"):
        raise ValueError(f"match_by must be 'item_key' or 'title_year', not {match_by!r}")
    missing = {"item_id", "item_key"} - set(items.columns)
    if missing:
        raise ValueError(f"items table lacks column(s) {sorted(missing)}")
    local = local or LocalMetadata()
    index = local.title_index() if match_by == "title_year" else {}
    frame = items.sort_values("item_id", kind="stable")
    refs: list[ItemRef] = []
    for row in _rows(
        frame, ("item_id", "item_key", "title", "year", "genres", "imdb_id", "imdb_url", "tmdb_id")
    ):
        key = str(row["item_key"])
        title, year = _optional_str(row["title"]), _optional_int(row["year"])
        if match_by == "title_year":
            # Same normalisation as the index ("American President, The" → "The American ...").
            normalised = split_title_year(title)[0] if title else None
            local_key = index.get(title_year_key(normalised, year) or "")
        else:
            local_key = key
        link = local.links.get(local_key) if local_key else None
        record = local.omdb.get(local_key) if local_key else None
        imdb = (
            (link.imdb_id if link else None)
            or (record.imdb_id if record else None)
            or normalize_imdb_id(row["imdb_id"])
            or imdb_id_from_url(row["imdb_url"])
        )
        tmdb = (link.tmdb_id if link else None) or _digits(row["tmdb_id"])
        refs.append(
            ItemRef(
                item_id=int(row["item_id"]),
                item_key=key,
                title=title,
                year=year,
                genres=_genres(row["genres"]),
                kind=kind,
                local_key=local_key,
                imdb_id=imdb,
                tmdb_id=tmdb,
                isbn=key.upper() if is_isbn10(key.upper()) else None,
            )
        )
    return refs


def _digits(value: Any) -> str | None:
    text = _optional_str(value)
    text = text.strip().removesuffix(".0") if text else None
    return text if text and text.isdigit() else None


def _rows(frame: pd.DataFrame, columns: Iterable[str]) -> Iterable[Mapping[str, Any]]:
    """Rows as dicts with absent columns as ``None`` (tables differ per dataset)."""
    present = [c for c in columns if c in frame.columns]
    absent = [c for c in columns if c not in frame.columns]
    for values in zip(*(frame[c].tolist() for c in present), strict=True):
        row = dict(zip(present, values, strict=True))
        row.update(dict.fromkeys(absent))
        yield row
