"""Collect one poster and one description per item: chains, concurrency, caching, summary.

For every item the collector walks two configurable chains of sources (:mod:`.sources`), first
success wins:

* **description**: the first source that has text for the item;
* **poster**: the first source whose URL downloads (through the project's ``HttpClient``:
  retries, ``Retry-After``, timeouts) and validates (:func:`.images.process_image`). A URL that
  fails does not end the chain: the next source's URL is tried.

Every item gets a row, whatever happens to it; what was tried is kept in ``poster_attempts`` /
``description_attempts`` and the first failure's reason in ``poster_error``.

Work is spread over a thread pool (downloads wait on the network, Pillow releases the GIL while
decoding), with a per-host rate limit. Within a run, identical requests — the same poster URL for
two items, the same API lookup asked by both chains — are made once ("single flight"). Across
runs, :class:`.cache.FetchCache` remembers every lookup and every image outcome, so a re-run
sends only what is missing or failed (``retry_failures``), unless ``refresh`` is set. Offline
mode sends nothing at all: known URLs are recorded as ``skipped_offline`` (or served from the
cache of an earlier online run).

API keys: sources put them in query parameters only; the HTTP layer redacts query values from
every message; cache keys are built from ids; and, as a last line, :class:`Redactor` removes the
key strings from every text this module produces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from datasources.errors import DownloadError
from datasources.http import HttpClient, HttpStatusError
from datasources.media.cache import RETRY_POLICIES, FetchCache, should_retry
from datasources.media.images import ImageLimits, ImageRejected, ImageStore, process_image
from datasources.media.local import LocalMetadata
from datasources.media.sources import (
    DESCRIPTION_SOURCES,
    POSTER_SOURCES,
    SOURCE_NAMES,
    TEXT_KINDS,
    Endpoints,
    Source,
    classify_error,
    make_sources,
    skipped,
)
from datasources.media.throttle import HostRateLimiter, host_of
from datasources.media.types import (
    ATTEMPTED_STATUSES,
    FAILURE_STATUSES,
    HTTP_ERROR,
    NETWORK_ERROR,
    NO_SOURCE,
    OK,
    POSTER_STATUSES,
    SKIPPED_OFFLINE,
    TIMEOUT,
    TOO_LARGE,
    ItemRef,
    Lookup,
)

__all__ = [
    "DATASET_DEFAULTS",
    "MEDIA_COLUMNS",
    "MEDIA_SCHEMA",
    "DatasetDefaults",
    "MediaCollector",
    "MediaRun",
    "MediaSettings",
    "Redactor",
    "media_problems",
    "media_table",
    "summarize_media",
]

log = logging.getLogger(__name__)

#: The table's Arrow schema. Explicit, because a column that is all null in one partition (no
#: poster fetched offline) would otherwise be written as type ``null`` and clash with the same
#: column of another partition in the warehouse's ``read_parquet('dataset=*/...')`` view.
MEDIA_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("item_key", pa.string()),
        ("poster_url", pa.string()),
        ("poster_path", pa.string()),
        ("poster_status", pa.string()),
        ("poster_source", pa.string()),
        ("poster_sha256", pa.string()),
        ("poster_width", pa.int32()),
        ("poster_height", pa.int32()),
        ("poster_error", pa.string()),
        ("description", pa.string()),
        ("description_source", pa.string()),
        ("description_origin", pa.string()),
        ("poster_attempts", pa.list_(pa.string())),
        ("description_attempts", pa.list_(pa.string())),
    ]
)
#: Output columns, in order (the contract's first, then provenance).
MEDIA_COLUMNS: tuple[str, ...] = tuple(MEDIA_SCHEMA.names)


def media_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` (a :class:`MediaRun` frame) as an Arrow table with :data:`MEDIA_SCHEMA`."""
    return pa.Table.from_pandas(
        frame.loc[:, list(MEDIA_COLUMNS)], schema=MEDIA_SCHEMA, preserve_index=False
    )


@dataclass(frozen=True)
class DatasetDefaults:
    poster_sources: tuple[str, ...]
    description_sources: tuple[str, ...]
    kind: str = "movie"
    match_by: str = "item_key"


