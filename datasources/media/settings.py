"""What the media collector is told: source chains per dataset, limits, keys (plain values)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from datasources.media.cache import RETRY_POLICIES
from datasources.media.images import ImageLimits
from datasources.media.sources import DESCRIPTION_SOURCES, POSTER_SOURCES, SOURCE_NAMES, Endpoints


@dataclass(frozen=True)
class DatasetDefaults:
    poster_sources: tuple[str, ...]
    description_sources: tuple[str, ...]
    kind: str = "movie"
    match_by: str = "item_key"
    # the dataset's own files (datasources.media.own_files), declared in its dataset file
    descriptions: Mapping[str, str] | None = None
    images: Mapping[str, str] | None = None
    image_folder: str | None = None


MOVIE_POSTERS = ("omdb_file", "poster_list", "omdb_api", "tmdb_api", "wikipedia")
MOVIE_TEXT = ("omdb_file", "omdb_api", "tmdb_api", "wikipedia", "title_genres")
BOOK_POSTERS = ("openlibrary", "wikipedia")
BOOK_TEXT = ("openlibrary", "wikipedia", "title_genres")


def _declared_defaults() -> dict[str, DatasetDefaults]:
    """Each dataset file's ``media`` section; chains it leaves out follow its ``kind``."""
    from datasources.dataset_files import DatasetFileError
    from datasources.registry import DECLARATIONS

    out = {}
    for name, declaration in DECLARATIONS.items():
        media = declaration.media
        posters = media.poster_sources or _own_posters(media) or (
            BOOK_POSTERS if media.kind == "book" else MOVIE_POSTERS)
        texts = media.description_sources or (
            ("text_file", "title_genres") if media.descriptions else None) or (
            BOOK_TEXT if media.kind == "book" else MOVIE_TEXT)
        for field_name, chain, known in (("poster_sources", posters, POSTER_SOURCES),
                                         ("description_sources", texts, DESCRIPTION_SOURCES)):
            unknown = [s for s in chain if s not in known]
            if unknown:
                raise DatasetFileError(declaration.path, f"media.{field_name}",
                                       f"unknown source(s) {unknown}; known: {', '.join(known)}")
        out[name] = DatasetDefaults(tuple(posters), tuple(texts), media.kind, media.match_by,
                                    media.descriptions, media.images, media.image_folder)
    return out


def _own_posters(media) -> tuple[str, ...]:
    """A dataset that brings its own images uses them (and asks no web service) by default."""
    return tuple(name for name, declared in (("image_list", media.images),
                                             ("image_folder", media.image_folder)) if declared)


#: Chains per dataset partition when the run config names none (the dataset files' ``media``).
DATASET_DEFAULTS: Mapping[str, DatasetDefaults] = _declared_defaults()
GENERIC_DEFAULTS = DatasetDefaults(MOVIE_POSTERS, MOVIE_TEXT)


@dataclass(frozen=True)
class MediaSettings:
    """Everything the collector needs to know, as plain values (the asset builds it from config).

    ``api_keys`` maps ``"omdb"``/``"tmdb"`` to the keys; it is excluded from ``repr`` so a
    settings object in a log line or a traceback shows no secret.
    """

    poster_sources: tuple[str, ...] = field(default=MOVIE_POSTERS, metadata={
        "doc": "Poster chain, first success wins."})
    description_sources: tuple[str, ...] = field(default=MOVIE_TEXT, metadata={
        "doc": "Description chain, first success wins."})
    offline: bool = field(default=False, metadata={
        "doc": "Send no request at all: known poster URLs are recorded as skipped_offline (or "
               "served from the cache of an earlier online run); local text still counts."})
    refresh: bool = field(default=False, metadata={
        "doc": "Ignore the fetch cache and ask everything again."})
    retry_failures: str = field(default="transient", metadata={
        "doc": "Which cached failures a re-run asks again: 'transient' (timeouts, 5xx, 429, "
               "network errors), 'all' (404s and invalid images too) or 'none'."})
    workers: int = field(default=8, metadata={
        "doc": "Concurrent fetches (the HTTP pool keeps 10 per host)."})
    per_host_rps: float | None = field(default=4.0, metadata={
        "doc": "Requests per second per host; 0 or null: unlimited."})
    per_host_burst: int = field(default=4, metadata={"doc": "Requests a host may get at once."})
    host_rps: Mapping[str, float] = field(default_factory=dict, metadata={
        "doc": "Per-host overrides, e.g. {'www.omdbapi.com': 1}."})
    limits: ImageLimits = field(default_factory=ImageLimits, metadata={
        "doc": "Bounds applied to every downloaded image."})
    endpoints: Endpoints = field(default_factory=Endpoints, metadata={
        "doc": "Base URLs of the services (tests and mirrors point them elsewhere)."})
    omdb_plot: str = field(default="full", metadata={"doc": "'full' or 'short' OMDb plot."})
    omdb_title_search: bool = field(default=True, metadata={
        "doc": "Ask OMDb by title+year without an IMDb id."})
    progress: bool = field(default=False, metadata={"doc": "tqdm progress bar on stderr."})
    host_failure_limit: int = field(default=10, metadata={
        "doc": "Consecutive connection failures (refused, DNS, timeout) after which a host is "
               "skipped for the rest of the run; 0 never gives up."})
    stream_to_disk: bool = field(default=False, metadata={
        "doc": "Stream poster bodies to disk through the HTTP layer's fetch (memory-bounded for "
               "untrusted hosts, resumes bodies cut short) instead of reading them into memory."})
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for chain, allowed, what in (
            (self.poster_sources, POSTER_SOURCES, "poster"),
            (self.description_sources, DESCRIPTION_SOURCES, "description"),
        ):
            unknown = [s for s in chain if s not in allowed]
            if unknown:
                raise ValueError(
                    f"unknown {what} source(s) {unknown}; {what} sources are "
                    f"{[s for s in SOURCE_NAMES if s in allowed]}"
                )
        if self.retry_failures not in RETRY_POLICIES:
            raise ValueError(f"retry_failures must be one of {RETRY_POLICIES}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")

    @classmethod
    def for_dataset(
        cls,
        dataset: str,
        poster_sources: Sequence[str] | None = None,
        description_sources: Sequence[str] | None = None,
        **overrides: Any,
    ) -> MediaSettings:
        """Settings with ``dataset``'s default chains unless chains are given."""
        defaults = DATASET_DEFAULTS.get(dataset, GENERIC_DEFAULTS)
        return cls(
            poster_sources=tuple(
                defaults.poster_sources if poster_sources is None else poster_sources
            ),
            description_sources=tuple(
                defaults.description_sources if description_sources is None else description_sources
            ),
            **overrides,
        )


class Redactor:
    """Replaces known secret strings (and their URL-quoted forms) by ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= 4:
                forms.update({secret, quote(secret, safe=""), quote(secret)})
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if not self._forms or not isinstance(value, str):
            return value
        for form in self._forms:
            if form in value:
                value = value.replace(form, "***")
        return value
