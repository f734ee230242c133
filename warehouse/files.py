"""The one atomic file write of the project: write beside the target, then rename over it.

Every file a reader may open while it is being replaced — lake tables, checkpoints, caches,
posters — goes through :func:`atomic_path`: the data is written to a temporary file in the
target's directory, flushed to disk, given the permissions a normal new file would have, and
renamed into place (``os.replace`` is atomic on POSIX). A crash at any point leaves the previous
file or the new one, never a half-written one, and no temporary file survives an exception.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere concurrent writers of one path are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover - not exercised on Linux
    fcntl = None  # type: ignore[assignment]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import (single-threaded): ``os.umask`` can only be read by setting it.
_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target``.

    ``durable``: fsync the file and its directory before and after the rename, so the new
    version survives a power cut too (content-addressed caches that re-check sizes may skip it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp creates 0600; readers in other accounts
        os.replace(tmp, target)
        if durable:
            _fsync_directory(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | Path, data: bytes, *, durable: bool = True) -> Path:
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_json(target: str | Path, value: Any, **dump_options: Any) -> Path:
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, **dump_options)
    return Path(target)


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block.

    Serialises work on one cache entry or extraction directory across threads and processes:
    Dagster may run two steps that need the same archive at once, and without the lock both
    would append to the same ``.part`` file or extract into the same directory.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