_MOVIE_POSTERS = ("omdb_file", "poster_list", "omdb_api", "tmdb_api", "wikipedia")
_MOVIE_TEXT = ("omdb_file", "omdb_api", "tmdb_api", "wikipedia", "title_genres")
#: Chains per dataset partition when the run config names none; unknown datasets get movies'.
DATASET_DEFAULTS: Mapping[str, DatasetDefaults] = {
    "ml-1m": DatasetDefaults(_MOVIE_POSTERS, _MOVIE_TEXT),
    # ML-100K ids are not MovieLens-20M ids: its items meet the ML side files by title + year.
    "ml-100k": DatasetDefaults(_MOVIE_POSTERS, _MOVIE_TEXT, match_by="title_year"),
    "amazon-book": DatasetDefaults(
        ("openlibrary", "wikipedia"), ("openlibrary", "wikipedia", "title_genres"), kind="book"
    ),
}
_GENERIC = DatasetDefaults(_MOVIE_POSTERS, _MOVIE_TEXT)


@dataclass(frozen=True)
class MediaSettings:
    """Everything the collector needs to know, as plain values (the asset builds it from config).

    ``api_keys`` maps ``"omdb"``/``"tmdb"`` to the keys; it is excluded from ``repr`` so a
    settings object in a log line or a traceback shows no secret.
    """

    poster_sources: tuple[str, ...] = _MOVIE_POSTERS
    description_sources: tuple[str, ...] = _MOVIE_TEXT
    offline: bool = False
    refresh: bool = False
    retry_failures: str = "transient"
    workers: int = 8
    per_host_rps: float | None = 4.0
    per_host_burst: int = 4
    host_rps: Mapping[str, float] = field(default_factory=dict)
    limits: ImageLimits = field(default_factory=ImageLimits)
    endpoints: Endpoints = field(default_factory=Endpoints)
    omdb_plot: str = "full"
    omdb_title_search: bool = True
    progress: bool = False
    host_failure_limit: int = 10  # consecutive connection failures before a host is skipped
    stream_to_disk: bool = False  # posters through HttpClient.fetch (see MediaCollector._download)
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
        defaults = DATASET_DEFAULTS.get(dataset, _GENERIC)
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


@dataclass
class MediaRun:
    """The collected table and what it cost."""

    frame: pd.DataFrame
    stats: dict[str, Any]


class _SingleFlight:
    """Run each keyed computation once per run; concurrent askers wait for the first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}

    def do(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Return ``(value, shared)``; ``shared`` is True when another caller computed it."""
        with self._lock:
            existing = self._futures.get(key)
            future = existing if existing is not None else self._futures.setdefault(key, Future())
        if existing is not None:
            return future.result(), True
        try:
            value = compute()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(value)
        return value, False


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n


