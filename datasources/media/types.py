"""Shared vocabulary of the media stage: statuses, the per-item reference, a source's answer.

Kept apart from the modules that use them so that sources, the collector, the summary and the
Dagster check all agree on one spelling of every status (the check and users' SQL group by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ATTEMPTED_STATUSES",
    "FAILURE_STATUSES",
    "HTTP_ERROR",
    "INVALID_IMAGE",
    "NETWORK_ERROR",
    "NOT_FOUND",
    "NO_SOURCE",
    "OK",
    "POSTER_STATUSES",
    "REDIRECT_LOOP",
    "SKIPPED_OFFLINE",
    "TIMEOUT",
    "TOO_LARGE",
    "TRANSIENT_STATUSES",
    "ItemRef",
    "Lookup",
]

# -- poster_status values -------------------------------------------------------------------
OK = "ok"
NOT_FOUND = "not_found"  # 404/410, or an API that says it has no such record
HTTP_ERROR = "http_error"  # any other non-2xx after the HTTP layer's retries (401, 403, 5xx, 429)
TIMEOUT = "timeout"  # connect/read timeout after retries
REDIRECT_LOOP = "redirect_loop"  # more redirects than requests allows (30)
NETWORK_ERROR = "network_error"  # refused/reset connection, body cut short, bad mirror, ...
INVALID_IMAGE = "invalid_image"  # bytes that do not decode fully (HTML error pages, truncation)
TOO_LARGE = "too_large"  # over the byte or pixel limit (decompression bombs)
NO_SOURCE = "no_source"  # no source in the chain knew a URL for the item
SKIPPED_OFFLINE = "skipped_offline"  # a URL is known (or might be) but offline mode fetches nothing

POSTER_STATUSES = (
    OK,
    NOT_FOUND,
    HTTP_ERROR,
    TIMEOUT,
    REDIRECT_LOOP,
    NETWORK_ERROR,
    INVALID_IMAGE,
    TOO_LARGE,
    NO_SOURCE,
    SKIPPED_OFFLINE,
)
#: A fetch was tried and did not give a usable image: what the failure-rate check counts.
FAILURE_STATUSES = frozenset(
    {NOT_FOUND, HTTP_ERROR, TIMEOUT, REDIRECT_LOOP, NETWORK_ERROR, INVALID_IMAGE, TOO_LARGE}
)
#: Statuses of items for which a fetch was tried at all (the failure rate's denominator).
ATTEMPTED_STATUSES = FAILURE_STATUSES | {OK}
#: Failures that may go away on their own; a re-run retries them by default. A 404 or a
#: decompression bomb will not change by asking again, so those are remembered instead.
TRANSIENT_STATUSES = frozenset({HTTP_ERROR, TIMEOUT, NETWORK_ERROR})


@dataclass(frozen=True)
class ItemRef:
    """What the sources need to know about one item, resolved once from the lake and local files.

    ``local_key`` is the key under which local metadata files list the item (the MovieLens
    movieId, equal to ``item_key`` except when ML-100K items are matched by title and year).
    """

    item_id: int
    item_key: str
    title: str | None = None
    year: int | None = None
    genres: tuple[str, ...] = ()
    kind: str = "movie"  # "movie" or "book": decides Wikipedia page matching
    local_key: str | None = None
    imdb_id: str | None = None  # "tt0114709"
    tmdb_id: str | None = None  # "862"
    isbn: str | None = None  # a valid ISBN-10 (Amazon books whose ASIN is one)


@dataclass(frozen=True)
class Lookup:
    """One source's answer for one item.

    ``status`` is ``ok`` (something found; ``poster_url`` and/or ``description`` set),
    ``skipped`` (the source could not be asked: no id, no key, offline, disabled), or a poster
    status naming why asking failed (``not_found``, ``http_error``, ``timeout``, ...).
    ``reason`` is short, human-readable and free of secrets.
    """

    status: str
    poster_url: str | None = None
    description: str | None = None
    reason: str | None = None
    offline: bool = False  # skipped only because offline mode forbids the request
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES
