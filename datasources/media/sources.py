"""Where posters and descriptions come from: one small adapter per source.

Over 400 lines: one small adapter class per source (six of them) behind one interface; they
read best side by side, where a reader compares how each names its cache key and its errors.

Each source answers "what is the poster URL / the description of this item?". Local sources
(the OMDb records file, the poster URL list, the title-and-genres fallback) answer from memory.
API sources (OMDb, TMDB, Wikipedia, Open Library) first name their request by a *cache key*
built from ids only (:meth:`Source.request_key`), so the collector can serve a re-run from its
cache and never store or log a URL that carries an API key; only then, when needed, does
:meth:`Source.fetch` send the request through the project's :class:`~datasources.http.HttpClient`.
A source that cannot be asked (no id, no key) says so in a ``skipped`` :class:`Lookup` with a
reason, which ends up in the item's ``poster_attempts``/``description_attempts``.

Response shapes followed (checked against each API's documentation):

* OMDb ``/?i=tt…&apikey=…&plot=full`` → ``{"Response": "True", "Plot", "Poster", …}``;
  not found → HTTP 200 ``{"Response": "False", "Error": "Incorrect IMDb ID."}`` (or
  ``"Movie not found!"`` for a title search); a bad key → HTTP 401.
* TMDB ``/3/movie/{id}?api_key=…`` → ``{"overview", "poster_path": "/x.jpg", …}``; the poster
  is ``https://image.tmdb.org/t/p/w500`` + ``poster_path``; unknown id → 404.
* Wikipedia ``/api/rest_v1/page/summary/{title}`` → ``{"type": "standard" | "disambiguation",
  "description", "extract", "thumbnail": {"source"}, "originalimage": {"source"}}``; 404 if
  there is no page.
* Open Library ``/isbn/{isbn}.json`` (redirects to ``/books/OL…M.json``) → an edition with an
  optional ``description`` and ``works: [{"key": "/works/OL…W"}]``; ``/works/OL…W.json`` →
  ``description`` as a string or ``{"type": "/type/text", "value": …}``. Covers:
  ``https://covers.openlibrary.org/b/isbn/{isbn}-L.jpg?default=false`` (404 when there is none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from datasources.errors import DownloadError
from datasources.http import HttpStatusError
from datasources.media.local import LocalMetadata, clean_text
from datasources.media.types import (
    HTTP_ERROR,
    NETWORK_ERROR,
    NOT_FOUND,
    OK,
    REDIRECT_LOOP,
    TIMEOUT,
    ItemRef,
    Lookup,
)

__all__ = [
    "DESCRIPTION_SOURCES",
    "POSTER_SOURCES",
    "SOURCE_NAMES",
    "TEXT_KINDS",
    "Endpoints",
    "ImageFolder",
    "ImageList",
    "OmdbApi",
    "OmdbFile",
    "OpenLibrary",
    "PosterList",
    "Requester",
    "Source",
    "TextFile",
    "TitleGenres",
    "TmdbApi",
    "Wikipedia",
    "classify_error",
    "make_sources",
    "skipped",
]

#: Every source name a chain may list, in the order a user would usually want them.
SOURCE_NAMES = (
    "text_file",
    "image_list",
    "image_folder",
    "omdb_file",
    "poster_list",
    "omdb_api",
    "tmdb_api",
    "wikipedia",
    "openlibrary",
    "title_genres",
)
POSTER_SOURCES = frozenset(
    {"image_list", "image_folder", "omdb_file", "poster_list", "omdb_api", "tmdb_api",
     "wikipedia", "openlibrary"}
)
DESCRIPTION_SOURCES = frozenset(
    {"text_file", "omdb_file", "omdb_api", "tmdb_api", "wikipedia", "openlibrary", "title_genres"}
)
#: ``description_source`` value per source: what kind of text it is, wherever it came from
#: (the OMDb plot is the same text from the records file or from the API).
TEXT_KINDS: Mapping[str, str] = {
    "text_file": "dataset_text",
    "omdb_file": "omdb_plot",
    "omdb_api": "omdb_plot",
    "tmdb_api": "tmdb_overview",
    "wikipedia": "wikipedia_extract",
    "openlibrary": "openlibrary_description",
    "title_genres": "title_genres_fallback",
}


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the real services; tests and mirrors point them elsewhere."""

    omdb: str = field(default="https://www.omdbapi.com/", metadata={"doc": "OMDb API."})
    tmdb: str = field(default="https://api.themoviedb.org/3", metadata={"doc": "TMDB API."})
    tmdb_images: str = field(default="https://image.tmdb.org/t/p/w500", metadata={
        "doc": "TMDB image base (poster size in the path)."})
    wikipedia: str = field(default="https://en.wikipedia.org/api/rest_v1", metadata={
        "doc": "Wikipedia REST API."})
    openlibrary: str = field(default="https://openlibrary.org", metadata={
        "doc": "Open Library API."})
    openlibrary_covers: str = field(default="https://covers.openlibrary.org", metadata={
        "doc": "Open Library covers."})


