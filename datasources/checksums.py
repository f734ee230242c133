"""Checksums of downloaded files: GroupLens-style ``.md5`` files and streamed digests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

_BSD_MD5 = re.compile(r"^MD5\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{32})\s*$")
_GNU_MD5 = re.compile(r"^(?P<hex>[0-9a-fA-F]{32})(?:\s+\*?(?P<name>.+?))?\s*$")


def parse_md5_text(text: str, filename: str | None = None) -> str:
    """Extract an md5 hex digest from the text of a checksum file.

    Accepts BSD ``MD5 (ml-1m.zip) = <hex>`` (what GroupLens publishes), GNU ``<hex>  ml-1m.zip``
    and a bare ``<hex>``. When the file lists several files, ``filename`` picks the line.
    Returns the lower-case digest; raises ``ValueError`` when none (or no unambiguous one) exists.
    """
    found: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _BSD_MD5.match(line) or _GNU_MD5.match(line)
        if match:
            found.append((match.group("name"), match.group("hex").lower()))
    if not found:
        raise ValueError("no md5 digest found in checksum file")
    if len(found) == 1:
        return found[0][1]
    if filename is not None:
        for name, digest in found:
            if name is not None and Path(name.strip()).name == filename:
                return digest
    raise ValueError(f"checksum file lists {len(found)} digests and none is for {filename!r}")


def file_digests(path: Path, algorithms: set[str]) -> dict[str, str]:
    """Hash ``path`` once for every algorithm in ``algorithms`` (streamed, constant memory)."""
    hashers = {
        name: hashlib.new(name, usedforsecurity=False)  # integrity check, not security
        for name in algorithms
    }
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def first_mismatch(path: Path, checks: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Return ``(algorithm, expected, actual)`` for the first failing check, or ``None``."""
    if not checks:
        return None
    actual = file_digests(path, set(checks))
    for algorithm, expected in checks.items():
        if actual[algorithm] != expected:
            return algorithm, expected, actual[algorithm]
    return None
