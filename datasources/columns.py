"""A user's own table file, whatever its layout: named columns of text, with ``file:line`` errors.

The generic sources of a dataset file (KG links, triples and names; item descriptions; image
lists) all read "a file with a header and some named columns". Users have these as CSV, TSV,
Parquet or JSON lines, so one reader takes all four, chosen by the file name (``.csv``,
``.parquet``/``.pq``, ``.jsonl``/``.ndjson``, anything else is tab-separated; ``.gz`` is fine
for the text ones) or by an explicit ``file_format`` option.

Every value comes back as ``str`` (or ``None`` for an empty cell / JSON null): keys are compared
as text everywhere in the project. A line with the wrong number of fields, a JSON line that does
not parse, or a column the options name but the header lacks raises
:class:`~datasources.errors.MalformedInputError` naming ``file:line``; nothing is padded or
dropped silently. ``line`` numbers the source lines (the header is line 1; Parquet rows count
from 2 the same way, so a user's "row N" is line N + 1).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from datasources.errors import MalformedInputError
from datasources.textio import iter_json_objects, open_text

FILE_FORMATS = ("csv", "tsv", "parquet", "jsonl")
#: The option keys :func:`read_columns` itself reads (each source adds its column options).
READER_OPTIONS = frozenset({"file_format", "delimiter"})


def file_format(path: Path, options: Mapping[str, str]) -> str:
    """The declared ``file_format``, else the one the file name says."""
    declared = options.get("file_format")
    if declared is not None:
        if declared not in FILE_FORMATS:
            raise ValueError(f"{path}: file_format {declared!r} is not one of {', '.join(FILE_FORMATS)}")
        return declared
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl"}.get(last, "tsv")


def read_columns(path: str | Path, options: Mapping[str, str] | None = None) -> pd.DataFrame:
    """All columns of ``path`` as text, plus ``line`` (the source line of each row)."""
    path, options = Path(path), options or {}
    kind = file_format(path, options)
    if kind == "parquet":
        import pyarrow.parquet as pq

        frame = pq.read_table(path).to_pandas()
        frame = frame.astype(object).where(frame.notna(), None)
        frame = frame.apply(lambda column: column.map(lambda v: None if v is None else str(v)))
        frame["line"] = range(2, len(frame) + 2)
        return frame
    if kind == "jsonl":
        return _read_jsonl(path)
    delimiter = options.get("delimiter", "," if kind == "csv" else "\t")
    return _read_delimited(path, delimiter)


def _read_delimited(path: Path, delimiter: str) -> pd.DataFrame:
    with open_text(path) as handle:
        rows = csv.reader(handle, delimiter=delimiter)
        header = next(rows, None)
        if not header:
            raise MalformedInputError(path, 1, "empty file: expected a header row naming the columns")
        header = [name.strip().lstrip("\ufeff") for name in header]
        records, lines = [], []
        for row in rows:
            line = rows.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(header):
                raise MalformedInputError(path, line, f"{len(row)} fields, the header has "
                                          f"{len(header)} ({', '.join(header)})")
            records.append([cell.strip() or None for cell in row])
            lines.append(line)
    frame = pd.DataFrame(records, columns=header, dtype=object)
    frame["line"] = lines
    return frame


def _read_jsonl(path: Path) -> pd.DataFrame:
    records, lines = [], []
    for line, record in iter_json_objects(path):
        records.append({k: None if v is None else str(v) for k, v in record.items()})
        lines.append(line)
    frame = pd.DataFrame.from_records(records).astype(object)
    frame = frame.where(frame.notna(), None)
    frame["line"] = lines
    return frame


def column(frame: pd.DataFrame, path: str | Path, option: str, name: str | None,
           required: bool = True) -> str | None:
    """The column an option names, checked against the header."""
    if name is None:
        return None
    if name not in frame.columns or name == "line":
        if not required:
            return None
        present = [c for c in frame.columns if c != "line"]
        raise MalformedInputError(path, 1, f"no column {name!r} ({option}); the file has {present}")
    return name


def require_values(frame: pd.DataFrame, path: str | Path, columns: Sequence[str]) -> None:
    """Every row has a value in each of ``columns`` (keys may not be empty)."""
    for name in columns:
        empty = frame[name].isna()
        if empty.any():
            line = int(frame.loc[empty.idxmax(), "line"])
            raise MalformedInputError(path, line, f"empty {name!r}")