class Requester(Protocol):
    """What a source may do on the network (the collector adds rate limiting and counting)."""

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> Any: ...


def skipped(reason: str, *, offline: bool = False) -> Lookup:
    return Lookup("skipped", reason=reason, offline=offline)


def classify_error(exc: BaseException) -> tuple[str, str]:
    """``(poster status, short reason)`` for an error from the HTTP layer.

    The HTTP layer has already retried 429/5xx/timeouts and redacted query values from its
    messages; this only sorts the final error into the statuses users filter on.
    """
    if isinstance(exc, HttpStatusError):
        code = exc.status_code
        reason = f"HTTP {code}"
        if code in (404, 410):
            return NOT_FOUND, reason
        if code in (401, 403):
            return HTTP_ERROR, f"{reason} (refused: check the API key or the host's terms)"
        if code == 429:
            return HTTP_ERROR, f"{reason} (rate limited after retries)"
        return HTTP_ERROR, reason
    text = str(exc)
    if "TooManyRedirects" in text:
        return REDIRECT_LOOP, "too many redirects (redirect loop)"
    if re.search(r"timed out|timeout", text, re.IGNORECASE):
        return TIMEOUT, "timed out (after retries)"
    cut = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", text)
    if cut:
        got, total = int(cut.group(1)), int(cut.group(1)) + int(cut.group(2))
        return NETWORK_ERROR, f"body cut short after {got} of {total} bytes"
    ended = re.search(r"body ended after (\d+) of (\d+) bytes", text)
    if ended:
        got, total = int(ended.group(1)), int(ended.group(2))
        return NETWORK_ERROR, f"body cut short after {got} of {total} bytes"
    for pattern, reason in _NETWORK_REASONS:
        if re.search(pattern, text, re.IGNORECASE):
            return NETWORK_ERROR, reason
    if isinstance(exc, DownloadError):
        # Already redacted by the HTTP layer; keep it short enough for a table cell.
        return NETWORK_ERROR, text if len(text) <= 200 else text[:197] + "..."
    return NETWORK_ERROR, f"{type(exc).__name__}"


#: Recognisable connection failures, worded for a table cell instead of urllib3's paragraph.
_NETWORK_REASONS = (
    (r"connection refused", "connection refused"),
    (
        r"NameResolutionError|Name or service not known|Failed to resolve|getaddrinfo",
        "DNS lookup failed (no network?)",
    ),
    (r"connection reset|ECONNRESET", "connection reset (after retries)"),
)


class Source:
    """Base class: a named source of poster URLs and/or descriptions."""

    name: str = ""
    network: bool = False  # lookups need requests (and so are cached and skipped offline)

    @property
    def text_kind(self) -> str | None:
        return TEXT_KINDS.get(self.name)

    def request_key(self, item: ItemRef) -> str | Lookup:
        """A cache key naming the request for ``item`` (ids only, never a key), or the answer.

        Local sources return their :class:`Lookup` directly; API sources return a skipped
        Lookup when they lack what the request needs.
        """
        raise NotImplementedError

    def fetch(self, item: ItemRef, http: Requester) -> Lookup:
        """Ask the service (API sources only). Errors of the HTTP layer propagate."""
        raise NotImplementedError(f"{self.name} has no network lookup")

    def direct_poster(self, item: ItemRef) -> str | None:
        """A poster URL known from ids alone, without a lookup request (Open Library covers)."""
        return None


