"""The HTTP layer every download and API call in the project goes through.

Why one module: dataset archives (MovieLens, Amazon, ...), media APIs and Wikidata SPARQL all need
the same things, and getting them right once is cheaper than getting them half right five times:

* one ``requests.Session`` whose adapter retries connect/read errors and 429/5xx answers with
  exponential backoff, honouring ``Retry-After`` but never sleeping longer than a cap
  (a misbehaving server must not park a pipeline run for hours);
* ``(connect, read)`` timeouts and an identifying ``User-Agent`` on every request (Wikidata and
  GroupLens ask for one; anonymous scrapers get blocked);
* a content-addressed download cache with atomic writes (``<final>.part`` then ``os.replace``), so
  nothing partial ever sits at a path a later stage would trust;
* resumable downloads (``Range: bytes=N-``) after a truncated body or a crash;
* checksum verification (md5, sha256 or a GroupLens ``.md5`` file) before anything is cached;
* mirrors (``KG4REC_MIRROR``) so offline machines and tests can serve every source from a local
  directory or another base URL without touching the code that names the canonical URL;
* query strings are never logged or put into exception messages, because API keys travel there.

URL handling (mirrors, redaction) lives in :mod:`datasources.urls` and digests in
:mod:`datasources.checksums`; this file is the client. It stays above 400 lines because
:class:`HttpClient` is one state machine (cache lookup, lock, ranged resume, verify, publish)
that reads best in one place. Nothing here imports Dagster: it is plain Python, testable
against a loopback server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util import Retry

from datasources.checksums import first_mismatch, parse_md5_text
from datasources.errors import ChecksumMismatchError, DownloadError, UpstreamUnreachableError
from datasources.lifecycle import ClosesOnExit
from datasources.urls import (
    WILDCARD,
    describe,
    has_scheme,
    install_log_redaction,
    join_target,
    parse_mirrors,
    safe_url,
    with_params,
)
from warehouse.files import exclusive_lock

__all__ = [
    "DEFAULT_USER_AGENT",
    "MIRROR_ENV",
    "HttpClient",
    "HttpSettings",
    "HttpStatusError",
    "parse_md5_text",
    "parse_mirrors",
    "safe_url",
]

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "multi-kg4rec/0.1 (+https://github.com/multi-kg4rec; research pipeline)"
MIRROR_ENV = "KG4REC_MIRROR"

#: Statuses worth retrying: rate limiting and transient server/proxy failures.
RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) into (start, total)."""
    if not value:
        return None, None
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


# --------------------------------------------------------------------------------------------
# Settings and retry policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSettings:
    """Knobs of the HTTP layer. Defaults suit real servers; tests shrink timeouts and backoff."""

    user_agent: str = field(default=DEFAULT_USER_AGENT, metadata={"doc": "User-Agent header."})
    connect_timeout: float = field(default=10.0, metadata={"doc": "Seconds to connect."})
    read_timeout: float = field(default=60.0, metadata={"doc": "Seconds between bytes read."})
    retries: int = field(default=5, metadata={
        "doc": "Total retries (connect, read, status) and resume attempts per download."})
    backoff_factor: float = field(default=0.5, metadata={
        "doc": "Exponential backoff between retries: factor * 2^(n-1) seconds."})
    max_retry_after: float = field(default=120.0, metadata={
        "doc": "Cap on an honoured Retry-After (seconds)."})
    progress: bool = field(default=True, metadata={"doc": "tqdm progress bar on downloads."})
    mirrors: Mapping[str, str] = field(default_factory=dict, metadata={
        "doc": "Upstream URL prefix -> local directory or other base URL."})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpSettings:
        """Settings with ``mirrors`` read from ``$KG4REC_MIRROR`` (see :func:`parse_mirrors`).

        The client never reads the environment by itself, so tests and library callers stay
        deterministic; entry points (Dagster resources, CLIs) call this instead.
        """
        env = os.environ if environ is None else environ
        settings = cls(**overrides)
        env_mirrors = parse_mirrors(env.get(MIRROR_ENV))
        if env_mirrors:
            # Explicit overrides win over the environment for the same prefix.
            settings = replace(settings, mirrors={**env_mirrors, **dict(settings.mirrors)})
        return settings


