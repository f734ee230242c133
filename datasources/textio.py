"""Reading text files of every upstream format: gzip-transparent, with line numbers in errors.

Shared by the ingest parsers (:mod:`datasources.formats`) and the KG readers
(:mod:`datasources.kg.readers`): a decoding error, a bad header or a malformed line always raises
:class:`~datasources.errors.MalformedInputError` naming ``file:line``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NoReturn

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from datasources.errors import MalformedInputError


def open_text(path: str | Path, encoding: str = "utf-8") -> IO[str]:
    """Open ``path`` for reading text, gunzipping when the name ends in ``.gz``.

    ``newline=None`` folds CRLF into LF so callers never see a stray ``\\r``.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline=None)
    return open(path, encoding=encoding, newline=None)


def open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


#: What gzip raises on a truncated or corrupt stream (none of them names the file).
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


@contextmanager
def _named_gzip_errors(path: Path, lines_read: Callable[[], int | None] = lambda: None):
    """Re-raise a gzip stream error as :class:`MalformedInputError` naming the file (and the
    line reached): "Truncated compressed stream" alone does not say which of 40 files."""
    try:
        yield
    except MalformedInputError:
        raise
    except _GZIP_ERRORS as exc:
        if path.suffix != ".gz" or isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise MalformedInputError(path, lines_read(), f"truncated or corrupt gzip stream "
                                  f"({type(exc).__name__}: {exc})") from exc


def _without_bom(text: str) -> str:
    """A UTF-8 byte-order mark (Excel and Windows tools write one) is not part of the header."""
    return text.removeprefix("\ufeff")


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` without the line end; a decoding error names its line."""
    number = 0
    with _named_gzip_errors(path, lambda: number + 1), open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise MalformedInputError(path, number, f"not valid {encoding}: {exc}") from exc
            yield number, (_without_bom(text) if number == 1 else text).rstrip("\r\n")


def iter_json_objects(path: Path, *, blank_lines: str = "skip") -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` of a JSON-lines file; a line that is not a JSON object
    names its ``file:line``. ``blank_lines``: ``"skip"`` them, or ``"error"`` (a strict format)."""
    for number, line in iter_lines(path):
        if not line.strip():
            if blank_lines == "error":
                raise MalformedInputError(path, number, "blank line (expected one JSON object per line)")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedInputError(path, number, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(record, dict):
            raise MalformedInputError(path, number, f"expected a JSON object, found {type(record).__name__}")
        yield number, record


def iter_json_records(path: Path, required_key: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` of a JSON-lines file, skipping blank lines.

    A line that is not a JSON object holding ``required_key`` names its ``file:line``: a silently
    half-read file would look like low coverage instead of a broken input.
    """
    for number, record in iter_json_objects(path):
        if required_key not in record:
            raise MalformedInputError(path, number, f"record without {required_key!r}")
        yield number, record


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    with _named_gzip_errors(path), open_binary(path) as handle:
        return handle.read()


def decode(raw: bytes, path: Path, encoding: str) -> str:
    """Decode a whole file; a bad byte is reported with the line it is on."""
    try:
        return _without_bom(raw.decode(encoding))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise MalformedInputError(path, line, f"not valid {encoding}: {exc.reason} at byte {exc.start}") from None


def read_header(path: Path, encoding: str = "utf-8") -> str:
    """The first line of a file (decoded alone, so a bad byte further down is reported later)."""
    with _named_gzip_errors(path, lambda: 1), open_binary(path) as handle:
        first = handle.readline()
    return decode(first, path, encoding).rstrip("\r\n")


def read_recbole_atomic(path: str | Path) -> pd.DataFrame:
    """Any RecBole atomic file (``.inter``, ``.item``, ``.user``, ``.kg``, ``.link``) as strings.

    Column names are the header's field names without the ``:type`` suffix. Fields may use CSV
    double-quote quoting (Amazon-Books.item quotes category lists that contain quotes), which
    pyarrow decodes; every line must have exactly the header's number of fields.
    """
    path = Path(path)
    header_line = read_header(path)
    fields = header_line.split("\t")
    if not header_line.strip() or any(":" not in f for f in fields):
        raise MalformedInputError(path, 1, f"not a RecBole atomic header ('name:type' fields): {header_line[:80]!r}")
    columns = [f.split(":", 1)[0].strip() for f in fields]
    if len(set(columns)) != len(columns) or "" in columns:
        raise MalformedInputError(path, 1, f"bad RecBole header {header_line!r}")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char='"', double_quote=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        _scan_csv_for_bad_line(path, len(columns), f"could not parse: {exc}")
    return table.to_pandas()


def _scan_csv_for_bad_line(path: Path, n_fields: int, fallback_reason: str) -> NoReturn:
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"', doublequote=True)
        try:
            for fields in reader:
                if reader.line_num == 1:
                    continue
                if len(fields) != n_fields:
                    what = "blank line" if not fields else f"got {len(fields)}"
                    raise MalformedInputError(
                        path, reader.line_num, f"expected {n_fields} tab-separated fields, {what}"
                    )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MalformedInputError(path, reader.line_num, str(exc)) from exc
    raise MalformedInputError(path, None, fallback_reason)
