"""The on-disk memory of what the media stage already asked and what it got back.

Two kinds of entries, both small JSON values in one SQLite file:

* ``lookup``: a source's answer for an item (``omdb_api:i=tt0114709:plot=full`` → poster URL,
  plot, status). Keyed by source and *id*, never by request URL, so API keys cannot end up in
  the cache and a changed base URL (a mirror) does not invalidate anything.
* ``image``: the outcome of fetching a poster URL (status, sha256 of the stored file, size).

A re-run consults this before any request, so only what is missing — or failed, per the retry
policy — is fetched again; ``refresh`` ignores it. SQLite rather than one file per entry: 5,000
items would otherwise mean 10,000 small files and as many fsyncs; WAL mode keeps writers from
blocking readers, and every write is a single atomic statement (a crash loses at most that one).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from datasources.lifecycle import ClosesOnExit
from datasources.media.types import OK, TRANSIENT_STATUSES

__all__ = ["RETRY_POLICIES", "FetchCache", "should_retry"]

#: ``transient``: retry timeouts, 5xx/429 and network errors (default); ``all``: retry every
#: failure, 404s included; ``none``: trust every cached outcome.
RETRY_POLICIES = ("transient", "all", "none")
_SCHEMA_VERSION = 1


def should_retry(status: str, policy: str) -> bool:
    """Whether a cached outcome with ``status`` is asked again under ``policy``."""
    if policy not in RETRY_POLICIES:
        raise ValueError(f"retry policy must be one of {RETRY_POLICIES}, not {policy!r}")
    if status in (OK, "skipped"):
        return False
    if policy == "all":
        return True
    if policy == "transient":
        return status in TRANSIENT_STATUSES
    return False


class FetchCache(ClosesOnExit):
    """Thread-safe key/value store of lookup and image outcomes (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared under a lock: SQLite serialises writers anyway, and a
        # connection per thread would need closing from the threads that opened them.
        # timeout: two dataset partitions materialised at once share this file; SQLite makes the
        # second writer wait (rather than fail) while the first one commits.
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "PRAGMA synchronous=NORMAL"
        )  # durable enough for a cache, no fsync per row
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS entries ("
            " kind TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,"
            " value TEXT NOT NULL, updated REAL NOT NULL, version INTEGER NOT NULL,"
            " PRIMARY KEY (kind, key))"
        )

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value, version FROM entries WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        if row is None or row[1] != _SCHEMA_VERSION:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None  # a damaged entry is simply asked again
        return value if isinstance(value, dict) else None

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        payload = json.dumps(value, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO entries (kind, key, status, value, updated, version)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (kind, key, str(value.get("status", "")), payload, time.time(), _SCHEMA_VERSION),
            )

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return self._conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            return self._conn.execute(
                "SELECT count(*) FROM entries WHERE kind = ?", (kind,)
            ).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

