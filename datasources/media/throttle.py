"""A per-host rate limit shared by all worker threads.

Media APIs publish request budgets per client (OMDb: 1,000/day on the free key; TMDB: ~50/s;
Wikimedia asks for "a reasonable rate"), and image CDNs throttle bursts with 429s. Retries with
``Retry-After`` (the HTTP layer) repair an occasional 429; this limiter avoids provoking them in
the first place when eight threads hit one host.

It is a GCRA token bucket: ``rate`` requests per second on average with bursts of up to
``burst``. A thread *reserves* its slot under the lock and sleeps outside it, so waiting threads
never serialise on the lock and slots are handed out in arrival order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

__all__ = ["HostRateLimiter", "host_of"]


def host_of(url: str) -> str:
    """``host[:port]`` of ``url`` (lower-case); ``""`` for local paths and ``file://`` URLs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https"):
        return ""
    return parts.netloc.rpartition("@")[2].lower()


class HostRateLimiter:
    """``rate`` requests/second per host (``None`` or ``<= 0``: unlimited), ``burst`` at once.

    ``per_host`` overrides the rate for given hosts (``{"www.omdbapi.com": 2}``); an override of
    0 lifts the limit for that host. ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        burst: int = 1,
        per_host: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = rate if rate and rate > 0 else None
        self.burst = burst
        self.per_host = {h.lower(): r for h, r in (per_host or {}).items()}
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}  # theoretical arrival time of the next request per host
        self.waited_s = 0.0  # total time threads spent waiting (reported in metadata)

    def rate_for(self, host: str) -> float | None:
        rate = self.per_host.get(host, self.rate)
        return rate if rate and rate > 0 else None

    @property
    def enabled(self) -> bool:
        return self.rate is not None or any(r and r > 0 for r in self.per_host.values())

    def acquire(self, host: str) -> float:
        """Block until a request to ``host`` may start; return the seconds waited."""
        rate = self.rate_for(host) if host else None
        if rate is None:
            return 0.0
        interval = 1.0 / rate
        tolerance = (self.burst - 1) * interval
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(host, now), now)
            wait = max(0.0, tat - tolerance - now)
            self._tat[host] = tat + interval
            self.waited_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait
