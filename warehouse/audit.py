"""The guards a lake snapshot must pass before it is published (the "audit" of write–audit–publish).

Each table of the data contract (docs/ARCHITECTURE.md) declares what must hold for it:

* ``non_empty`` — an empty users/items/interactions/split is never a valid result (a header-only
  input file produces one and must not replace the last good tables);
* ``dense_key`` — ids are contiguous from 0 and unique (every later stage indexes arrays by them);
* ``references`` — foreign keys: every interaction's user is a user, every split pair is an
  interaction, every triple's head and tail are entities, ...

and, for every table a transaction writes, its row count may not fall by more than a
configurable fraction of the previous snapshot's (``max_row_drop``): a re-ingest that suddenly
has half the interactions is far more often a broken download than a real change.

The checks run as DuckDB SQL over the staged Parquet files, so they cost a scan of the key
columns and never load a table into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from warehouse.sql import quote_identifier as q
from warehouse.sql import quote_literal


@dataclass(frozen=True)
class Reference:
    """``columns`` of the table must appear together as ``parent_columns`` of ``parent``."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...] | None = None

    @property
    def target_columns(self) -> tuple[str, ...]:
        return self.parent_columns or self.columns


@dataclass(frozen=True)
class Contract:
    non_empty: bool = False
    dense_key: str | None = None
    references: tuple[Reference, ...] = ()


def _ref(columns: str, parent: str, parent_columns: str | None = None) -> Reference:
    return Reference(tuple(columns.split(",")), parent,
                     tuple(parent_columns.split(",")) if parent_columns else None)


CONTRACTS: dict[str, Contract] = {
    "users": Contract(non_empty=True, dense_key="user_id"),
    "items": Contract(non_empty=True, dense_key="item_id"),
    "interactions": Contract(non_empty=True, references=(_ref("user_id", "users"),
                                                         _ref("item_id", "items"))),
    "split": Contract(non_empty=True, references=(_ref("user_id,item_id", "interactions"),)),
    "item_links": Contract(references=(_ref("item_id", "items"),)),
    "entities": Contract(dense_key="entity_id"),
    "relations": Contract(dense_key="relation_id"),
    "kg_triples": Contract(references=(_ref("head_id", "entities", "entity_id"),
                                       _ref("tail_id", "entities", "entity_id"),
                                       _ref("relation_id", "relations"))),
    "item_media": Contract(references=(_ref("item_id", "items"),)),
    "clip_features": Contract(references=(_ref("entity_id", "entities"),)),
    "neighbor_sequences": Contract(references=(_ref("item_id", "items"),)),
}


@dataclass
class AuditReport:
    """What the audit found: ``failures`` stop the publish; ``dropped`` are carried-over tables
    that the new tables contradict (they are left out of the new snapshot, not mixed into it)."""

    failures: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)


def _scan(path: Path) -> str:
    return f"read_parquet({quote_literal(path.as_posix())})"


def _dense_problem(con, table: str, path: Path, key: str) -> str | None:
    k = q(key)
    n, n_key, distinct, low, high = con.execute(
        f"SELECT count(*), count({k}), count(DISTINCT {k}), min({k}), max({k}) "
        f"FROM {_scan(path)}").fetchone()
    if n == 0:
        return None
    if n_key != n or distinct != n or low != 0 or high != n - 1:
        return (f"{table}.{key} is not dense: {n:,} rows, {distinct:,} distinct values, "
                f"{n - n_key:,} null, range {low}..{high} (expected 0..{n - 1})")
    return None


def _reference_problem(con, table: str, path: Path, ref: Reference, parent_path: Path) -> str | None:
    cols = ref.columns
    on = " AND ".join(f"c.{q(a)} = p.{q(b)}" for a, b in zip(cols, ref.target_columns, strict=True))
    not_null = " AND ".join(f"c.{q(a)} IS NOT NULL" for a in cols)
    listed = ", ".join(f"c.{q(a)}" for a in cols)
    missing, example = con.execute(
        f"SELECT count(*), min(({listed})::VARCHAR) FROM {_scan(path)} AS c "
        f"ANTI JOIN {_scan(parent_path)} AS p ON {on} WHERE {not_null}").fetchone()
    if missing:
        target = f"{ref.parent}({', '.join(ref.target_columns)})"
        return (f"{table}: {missing:,} rows whose ({', '.join(cols)}) is not in {target}, "
                f"e.g. {example}")
    return None


def audit_snapshot(path_of: Callable[[str], Path | None], written: dict[str, int],
                   previous_rows: dict[str, int], max_row_drop: float,
                   base_version: int | None) -> AuditReport:
    """Audit a staged snapshot.

    ``path_of(table)``: the staged or carried Parquet file of a table (None: not in the
    snapshot); ``written``: rows of each table this transaction writes; ``previous_rows``: rows
    of each table in the base snapshot.
    """
    report = AuditReport()
    con = duckdb.connect()
    try:
        for table, rows in written.items():
            _audit_written(con, table, rows, path_of, previous_rows, max_row_drop,
                           base_version, report)
        _audit_carried(con, path_of, written, report)
    finally:
        con.close()
    return report


def _audit_written(con, table, rows, path_of, previous_rows, max_row_drop, base_version,
                   report: AuditReport) -> None:
    contract = CONTRACTS.get(table, Contract())
    report.checked.append(table)
    if contract.non_empty and rows == 0:
        report.failures.append(f"{table}: 0 rows (an empty {table} table is never published)")
        return
    before = previous_rows.get(table, 0)
    if before and rows < before * (1 - max_row_drop):
        report.failures.append(
            f"{table}: {rows:,} rows against {before:,} in snapshot {base_version} "
            f"({rows / before - 1:+.1%}; a drop of more than {max_row_drop:.0%} is refused — "
            "raise the lake's max_row_drop if it is real)")
    path = path_of(table)
    if contract.dense_key and (problem := _dense_problem(con, table, path, contract.dense_key)):
        report.failures.append(problem)
    for ref in contract.references:
        parent = path_of(ref.parent)
        if parent is not None and (problem := _reference_problem(con, table, path, ref, parent)):
            report.failures.append(problem)


def _audit_carried(con, path_of, written: dict[str, int], report: AuditReport) -> None:
    """Carried tables whose parent changed are re-checked; a contradicted one is dropped, and
    so is every carried table that references a dropped one (the order of CONTRACTS is the
    order of the dependencies)."""
    for table, contract in CONTRACTS.items():
        if table in written or path_of(table) is None:
            continue
        for ref in contract.references:
            if ref.parent in report.dropped:
                report.dropped[table] = f"its parent {ref.parent} was dropped"
                break
            if ref.parent not in written or (parent := path_of(ref.parent)) is None:
                continue
            problem = _reference_problem(con, table, path_of(table), ref, parent)
            if problem:
                report.dropped[table] = f"the new {ref.parent} contradicts it: {problem}"
                break