# -- local sources ----------------------------------------------------------------------------


class OmdbFile(Source):
    """OMDb records shipped as JSON lines (ML-1M: plots for 3,856 of 3,883 movies)."""

    name = "omdb_file"

    def __init__(self, local: LocalMetadata | None) -> None:
        self.records = local.omdb if local else {}

    def request_key(self, item: ItemRef) -> Lookup:
        if not self.records:
            return skipped("no OMDb records file configured")
        record = self.records.get(item.local_key or "")
        if record is None:
            return skipped("not in the OMDb records file")
        if record.plot is None and record.poster is None:
            return Lookup(NOT_FOUND, reason="OMDb record has no Plot and no Poster")
        return Lookup(OK, poster_url=record.poster, description=record.plot)


class PosterList(Source):
    """A ``movie_id,url`` list of poster URLs."""

    name = "poster_list"

    def __init__(self, local: LocalMetadata | None) -> None:
        self.posters = local.posters if local else {}

    def request_key(self, item: ItemRef) -> Lookup:
        if not self.posters:
            return skipped("no poster list configured")
        url = self.posters.get(item.local_key or "")
        return Lookup(OK, poster_url=url) if url else skipped("not in the poster list")


class TextFile(Source):
    """The dataset's own item texts (its ``media.descriptions`` file), by item key."""

    name = "text_file"

    def __init__(self, local: LocalMetadata | None) -> None:
        self.texts = local.texts if local else {}

    def request_key(self, item: ItemRef) -> Lookup:
        if not self.texts:
            return skipped("no descriptions file configured")
        text = self.texts.get(item.item_key)
        return Lookup(OK, description=text) if text else skipped("not in the descriptions file")


class ImageList(Source):
    """The dataset's own image list (``media.images``): a URL or a local path per item key."""

    name = "image_list"

    def __init__(self, local: LocalMetadata | None) -> None:
        self.images = local.images if local else {}

    def request_key(self, item: ItemRef) -> Lookup:
        if not self.images:
            return skipped("no image list configured")
        location = self.images.get(item.item_key)
        return Lookup(OK, poster_url=location) if location else skipped("not in the image list")


class ImageFolder(Source):
    """The dataset's own image folder (``media.image_folder``): ``<item_key>.<ext>`` files."""

    name = "image_folder"

    def __init__(self, local: LocalMetadata | None) -> None:
        self.files = local.image_files if local else {}

    def request_key(self, item: ItemRef) -> Lookup:
        if not self.files:
            return skipped("no image folder configured")
        path = self.files.get(item.item_key)
        return Lookup(OK, poster_url=path) if path else skipped("no image file for this item")


class TitleGenres(Source):
    """Last resort text: ``"Toy Story (1995). Animation, Children's, Comedy."``."""

    name = "title_genres"

    def request_key(self, item: ItemRef) -> Lookup:
        if not item.title:
            return skipped("no title")
        text = item.title if item.year is None else f"{item.title} ({item.year})"
        text = text.rstrip(".") + "."
        if item.genres:
            text += " " + ", ".join(item.genres) + "."
        return Lookup(OK, description=text)


# -- API sources ------------------------------------------------------------------------------


