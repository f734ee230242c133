"""Another process holding a DuckDB file open, as a notebook or the DuckDB shell does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held_read_only(database: Path, seconds: float = 120) -> Iterator[None]:
    """A second process keeps ``database`` open read-only while the block runs (so a writer in
    this one cannot take DuckDB's write lock, while reads still share the file)."""
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
         f"read_only=True); print('ready', flush=True); time.sleep({seconds})", str(database)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        yield
    finally:
        reader.kill()
        reader.wait()
