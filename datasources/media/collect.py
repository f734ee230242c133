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

Over 400 lines: the chains, the single-flight table, the cache and the redactor all act on
the same per-item outcome row; apart, each would have to re-derive what the others decided.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from tqdm.auto import tqdm

from datasources.errors import DownloadError
from datasources.http import HttpClient, HttpStatusError
from datasources.media.cache import FetchCache, should_retry
from datasources.media.images import ImageRejected, ImageStore, process_image
from datasources.media.local import LocalMetadata
from datasources.media.requester import Counters, Requester, SingleFlight
from datasources.media.settings import (
    MediaSettings,
    Redactor,
)
from datasources.media.sources import (
    TEXT_KINDS,
    Source,
    classify_error,
    make_sources,
    skipped,
)
from datasources.media.table import (
    MEDIA_COLUMNS,
)
from datasources.media.throttle import HostRateLimiter
from datasources.media.types import (
    HTTP_ERROR,
    NO_SOURCE,
    OK,
    SKIPPED_OFFLINE,
    TOO_LARGE,
    ItemRef,
    Lookup,
)

__all__ = ["MediaCollector", "MediaRun"]

log = logging.getLogger(__name__)

@dataclass
class MediaRun:
    """The collected table and what it cost."""

    frame: pd.DataFrame
    stats: dict[str, Any]


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
        self.counters = Counters()
        self.requester = Requester(
            client, self.limiter, self.counters, settings.host_failure_limit
        )
        self._lookups = SingleFlight()
        self._images = SingleFlight()
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
        if self._is_local(url):
            # A file on this machine: read it every run, offline too, never from the cache
            # (a user who replaces an image at the same path expects the new one).
            return self._download(url)
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

    def _is_local(self, url: str) -> bool:
        return urlsplit(self.client.resolve(url)).scheme not in ("http", "https")

    def _download(self, url: str) -> dict[str, Any]:
        """Fetch, validate and store one poster; every outcome becomes a status, none raises.

        HTTP bodies are read into memory by default (a poster is ~50-500 KB, and skipping the
        temporary file makes the stage ~1.5× faster on this disk). ``stream_to_disk`` sends them
        through ``HttpClient.fetch`` instead: memory-bounded for untrusted hosts, and a body cut
        short is resumed with ``Range``. URLs that a mirror maps to a local directory always go
        through ``fetch``, which reads them in place.
        """
        limit = self.settings.limits.max_bytes
        local = self._is_local(url)
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