class OmdbApi(Source):
    """OMDb by IMDb id (``i=tt…``); by title and year when no id is known (ML-100K)."""

    name = "omdb_api"
    network = True

    def __init__(
        self, api_key: str | None, base_url: str, plot: str = "full", title_search: bool = True
    ) -> None:
        if plot not in ("full", "short"):
            raise ValueError("OMDb plot must be 'full' or 'short'")
        self._api_key = api_key or None
        self.base_url = base_url
        self.plot = plot
        self.title_search = title_search

    def __repr__(self) -> str:  # never show the key
        return f"OmdbApi(base_url={self.base_url!r}, plot={self.plot!r})"

    def request_key(self, item: ItemRef) -> str | Lookup:
        if not self._api_key:
            return skipped("no OMDb API key (set OMDB_API_KEY)")
        if item.imdb_id:
            return f"i={item.imdb_id}|plot={self.plot}"
        if self.title_search and item.title and item.kind == "movie":
            return f"t={item.title}|y={item.year or ''}|plot={self.plot}"
        return skipped("no IMDb id")

    def fetch(self, item: ItemRef, http: Requester) -> Lookup:
        params: dict[str, str] = {}
        if item.imdb_id:
            params["i"] = item.imdb_id
        else:
            params["t"] = item.title or ""
            params["type"] = "movie"
            if item.year is not None:
                params["y"] = str(item.year)
        params["plot"] = self.plot
        params["apikey"] = self._api_key or ""
        data = http.get_json(self.base_url, params=params)
        if not isinstance(data, dict):
            return Lookup(HTTP_ERROR, reason="OMDb: answer is not a JSON object")
        if str(data.get("Response", "True")) == "False":
            error = clean_text(data.get("Error"), 120) or "no result"
            lowered = error.lower()
            status = (
                NOT_FOUND if ("not found" in lowered or "incorrect imdb" in lowered) else HTTP_ERROR
            )
            return Lookup(status, reason=f"OMDb: {error}")
        return Lookup(
            OK, poster_url=_http_url(data.get("Poster")), description=clean_text(data.get("Plot"))
        )


class TmdbApi(Source):
    """TMDB movie details by TMDB id: ``overview`` and ``poster_path``."""

    name = "tmdb_api"
    network = True

    def __init__(self, api_key: str | None, base_url: str, image_base_url: str) -> None:
        self._api_key = api_key or None
        self.base_url = base_url.rstrip("/")
        self.image_base_url = image_base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"TmdbApi(base_url={self.base_url!r})"

    def request_key(self, item: ItemRef) -> str | Lookup:
        if not self._api_key:
            return skipped("no TMDB API key (set TMDB_API_KEY)")
        if not item.tmdb_id:
            return skipped("no TMDB id")
        return f"movie/{item.tmdb_id}"

    def fetch(self, item: ItemRef, http: Requester) -> Lookup:
        data = http.get_json(
            f"{self.base_url}/movie/{item.tmdb_id}", params={"api_key": self._api_key or ""}
        )
        if not isinstance(data, dict):
            return Lookup(HTTP_ERROR, reason="TMDB: answer is not a JSON object")
        poster_path = data.get("poster_path")
        poster = None
        if isinstance(poster_path, str) and re.fullmatch(r"/[\w.-]+", poster_path):
            poster = self.image_base_url + poster_path
        return Lookup(OK, poster_url=poster, description=clean_text(data.get("overview")))


