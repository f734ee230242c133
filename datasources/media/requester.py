"""The network as media sources see it: single flight, counters, rate limit, circuit breaker."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from datasources.errors import DownloadError
from datasources.http import HttpClient, HttpStatusError
from datasources.media.sources import classify_error
from datasources.media.throttle import HostRateLimiter, host_of
from datasources.media.types import NETWORK_ERROR, TIMEOUT


class SingleFlight:
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


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n


class Requester:
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
        counters: Counters,
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
