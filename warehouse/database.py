"""The DuckDB warehouse: one VIEW per lake table (with a ``dataset`` column) and run-result tables.

Views read ``<lake>/dataset=*/<table>.parquet`` with hive partitioning, so every view has a
``dataset`` column and always shows the current files: a re-materialized asset needs no reload.
Every DuckDB statement of the project lives in this package (the media fetch cache keeps its
own small SQLite statements in ``datasources/media/cache.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse.lake import Lake

# Derived views over the lake views. Each is created only when the tables it reads exist.
DERIVED_VIEWS: dict[str, tuple[tuple[str, ...], str]] = {
    # The paper's Table 1 (interaction part) per dataset.
    "dataset_stats": (
        ("users", "items", "interactions"),
        """
        SELECT i.dataset,
               u.n_users, it.n_items, i.n_interactions,
               i.n_interactions / (u.n_users * it.n_items)::DOUBLE AS density,
               1 - i.n_interactions / (u.n_users * it.n_items)::DOUBLE AS sparsity
        FROM (SELECT dataset, count(*) AS n_interactions FROM interactions GROUP BY ALL) i
        JOIN (SELECT dataset, count(*) AS n_users FROM users GROUP BY ALL) u USING (dataset)
        JOIN (SELECT dataset, count(*) AS n_items FROM items GROUP BY ALL) it USING (dataset)
        ORDER BY dataset
        """,
    ),
    "split_stats": (
        ("split",),
        """
        SELECT dataset, split, count(*) AS n_pairs,
               count(*) / sum(count(*)) OVER (PARTITION BY dataset) AS share
        FROM split GROUP BY dataset, split ORDER BY dataset, split
        """,
    ),
}


class Warehouse:
    """A DuckDB database file whose views sit over a :class:`Lake`."""

    def __init__(self, path: str | Path, lake: Lake, lock_timeout_s: float = 60.0) -> None:
        self.path = Path(path).absolute()
        self.lake = lake
        self.lock_timeout_s = lock_timeout_s

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database, waiting while another process holds its write lock.

        DuckDB allows one writing process per file; pipeline steps run in separate processes and
        an analyst may have the file open, so a lock conflict is retried rather than failed.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection inside one transaction: committed when the block ends, rolled
        back (and the error re-raised) when it fails, so readers never see half a write."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def refresh_views(self) -> list[str]:
        """(Re)create a view for every table present in the lake, plus the derived views."""
        tables = self.lake.tables()
        with self.connect() as con:
            for table in tables:
                pattern = (self.lake.root / "dataset=*" / f"{table}.parquet").as_posix()
                con.execute(
                    f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM '
                    f"read_parquet('{_sql_str(pattern)}', hive_partitioning = true, union_by_name = true)"
                )
            for name, (needs, sql) in DERIVED_VIEWS.items():
                if all(t in tables for t in needs):
                    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        return tables

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def execute(self, sql: str, params: list | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])


def _sql_str(value: str) -> str:
    return value.replace("'", "''")