class Wikipedia(Source):
    """The REST page summary of the item's article, found by title (no key needed).

    Film titles are ambiguous ("Heat" is first a physics article), so the disambiguated titles
    Wikipedia uses are tried first (``Heat (1995 film)``, ``Heat (film)``), and a page is only
    accepted when it is a ``standard`` article that says it is about a film (or a book), and,
    for the bare title, mentions the year.
    """

    name = "wikipedia"
    network = True

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request_key(self, item: ItemRef) -> str | Lookup:
        if not item.title:
            return skipped("no title")
        return f"{item.kind}|{item.title}|{item.year or ''}"

    @staticmethod
    def candidates(item: ItemRef) -> list[tuple[str, bool]]:
        """``(page title, needs the year in the text)`` in the order they are tried."""
        title = item.title or ""
        if item.kind == "book":
            return [(f"{title} (novel)", False), (title, item.year is not None)]
        tries = [(f"{title} ({item.year} film)", False)] if item.year is not None else []
        return [*tries, (f"{title} (film)", False), (title, item.year is not None)]

    def fetch(self, item: ItemRef, http: Requester) -> Lookup:
        tried = 0
        for page, needs_year in self.candidates(item):
            tried += 1
            url = f"{self.base_url}/page/summary/{quote(page.replace(' ', '_'), safe='')}"
            try:
                data = http.get_json(url)
            except HttpStatusError as exc:
                if exc.status_code == 404:
                    continue
                raise
            if isinstance(data, dict) and self._accept(data, item, needs_year):
                image = _nested(data, "originalimage", "source") or _nested(
                    data, "thumbnail", "source"
                )
                return Lookup(
                    OK, poster_url=_http_url(image), description=clean_text(data.get("extract"))
                )
        return Lookup(NOT_FOUND, reason=f"no matching Wikipedia article ({tried} titles tried)")

    @staticmethod
    def _accept(data: Mapping[str, Any], item: ItemRef, needs_year: bool) -> bool:
        if data.get("type") != "standard" or not clean_text(data.get("extract")):
            return False
        text = f"{data.get('description') or ''} {data.get('extract') or ''}".lower()
        words = ("film", "movie") if item.kind == "movie" else ("novel", "book")
        if not any(w in text for w in words):
            return False
        return not needs_year or str(item.year) in text


class OpenLibrary(Source):
    """Book covers by ISBN (no lookup needed) and descriptions from the edition or its work."""

    name = "openlibrary"
    network = True
    _WORK_KEY = re.compile(r"/works/OL\d+W")

    def __init__(self, base_url: str, covers_base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.covers_base_url = covers_base_url.rstrip("/")

    def direct_poster(self, item: ItemRef) -> str | None:
        if not item.isbn:
            return None
        # default=false: 404 instead of a blank placeholder when there is no cover.
        return f"{self.covers_base_url}/b/isbn/{item.isbn}-L.jpg?default=false"

    def request_key(self, item: ItemRef) -> str | Lookup:
        if not item.isbn:
            return skipped("no ISBN-10 (the ASIN is not an ISBN)")
        return f"isbn/{item.isbn}"

    def fetch(self, item: ItemRef, http: Requester) -> Lookup:
        edition = http.get_json(f"{self.base_url}/isbn/{item.isbn}.json")
        if not isinstance(edition, dict):
            return Lookup(HTTP_ERROR, reason="Open Library: answer is not a JSON object")
        text = _ol_text(edition.get("description"))
        if text is None:
            works = edition.get("works") if isinstance(edition.get("works"), list) else []
            for work in works[:1]:
                key = work.get("key") if isinstance(work, dict) else None
                if isinstance(key, str) and self._WORK_KEY.fullmatch(key):
                    data = http.get_json(f"{self.base_url}{key}.json")
                    text = _ol_text(data.get("description")) if isinstance(data, dict) else None
        extra = {"title": t} if (t := clean_text(edition.get("title"), 300)) else {}
        return Lookup(OK, poster_url=self.direct_poster(item), description=text, extra=extra)


# -- helpers ----------------------------------------------------------------------------------


def _http_url(value: Any) -> str | None:
    text = clean_text(value, 2000)
    return text if text and text.lower().startswith(("http://", "https://")) else None


def _nested(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _ol_text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    return clean_text(value)


def make_sources(
    *,
    local: LocalMetadata | None,
    endpoints: Endpoints,
    api_keys: Mapping[str, str],
    omdb_plot: str = "full",
    omdb_title_search: bool = True,
) -> dict[str, Source]:
    """Every known source, configured; chains pick from this by name."""
    sources: list[Source] = [
        TextFile(local),
        ImageList(local),
        ImageFolder(local),
        OmdbFile(local),
        PosterList(local),
        OmdbApi(api_keys.get("omdb"), endpoints.omdb, omdb_plot, omdb_title_search),
        TmdbApi(api_keys.get("tmdb"), endpoints.tmdb, endpoints.tmdb_images),
        Wikipedia(endpoints.wikipedia),
        OpenLibrary(endpoints.openlibrary, endpoints.openlibrary_covers),
        TitleGenres(),
    ]
    return {source.name: source for source in sources}