class _CappedRetry(Retry):
    """``urllib3`` Retry that never sleeps longer than ``max_retry_after`` for ``Retry-After``.

    urllib3 >= 2.6 has ``retry_after_max`` but older 2.x (allowed by pyproject) do not, and its
    default is six hours; overriding :meth:`get_retry_after` works on every 2.x. ``new`` is
    overridden because urllib3 rebuilds the object after every attempt from its own known
    constructor arguments, which would drop ours.
    """

    def __init__(self, *args: Any, max_retry_after: float = 120.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> _CappedRetry:
        clone = super().new(**kw)
        clone.max_retry_after = self.max_retry_after
        return clone

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        if seconds is None:
            return None
        if seconds > self.max_retry_after:
            log.info(
                "server asked to wait %.0fs (Retry-After); capping at %.1fs",
                seconds,
                self.max_retry_after,
            )
        return min(seconds, self.max_retry_after)


class HttpStatusError(DownloadError):
    """A non-2xx answer that survived the retries. ``status_code`` lets callers treat 404 apart."""

    def __init__(self, url: str, status_code: int, reason: str = "") -> None:
        self.url = url
        self.status_code = status_code
        detail = f" {reason}" if reason else ""
        super().__init__(f"HTTP {status_code}{detail} for {url}")


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class HttpClient(ClosesOnExit):
    """Session, retries, cache, resume, checksums and mirrors in one object.

    Use as a context manager (or call :meth:`close`) so pooled connections are released.
    """

    def __init__(self, cache_dir: str | Path, settings: HttpSettings | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.settings = settings or HttpSettings()
        self._timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        retries = self.settings.retries
        retry = _CappedRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=self.settings.backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            # Return the last 5xx/429 response instead of raising MaxRetryError, so the
            # error we raise can name the status code.
            raise_on_status=False,
            max_retry_after=self.settings.max_retry_after,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session = requests.Session()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = self.settings.user_agent
        # Sorted longest first: the most specific mirror prefix wins.
        self._mirrors = sorted(
            ((p, t) for p, t in self.settings.mirrors.items() if p != WILDCARD),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._wildcard = self.settings.mirrors.get(WILDCARD)
        install_log_redaction()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()


    # -- mirrors -----------------------------------------------------------------------------

    def resolve(self, url: str) -> str:
        """Return where ``url`` is actually read from after applying the mirror map.

        The longest matching prefix is replaced by its target; with the ``"*"`` mirror,
        ``https://host/a/b.zip`` becomes ``<target>/host/a/b.zip``. A target without a scheme is a
        local directory and becomes a ``file://`` URL. Plain local paths are returned unchanged.
        """
        if not has_scheme(url):
            return url
        for prefix, target in self._mirrors:
            if url.startswith(prefix):
                return join_target(target, url[len(prefix) :])
        if self._wildcard is not None:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https"):
                rest = parts.netloc.rpartition("@")[2] + parts.path
                if parts.query and has_scheme(self._wildcard):
                    rest += "?" + parts.query  # a file path cannot carry a query
                return join_target(self._wildcard, rest)
        return url

    # -- plain requests ----------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> requests.Response:
        """One GET through the retrying session; non-2xx after retries raises ``HttpStatusError``.

        Error messages name the URL with query values replaced by ``***``; the underlying
        exception is not chained because its text and attributes embed the full URL.
        """
        target = self.resolve(url)
        shown = safe_url(with_params(url, params))
        if urlsplit(target).scheme not in ("http", "https"):
            raise DownloadError(f"GET {shown}: mirrored to {safe_url(target)}, which is not HTTP")
        try:
            response = self._session.get(
                target,
                params=params,
                headers=dict(headers or {}),
                timeout=timeout if timeout is not None else self._timeout,
            )
        except requests.RequestException as exc:
            raise DownloadError(
                f"GET {shown} failed: {describe(exc, with_params(target, params))}"
            ) from None
        if not response.ok:
            status, reason = response.status_code, response.reason or ""
            response.close()
            raise HttpStatusError(shown, status, reason) from None
        return response

    def get_json(
        self,
        url: str,
        *,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET and decode JSON; an undecodable body raises ``DownloadError``."""
        merged = {"Accept": "application/json", **dict(headers or {})}
        response = self.get(url, params=params, headers=merged)
        try:
            return response.json()
        except ValueError as exc:
            shown = safe_url(with_params(url, params))
            raise DownloadError(f"invalid JSON from {shown}: {exc}") from None

    # -- downloads ---------------------------------------------------------------------------

    def cache_path(self, url: str, filename: str | None = None) -> Path:
        """Where ``fetch`` caches ``url``: ``cache_dir/<sha1(url)[:16]>/<filename>``.

        Keyed on the *original* URL so a mirror and the origin share one cache entry.
        """
        key = hashlib.sha1(url.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
        name = filename or unquote(Path(urlsplit(url).path).name) or "download"
        return self.cache_dir / key / name

    def fetch(
        self,
        url: str,
        *,
        md5: str | None = None,
        md5_url: str | None = None,
        sha256: str | None = None,
        filename: str | None = None,
        refresh: bool = False,
    ) -> Path:
        """Return a local path to the verified bytes of ``url``.

        ``file://`` URLs and plain paths (after mirroring) are used in place. HTTP(S) sources go
        through the cache (see :meth:`cache_path`): a cached copy that verifies is returned without
        any request; otherwise the body is streamed to ``<final>.part`` (resuming an existing one
        with ``Range``), verified, and atomically renamed. ``md5_url`` names a checksum file (the
        GroupLens ``.md5`` format or GNU md5sum); it is itself cached, and ``refresh=True``
        re-fetches both.
        """
        checks: dict[str, str] = {}
        if md5:
            checks["md5"] = md5.strip().lower()
        if sha256:
            checks["sha256"] = sha256.strip().lower()
        if md5_url:
            published = self._published_md5(md5_url, url, filename, refresh=refresh)
            if "md5" in checks and checks["md5"] != published:
                raise ChecksumMismatchError(safe_url(url), checks["md5"], published, "md5")
            checks["md5"] = published

        source = self.resolve(url)
        if not has_scheme(source) or urlsplit(source).scheme == "file":
            return self._local(url, source, checks)
        if urlsplit(source).scheme not in ("http", "https"):
            raise DownloadError(f"unsupported URL scheme in {safe_url(source)}")

        final = self.cache_path(url, filename)
        part = final.with_name(final.name + ".part")
        with exclusive_lock(final.with_name(final.name + ".lock")):
            if final.exists() and not refresh:
                bad = first_mismatch(final, checks)
                if bad is None:
                    log.info("cache hit for %s: %s", safe_url(url), final)
                    return final
                log.warning("cached %s fails its %s check; downloading again", final, bad[0])
                final.unlink()
            if refresh and part.exists():
                part.unlink()  # a stale partial may belong to an older version of the file
            shown = safe_url(url) if source == url else f"{safe_url(url)} (via {safe_url(source)})"
            self._download(source, part, shown=shown)
            bad = first_mismatch(part, checks)
            if bad is not None:
                part.unlink()  # never keep (or later resume from) bytes known to be wrong
                raise ChecksumMismatchError(safe_url(url), bad[1], bad[2], bad[0])
            os.replace(part, final)
        log.info("downloaded %s to %s", safe_url(url), final)
        return final

    def _published_md5(
        self, md5_url: str, data_url: str, filename: str | None, *, refresh: bool
    ) -> str:
        path = self.fetch(md5_url, refresh=refresh)
        name = filename or unquote(Path(urlsplit(data_url).path).name)
        try:
            return parse_md5_text(path.read_text(encoding="utf-8", errors="replace"), name)
        except ValueError as exc:
            raise DownloadError(f"cannot read checksum file {safe_url(md5_url)}: {exc}") from None

    def _local(self, url: str, source: str, checks: Mapping[str, str]) -> Path:
        """Use a local file in place (no copy): it may be gigabytes and is already on disk."""
        if has_scheme(source):
            parts = urlsplit(source)
            if parts.netloc not in ("", "localhost"):
                raise DownloadError(f"file URL with a remote host is not supported: {source}")
            path = Path(url2pathname(parts.path))
        else:
            path = Path(source).expanduser()
        if not path.is_file():
            via = f" (mirror of {safe_url(url)})" if source != url else ""
            raise DownloadError(f"local source {path} does not exist{via}")
        bad = first_mismatch(path, checks)
        if bad is not None:
            raise ChecksumMismatchError(str(path), bad[1], bad[2], bad[0])
        log.info("using local file %s", path)
        return path

    def _download(self, source: str, part: Path, *, shown: str) -> None:
        """Stream ``source`` into ``part``, resuming after truncation, until it is complete.

        urllib3 already retries failures *before* a response arrives (connect, read timeout,
        429/5xx). A body that breaks off midway is handled here: the bytes received are kept and
        the next attempt asks for the rest with ``Range``. Up to ``settings.retries`` such
        resumptions, with the same exponential backoff, before giving up.
        """
        part.parent.mkdir(parents=True, exist_ok=True)
        attempt = 0
        while True:
            offset = part.stat().st_size if part.exists() else 0
            # identity: Range offsets and Content-Length must count the bytes we store.
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                log.info("resuming %s at byte %d", shown, offset)
            else:
                log.info("downloading %s", shown)
            try:
                response = self._session.get(
                    source, headers=headers, stream=True, timeout=self._timeout
                )
            except requests.ConnectionError as exc:
                raise UpstreamUnreachableError(shown, describe(exc, source)) from None
            except requests.RequestException as exc:
                raise DownloadError(f"GET {shown} failed: {describe(exc, source)}") from None

            with response:
                status = response.status_code
                if status == 416 and offset:
                    # Our .part is as long as (or longer than) the file: complete, or junk.
                    _, total = _content_range(response.headers.get("Content-Range"))
                    if total == offset:
                        return
                    part.unlink()
                    error = f"HTTP 416 for a {offset}-byte partial file"
                elif status not in (200, 206):
                    raise HttpStatusError(shown, status, response.reason or "")
                else:
                    mode = "wb"
                    if status == 206:
                        start, _ = _content_range(response.headers.get("Content-Range"))
                        if start == offset:
                            mode = "ab"
                        else:
                            # A range we did not ask for cannot be appended; start over.
                            part.unlink(missing_ok=True)
                            attempt += 1
                            if attempt > self.settings.retries:
                                raise DownloadError(
                                    f"{shown}: server answered Range bytes={offset}- with "
                                    f"Content-Range {response.headers.get('Content-Range')!r}"
                                )
                            continue
                    elif offset:
                        log.info("%s: server ignored Range; restarting from byte 0", shown)
                        offset = 0
                    error = self._stream_body(response, part, mode, offset, shown)
                    if error is None:
                        return

            attempt += 1
            if attempt > self.settings.retries:
                size = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {shown} failed after {attempt} attempts: {error} "
                    f"({size} bytes kept in {part} for a later resume)"
                )
            log.warning("download of %s interrupted (%s); will resume", shown, error)
            time.sleep(self._backoff(attempt))

    def _stream_body(
        self, response: requests.Response, part: Path, mode: str, offset: int, shown: str
    ) -> str | None:
        """Write the body to ``part``; return ``None`` if complete, else why it broke off."""
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        # Only compare byte counts when the wire bytes are what we store.
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        written = 0
        try:
            with (
                part.open(mode) as fh,
                tqdm(
                    total=offset + length if length is not None else None,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name.removesuffix(".part"),
                    disable=not self.settings.progress,
                    leave=False,
                ) as bar,
            ):
                # Decoded content (a server that compressed despite "identity") can't be resumed:
                # Range offsets would count encoded bytes. Otherwise read the raw bytes.
                chunks = response.iter_content(_CHUNK) if encoded else _raw_chunks(response.raw)
                for chunk in chunks:
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            ConnectionError,
            TimeoutError,
        ) as exc:
            # Network failure mid-body; disk errors (plain OSError) propagate as themselves.
            if encoded:
                part.unlink(missing_ok=True)
            return describe(exc, response.url)
        if length is not None and not encoded and written < length:
            return f"body ended after {written} of {length} bytes"
        return None

    def _backoff(self, attempt: int) -> float:
        """Same schedule urllib3 uses between retries (factor * 2**(n-1), capped at 120 s)."""
        if attempt <= 1:
            return 0.0
        return min(120.0, self.settings.backoff_factor * (2 ** (attempt - 1)))


# --------------------------------------------------------------------------------------------
# Internal helpers
# --------------------------------------------------------------------------------------------


def _raw_chunks(raw: Any) -> Iterator[bytes]:
    """Yield body bytes as they arrive, undecoded.

    ``read1`` returns whatever is available, so when the body breaks off every byte received
    before the break has already been yielded (and written to ``.part``). ``iter_content`` reads
    fixed-size blocks and drops a partially filled block when the connection dies, which would
    make resuming pointless for bodies smaller than the block size. ``read1`` is urllib3 >= 2.3;
    older versions fall back to ``stream``.
    """
    try:
        data = raw.read1(_CHUNK, decode_content=False)
    except (AttributeError, NotImplementedError, TypeError):
        yield from raw.stream(_CHUNK, decode_content=False)
        return
    while data:
        yield data
        data = raw.read1(_CHUNK, decode_content=False)
