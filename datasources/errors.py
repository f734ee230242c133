"""Errors that name the exact place in a source file where the input went wrong."""

from __future__ import annotations

from pathlib import Path


class MalformedInputError(ValueError):
    """A line of a source file could not be parsed.

    The message always starts with ``file:line`` so a user can open the file at the right place.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class DownloadError(RuntimeError):
    """A source could not be fetched (after retries) or failed verification."""


class UpstreamUnreachableError(DownloadError):
    """The host of a source could not be reached at all (no network, DNS, refused): one line
    that says so and how to run without it, instead of a retry traceback."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(
            f"cannot reach {url} ({reason}). Without a network run offline "
            "(make run CONFIG=configs/offline.yaml, the data in ../shared/data) or point the "
            "upstream at a mirror (KG4REC_MIRROR, README: 'Offline data, mirrors and firewalls').")


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not match the published checksum."""

    def __init__(self, url: str, expected: str, actual: str, algorithm: str = "md5") -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(f"{algorithm} mismatch for {url}: expected {expected}, got {actual}")


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction directory."""