class _Requester:
    """The network as sources see it: rate limited, counted, through the shared HttpClient.

    It also keeps a per-host circuit breaker: after ``host_failure_limit`` consecutive
    connection-level failures (refused, DNS, timeouts) a host is skipped for the rest of the run.
    Without it, a machine with no route to the internet would spend retries × backoff on each of
    thousands of items (~25 min for ML-1M) before reporting what one request could tell.
    """

    def __init__(
        self,
        client: HttpClient,
        limiter: HostRateLimiter,
        counters: _Counters,
        host_failure_limit: int,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.counters = counters
        self.host_failure_limit = host_failure_limit
        self._lock = threading.Lock()
        self._streak: Counter[str] = Counter()
        self.down: dict[str, str] = {}

    def _call(self, url: str, kind: str, call: Callable[[], Any]) -> Any:
        host = host_of(self.client.resolve(url))
        with self._lock:
            down = self.down.get(host)
        if down:
            raise DownloadError(down)
        self.limiter.acquire(host)
        self.counters.add("requests")
        self.counters.add(kind)
        try:
            result = call()
        except HttpStatusError:
            self._record(host, failed=False)  # the host answered: it is reachable
            raise
        except DownloadError as exc:
            self._record(host, failed=classify_error(exc)[0] in (NETWORK_ERROR, TIMEOUT))
            raise
        self._record(host, failed=False)
        return result

    def _record(self, host: str, *, failed: bool) -> None:
        if not host or self.host_failure_limit <= 0:
            return
        with self._lock:
            if not failed:
                self._streak[host] = 0
                return
            self._streak[host] += 1
            if self._streak[host] >= self.host_failure_limit and host not in self.down:
                self.down[host] = (
                    f"host {host} skipped: unreachable after {self._streak[host]} consecutive "
                    "connection failures"
                )

    def get_json(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        query = dict(params) if params else None
        return self._call(url, "lookup_requests", lambda: self.client.get_json(url, params=query))

    def fetch(self, url: str, *, refresh: bool) -> Path:
        return self._call(
            url, "image_requests", lambda: self.client.fetch(url, filename="body", refresh=refresh)
        )

    def get_bytes(self, url: str) -> bytes:
        def read() -> bytes:
            with self.client.get(url, headers={"Accept": "image/*"}) as response:
                return response.content

        return self._call(url, "image_requests", read)


def _attempt(name: str, status: str, reason: str | None) -> str:
    return f"{name}: {status}" + (f" ({reason})" if reason else "")


class MediaCollector:
    """Runs the chains for a list of :class:`ItemRef` (see the module docstring).

    Args:
        settings: chains, limits, offline/refresh, concurrency.
        client: the project's HTTP client (its ``cache_dir`` holds transient raw downloads).
        cache: lookup/image outcomes across runs.
        store: where validated posters are kept, by content hash.
        local: local metadata files (for the ``omdb_file``/``poster_list`` sources).
        logger: where progress notes go (a Dagster ``context.log`` works).
    """

    def __init__(
        self,
        settings: MediaSettings,
        client: HttpClient,
        cache: FetchCache,
        store: ImageStore,
        local: LocalMetadata | None = None,
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.store = store
        self.log = logger or log
        self.redact = Redactor(settings.api_keys.values())
        self.sources: dict[str, Source] = make_sources(
            local=local,
            endpoints=settings.endpoints,
            api_keys=settings.api_keys,
            omdb_plot=settings.omdb_plot,
            omdb_title_search=settings.omdb_title_search,
        )
        self.limiter = HostRateLimiter(
            settings.per_host_rps, burst=settings.per_host_burst, per_host=settings.host_rps
        )
        self.counters = _Counters()
        self.requester = _Requester(
            client, self.limiter, self.counters, settings.host_failure_limit
        )
        self._lookups = _SingleFlight()
        self._images = _SingleFlight()
        self._disabled: dict[str, str] = {}
        self._disabled_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------

    def run(self, items: Sequence[ItemRef]) -> MediaRun:
        started = time.perf_counter()
        rows: list[dict[str, Any]] = []
        workers = min(self.settings.workers, max(1, len(items)))
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="media") as pool,
            tqdm(
                total=len(items), unit="item", desc="media", disable=not self.settings.progress
            ) as bar,
        ):
            futures = [pool.submit(self._item, item) for item in items]
            try:
                for future in as_completed(futures):
                    rows.append(future.result())
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        seconds = time.perf_counter() - started
        frame = self._frame(rows)
        counters = self.counters.values
        stats = {
            "items": len(items),
            "seconds": round(seconds, 3),
            "items_per_s": round(len(items) / seconds, 1) if seconds > 0 else None,
            "requests": counters["requests"],
            "lookup_requests": counters["lookup_requests"],
            "image_requests": counters["image_requests"],
            "lookup_cache_hits": counters["lookup_cache_hits"],
            "image_cache_hits": counters["image_cache_hits"],
            "shared_in_run": counters["shared"],
            "rate_limit_wait_s": round(self.limiter.waited_s, 3),
            "disabled_sources": dict(self._disabled),
            "unreachable_hosts": sorted(self.requester.down),
            "offline": self.settings.offline,
        }
        return MediaRun(frame, stats)

    # -- one item ----------------------------------------------------------------------------

    def _item(self, item: ItemRef) -> dict[str, Any]:
        memo: dict[str, Lookup] = {}

        def lookup(name: str) -> Lookup:
            if name not in memo:
                memo[name] = self._lookup(self.sources[name], item)
            return memo[name]

        row: dict[str, Any] = {"item_id": item.item_id, "item_key": item.item_key}
        row.update(self._description(item, lookup))
        row.update(self._poster(item, lookup))
        return {k: self.redact(v) if isinstance(v, str) else v for k, v in row.items()}

    def _description(self, item: ItemRef, lookup: Callable[[str], Lookup]) -> dict[str, Any]:
        attempts: list[str] = []
        for name in self.settings.description_sources:
            answer = lookup(name)
            if answer.description:
                attempts.append(_attempt(name, OK, None))
                return {
                    "description": answer.description,
                    "description_source": TEXT_KINDS[name],
                    "description_origin": name,
                    "description_attempts": [self.redact(a) for a in attempts],
                }
            status = answer.status if answer.status != OK else "no_text"
            attempts.append(_attempt(name, status, answer.reason))
        return {
            "description": None,
            "description_source": "none",
            "description_origin": None,
            "description_attempts": [self.redact(a) for a in attempts],
        }

    def _poster(self, item: ItemRef, lookup: Callable[[str], Lookup]) -> dict[str, Any]:
        attempts: list[str] = []
        first_failure: tuple[str, str, dict[str, Any]] | None = None
        first_offline: tuple[str, str] | None = None
        offline_skips: list[str] = []
        tried: set[str] = set()
        for name in self.settings.poster_sources:
            source = self.sources[name]
            url = source.direct_poster(item)
            if url is None:
                answer = lookup(name)
                url = answer.poster_url
                if url is None:
                    status = answer.status if answer.status != OK else "no_poster"
                    attempts.append(_attempt(name, status, answer.reason))
                    if answer.offline:
                        offline_skips.append(name)
                    continue
            if url in tried:  # two sources agreeing on one URL: its outcome is already known
                attempts.append(_attempt(name, "same_url", None))
                continue
            tried.add(url)
            outcome = self._image(url)
            attempts.append(_attempt(name, outcome["status"], outcome.get("reason")))
            if outcome["status"] == OK:
                return self._poster_row(url, name, outcome, attempts)
            if outcome["status"] == SKIPPED_OFFLINE:
                first_offline = first_offline or (name, url)
            elif first_failure is None:
                first_failure = (name, url, outcome)
        if first_failure is not None:
            name, url, outcome = first_failure
            return self._poster_row(url, name, outcome, attempts)
        if first_offline is not None:
            name, url = first_offline
            outcome = {"status": SKIPPED_OFFLINE, "reason": "offline mode: known URL not fetched"}
            return self._poster_row(url, name, outcome, attempts)
        if offline_skips:
            reason = f"offline mode: {', '.join(offline_skips)} not asked"
            return self._poster_row(
                None, None, {"status": SKIPPED_OFFLINE, "reason": reason}, attempts
            )
        reason = "; ".join(attempts) if attempts else "no poster source configured"
        return self._poster_row(None, None, {"status": NO_SOURCE, "reason": reason[:500]}, attempts)

    def _poster_row(
        self, url: str | None, source: str | None, outcome: Mapping[str, Any], attempts: list[str]
    ) -> dict[str, Any]:
        ok = outcome["status"] == OK
        return {
            "poster_url": url,
            "poster_path": outcome.get("path") if ok else None,
            "poster_status": outcome["status"],
            "poster_source": source,
            "poster_sha256": outcome.get("sha256") if ok else None,
            "poster_width": outcome.get("width") if ok else None,
            "poster_height": outcome.get("height") if ok else None,
            "poster_error": None if ok else self.redact(outcome.get("reason")),
            "poster_attempts": [self.redact(a) for a in attempts],
        }

    # -- lookups -----------------------------------------------------------------------------

    def _lookup(self, source: Source, item: ItemRef) -> Lookup:
        answer = source.request_key(item)
        if isinstance(answer, Lookup):
            return answer
        key = f"{source.name}:{answer}"
        value, shared = self._lookups.do(key, lambda: self._remote_lookup(source, item, key))
        if shared:
            self.counters.add("shared")
        return value

    def _remote_lookup(self, source: Source, item: ItemRef, key: str) -> Lookup:
        if not self.settings.refresh:
            cached = self.cache.get("lookup", key)
            if cached is not None and not should_retry(
                cached.get("status", ""), self.settings.retry_failures
            ):
                self.counters.add("lookup_cache_hits")
                return Lookup(**{k: v for k, v in cached.items() if k in _LOOKUP_FIELDS})
        if self.settings.offline:
            return skipped("offline mode", offline=True)
        with self._disabled_lock:
            disabled = self._disabled.get(source.name)
        if disabled:
            return skipped(disabled)
        try:
            answer = source.fetch(item, self.requester)
        except (DownloadError, HttpStatusError) as exc:
            status, reason = classify_error(exc)
            if isinstance(exc, HttpStatusError) and exc.status_code in (401, 403):
                self._disable(
                    source.name, f"disabled after HTTP {exc.status_code} (check the API key)"
                )
            answer = Lookup(status, reason=f"{source.name}: {reason}")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            # An answer of an unexpected shape: one item's problem, not the run's.
            answer = Lookup(HTTP_ERROR, reason=f"unexpected answer ({type(exc).__name__})")
        answer = Lookup(
            status=answer.status,
            poster_url=self.redact(answer.poster_url),
            description=self.redact(answer.description),
            reason=self.redact(answer.reason),
            extra={k: self.redact(v) for k, v in answer.extra.items()},
        )
        if answer.status != "skipped":
            self.cache.put(
                "lookup", key, {k: v for k, v in asdict(answer).items() if k != "offline"}
            )
        return answer

    def _disable(self, name: str, reason: str) -> None:
        with self._disabled_lock:
            if name not in self._disabled:
                self._disabled[name] = reason
                self.log.warning(
                    f"media source {name} {reason}; skipping it for the rest of this run"
                )

    # -- images ------------------------------------------------------------------------------

    def _image(self, url: str) -> dict[str, Any]:
        value, shared = self._images.do(url, lambda: self._fetch_image(url))
        if shared:
            self.counters.add("shared")
        return value

    def _fetch_image(self, url: str) -> dict[str, Any]:
        if not self.settings.refresh:
            cached = self.cache.get("image", url)
            if cached is not None and not should_retry(
                cached.get("status", ""), self.settings.retry_failures
            ):
                sha = cached.get("sha256")
                if cached.get("status") != OK or (sha and self.store.has(sha)):
                    self.counters.add("image_cache_hits")
                    if sha and cached.get("status") == OK:
                        cached["path"] = str(self.store.path_for(sha))
                    return cached
        if self.settings.offline:
            return {"status": SKIPPED_OFFLINE, "reason": "offline mode: known URL not fetched"}
        outcome = self._download(url)
        self.cache.put("image", url, {k: v for k, v in outcome.items() if k != "path"})
        return outcome

    def _download(self, url: str) -> dict[str, Any]:
        """Fetch, validate and store one poster; every outcome becomes a status, none raises.

        HTTP bodies are read into memory by default (a poster is ~50-500 KB, and skipping the
        temporary file makes the stage ~1.5× faster on this disk). ``stream_to_disk`` sends them
        through ``HttpClient.fetch`` instead: memory-bounded for untrusted hosts, and a body cut
        short is resumed with ``Range``. URLs that a mirror maps to a local directory always go
        through ``fetch``, which reads them in place.
        """
        limit = self.settings.limits.max_bytes
        local = urlsplit(self.client.resolve(url)).scheme not in ("http", "https")
        raw: Path | None = None
        try:
            if local or self.settings.stream_to_disk:
                raw = self.requester.fetch(url, refresh=self.settings.refresh)
                size = raw.stat().st_size
                # Checked before reading: the body was streamed to disk, not into memory.
                data = raw.read_bytes() if size <= limit else b""
            else:
                data = self.requester.get_bytes(url)
                size = len(data)
        except DownloadError as exc:
            status, reason = classify_error(exc)
            return {"status": status, "reason": self.redact(reason)}
        finally:
            if raw is not None:
                self._discard_raw(raw)
        if size > limit:
            return {
                "status": TOO_LARGE,
                "reason": f"{size:,} bytes exceeds the {limit:,}-byte limit",
            }
        try:
            image = process_image(data, self.settings.limits)
        except ImageRejected as rejected:
            return {"status": rejected.status, "reason": rejected.reason}
        path = self.store.put(image)
        return {
            "status": OK,
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "bytes": len(image.data),
            "reencoded": image.reencoded,
            "path": str(path),
        }

    def _discard_raw(self, raw: Path) -> None:
        """Drop the raw download (the validated copy is in the store); never a local source file."""
        cache_dir = self.client.cache_dir.absolute()
        if not raw.absolute().is_relative_to(cache_dir):
            return
        with suppress(OSError):
            raw.unlink()
        with suppress(OSError):
            raw.with_name(raw.name + ".lock").unlink()
        with suppress(OSError):
            raw.parent.rmdir()

    # -- output ------------------------------------------------------------------------------

    @staticmethod
    def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=list(MEDIA_COLUMNS))
        frame = frame.sort_values("item_id", kind="stable").reset_index(drop=True)
        frame["item_id"] = frame["item_id"].astype("int64")
        for column in ("poster_width", "poster_height"):
            frame[column] = pd.array(frame[column].tolist(), dtype="Int32")
        return frame


