"""Safe, atomic, idempotent extraction of downloaded zip archives.

Why not just ``ZipFile.extractall``:

* it silently rewrites dangerous names (``../x`` becomes ``x``, ``/etc/x`` becomes ``etc/x``)
  instead of refusing them; an archive that tries to escape is corrupt or hostile and should stop
  the pipeline with a clear error, before a single byte is written;
* an interrupted extraction leaves a half-populated directory that a later run would trust;
* re-running a pipeline should not re-extract a 250 MB archive every time.

So: every member is checked first, extraction goes into a sibling temporary directory that is
renamed into place only when complete, and a ``.complete`` marker records which archive (size and
mtime) and which members produced the directory.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasources.errors import MalformedInputError, UnsafeArchiveError
from warehouse.files import exclusive_lock

__all__ = ["MARKER_NAME", "extract_zip", "open_member_text"]

#: Written last, inside the extracted directory; its presence means "complete".
MARKER_NAME = ".complete"
_MARKER_VERSION = 1
_LISTED_MEMBERS = 20  # how many member names an error message shows


def extract_zip(
    zip_path: str | Path,
    dest_dir: str | Path,
    members: Iterable[str] | None = None,
) -> Path:
    """Extract ``zip_path`` (all members, or only ``members``) into ``dest_dir``; return it.

    ``members`` may name files or directories (``"ml-1m/"`` or ``"ml-1m"`` selects everything
    below it). Raises:

    * ``UnsafeArchiveError`` if *any* member of the archive is absolute, contains ``..``, or is a
      symlink - checked before anything is written;
    * ``MalformedInputError`` if the file is not a readable zip, or a named member is missing
      (the message lists what the archive contains).

    Idempotent: if ``dest_dir/.complete`` matches the archive's size and mtime and covers the
    requested members, nothing is done. A ``dest_dir`` without a matching marker (an interrupted
    or stale extraction) is replaced as a whole; when the existing marker names other members,
    the new extraction includes them too, so earlier callers keep their files.
    """
    zip_path = Path(zip_path)
    dest = Path(dest_dir)
    wanted = None if members is None else sorted(set(members))
    if not zip_path.is_file():
        raise FileNotFoundError(f"archive {zip_path} does not exist")

    if _marker_covers(dest, zip_path, wanted):
        return dest
    with _open_zip(zip_path) as archive:
        infos = archive.infolist()
        # Validate the whole archive (one hostile member condemns it) and the requested names
        # before creating anything on disk, not even the destination's parent or lock file.
        for info in infos:
            _check_member(zip_path, info.filename, info)
        if wanted is not None:
            _select(zip_path, infos, wanted)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(dest.parent / f".{dest.name}.lock"):
            if _marker_covers(dest, zip_path, wanted):  # another process finished meanwhile
                return dest
            previous = _read_marker(dest)
            if (
                wanted is not None
                and previous is not None
                and previous.get("members") is not None
                and _same_archive(previous, zip_path)
            ):
                # Keep what an earlier caller asked for: extract the union.
                wanted = sorted(set(wanted) | set(previous["members"]))
            selected = infos if wanted is None else _select(zip_path, infos, wanted)
            _extract_atomically(zip_path, archive, selected, dest, wanted)
    return dest


def open_member_text(
    zip_path: str | Path,
    member: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    newline: str | None = None,
) -> io.TextIOWrapper:
    """Open one member as a streamed text file (no extraction). Closing it closes the archive.

    Useful for large single files (ratings) that are parsed once. Corruption inside the member
    surfaces while reading, as ``zipfile.BadZipFile``.
    """
    archive = _open_zip(zip_path)
    try:
        info = archive.getinfo(member)
    except KeyError:
        names = archive.namelist()
        archive.close()
        raise MalformedInputError(zip_path, None, _missing_message([member], names)) from None
    try:
        raw = archive.open(info)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        archive.close()
        raise MalformedInputError(zip_path, None, f"cannot open member {member!r}: {exc}") from None
    return _MemberText(raw, archive, encoding=encoding, errors=errors, newline=newline)


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _MemberText(io.TextIOWrapper):
    """Text stream over a zip member that also closes the ``ZipFile`` it came from."""

    def __init__(self, raw: Any, archive: zipfile.ZipFile, **kwargs: Any) -> None:
        super().__init__(raw, **kwargs)
        self._archive = archive

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._archive.close()


def _open_zip(zip_path: str | Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise MalformedInputError(zip_path, None, f"not a valid zip archive: {exc}") from None


def _check_member(zip_path: Path, name: str, info: zipfile.ZipInfo) -> None:
    """Refuse names that would land outside the destination, and symlinks (which could later)."""
    normalized = name.replace("\\", "/")  # Windows-made archives may use backslashes

    def refuse(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{zip_path}: refusing member {name!r}: {why}")

    if "\x00" in name:
        raise refuse("NUL byte in name")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise refuse("absolute path")
    if ".." in normalized.split("/"):
        raise refuse("path traversal ('..')")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise refuse("symbolic link")
    # Belt and braces: after normalisation the path must still be strictly inside dest.
    clean = posixpath.normpath(normalized)
    if clean in ("", ".") and not info.is_dir():
        raise refuse("empty file name")
    if clean.startswith("../") or clean == "..":
        raise refuse("escapes the destination")


def _select(
    zip_path: Path, infos: list[zipfile.ZipInfo], wanted: list[str]
) -> list[zipfile.ZipInfo]:
    """Infos for the wanted names; a name matching a directory selects everything under it."""
    chosen: dict[str, zipfile.ZipInfo] = {}
    missing: list[str] = []
    for name in wanted:
        prefix = name.rstrip("/") + "/"
        matches = [i for i in infos if i.filename == name or i.filename.startswith(prefix)]
        if not matches:
            missing.append(name)
        for info in matches:
            chosen[info.filename] = info
    if missing:
        names = [i.filename for i in infos]
        raise MalformedInputError(zip_path, None, _missing_message(missing, names))
    return list(chosen.values())


def _missing_message(missing: list[str], names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_LISTED_MEMBERS])
    more = f", ... ({len(names) - _LISTED_MEMBERS} more)" if len(names) > _LISTED_MEMBERS else ""
    what = ", ".join(repr(m) for m in missing)
    return f"member(s) {what} not in archive; it contains: {shown or '(nothing)'}{more}"


def _extract_atomically(
    zip_path: Path,
    archive: zipfile.ZipFile,
    infos: list[zipfile.ZipInfo],
    dest: Path,
    wanted: list[str] | None,
) -> None:
    """Extract into a sibling temp dir, write the marker, then swap it in for ``dest``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    trash: Path | None = None
    try:
        for info in infos:
            target = tmp.joinpath(*posixpath.normpath(info.filename.replace("\\", "/")).split("/"))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise MalformedInputError(
                    zip_path, None, f"not a valid zip archive: member {info.filename!r}: {exc}"
                ) from None
        (tmp / MARKER_NAME).write_text(
            json.dumps(_marker_for(zip_path, wanted), sort_keys=True), encoding="utf-8"
        )
        if dest.exists() or dest.is_symlink():
            # A directory cannot be os.replace()d onto a non-empty one: move the old aside first.
            trash = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(dest, trash)
        os.rename(tmp, dest)
    finally:
        for leftover in (tmp, trash):
            if leftover is not None and (leftover.exists() or leftover.is_symlink()):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def _marker_for(zip_path: Path, wanted: list[str] | None) -> dict[str, Any]:
    st = zip_path.stat()
    return {
        "version": _MARKER_VERSION,
        "archive": zip_path.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,  # a re-download (os.replace) always changes it
        "members": wanted,  # None = everything
    }


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_archive(marker: dict[str, Any], zip_path: Path) -> bool:
    current = _marker_for(zip_path, None)
    return all(marker.get(k) == current[k] for k in ("version", "archive", "size", "mtime_ns"))


def _marker_covers(dest: Path, zip_path: Path, wanted: list[str] | None) -> bool:
    marker = _read_marker(dest)
    if marker is None or not _same_archive(marker, zip_path):
        return False
    done = marker.get("members")
    if done is None:
        return True
    if wanted is None:
        return False
    # A previously extracted directory ("ml-1m/") covers every name below it.
    prefixes = tuple(d.rstrip("/") + "/" for d in done)
    return all(w in done or w.startswith(prefixes) for w in wanted)
