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
import time
from collections.abc import Callable, Iterator
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
NEW_FILE_MODE = 0o666 & ~_current_umask()


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_directory(directory: Path) -> None:
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
            fsync_file(tmp)
        os.chmod(tmp, NEW_FILE_MODE)  # mkstemp creates 0600; readers in other accounts
        os.replace(tmp, target)
        if durable:
            fsync_directory(target.parent)
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
def exclusive_lock(lock_path: Path, *, timeout_s: float | None = None, holder: str = "",
                   on_wait: Callable[[str], None] | None = None) -> Iterator[str | None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block.

    Serialises work on one cache entry, extraction directory or lake dataset across threads and
    processes: Dagster may run two steps (or two runs) that write the same thing at once.

    ``timeout_s`` None waits for ever; otherwise :class:`TimeoutError` after that long, naming
    the holder. ``holder`` (e.g. the Dagster run id) is written into the lock file while it is
    held, so the one waiting can say whom it waits for (``on_wait`` hears it once). The kernel
    drops the lock when its process dies, ``kill -9`` included: a lock never outlives its owner.

    Yields the previous holder's name when that holder died holding the lock (its name is still
    in the file, not marked released), else None: the caller may clean up after it.
    """
    if fcntl is None:  # pragma: no cover
        yield None
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as fh:
        if timeout_s is None and on_wait is None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        else:
            _wait_for_lock(fh, lock_path, timeout_s, on_wait)
        try:
            died_holding = None
            if holder:
                fh.seek(0)
                previous = fh.read().strip()
                if previous and not previous.startswith(_RELEASED):
                    died_holding = previous.rsplit(" (pid ", 1)[0]
                _record(fh, f"{holder} (pid {os.getpid()})")
            yield died_holding
            if holder:
                _record(fh, f"{_RELEASED}{holder}")
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_RELEASED = "released by "


def _record(fh, text: str) -> None:
    fh.seek(0)
    fh.truncate()
    fh.write(text + "\n")
    fh.flush()


def _lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text if text and not text.startswith(_RELEASED) else "another process"


def _wait_for_lock(fh, lock_path: Path, timeout_s: float | None,
                   on_wait: Callable[[str], None] | None) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if on_wait is not None and not told:
            on_wait(f"waiting for {lock_path}: held by {_lock_holder(lock_path)}")
            told = True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{lock_path} is still held by {_lock_holder(lock_path)} after "
                               f"{timeout_s:g} s; that writer must finish (or die) first")
        time.sleep(0.1)