_LOOKUP_FIELDS = {"status", "poster_url", "description", "reason", "extra"}


# -- summary and checks -----------------------------------------------------------------------


def summarize_media(frame: pd.DataFrame) -> dict[str, Any]:
    """Coverage per modality, status histogram, sources, failure rate, top failure reasons."""
    n = len(frame)
    statuses = frame["poster_status"].value_counts().to_dict()
    attempted = int(frame["poster_status"].isin(ATTEMPTED_STATUSES).sum())
    failures = frame[frame["poster_status"].isin(FAILURE_STATUSES)]
    has_text = frame["description"].notna()
    non_fallback = has_text & (frame["description_source"] != "title_genres_fallback")
    reasons = Counter(
        f"{status}: {error}"
        for status, error in zip(failures["poster_status"], failures["poster_error"], strict=True)
    )
    return {
        "n_items": n,
        "poster_coverage": float((frame["poster_status"] == OK).mean()) if n else 0.0,
        "description_coverage": float(has_text.mean()) if n else 0.0,
        "description_coverage_without_fallback": float(non_fallback.mean()) if n else 0.0,
        "status_counts": {s: int(statuses.get(s, 0)) for s in POSTER_STATUSES}
        | {s: int(c) for s, c in statuses.items() if s not in POSTER_STATUSES},
        "poster_source_counts": {
            str(k): int(v)
            for k, v in frame.loc[frame["poster_status"] == OK, "poster_source"]
            .value_counts()
            .items()
        },
        "description_source_counts": {
            str(k): int(v) for k, v in frame["description_source"].value_counts().items()
        },
        "attempted": attempted,
        "failed": len(failures),
        "failure_rate": len(failures) / attempted if attempted else 0.0,
        "top_failure_reasons": dict(reasons.most_common(10)),
        "unique_posters": int(frame["poster_sha256"].dropna().nunique()),
    }


def media_problems(
    summary: Mapping[str, Any],
    *,
    max_failure_rate: float,
    min_poster_coverage: float = 0.0,
    min_description_coverage: float = 0.0,
) -> list[str]:
    """What makes a collected table unfit for the next stage (empty list: fit)."""
    problems = []
    if summary["failure_rate"] > max_failure_rate:
        problems.append(
            f"poster failure rate {summary['failure_rate']:.1%} ({summary['failed']} of "
            f"{summary['attempted']} fetched) exceeds {max_failure_rate:.1%}"
        )
    if summary["poster_coverage"] < min_poster_coverage:
        problems.append(
            f"poster coverage {summary['poster_coverage']:.1%} is below {min_poster_coverage:.1%}"
        )
    if summary["description_coverage"] < min_description_coverage:
        problems.append(
            f"description coverage {summary['description_coverage']:.1%} is below "
            f"{min_description_coverage:.1%}"
        )
    return problems
