"""The DuckDB warehouse: one VIEW per lake table (with a ``dataset`` column) and run-result tables.

Views read ``<lake>/dataset=*/<table>.parquet`` with hive partitioning, so every view has a
``dataset`` column and always shows the current files: a re-materialized asset needs no reload.
Every DuckDB statement of the project lives in this package (the media fetch cache keeps its
own small SQLite statements in ``datasources/media/cache.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse.lake import Lake
from warehouse.sql import TABLE_NAME, quote_identifier, quote_literal

__all__ = ["TABLE_NAME", "Warehouse", "quote_identifier", "quote_literal"]

# Derived views over the lake views. Each is created only when the tables it reads exist.
DERIVED_VIEWS: dict[str, tuple[tuple[str, ...], str]] = {
    # The paper's Table 1 (interaction part) per dataset. n_interactions counts POSITIVE
    # interactions only: rows with label NULL (implicit feedback) or 1; rows with label 0 are
    # sampled negatives (e.g. a CTR log's impressions), counted apart in n_negative_rows and
    # left out of the density. An interactions table without a label column counts every row:
    # the UNION ALL BY NAME with an empty row gives it an all-NULL label.
    "dataset_stats": (
        ("users", "items", "interactions"),
        """
        SELECT i.dataset,
               u.n_users, it.n_items,
               i.n_interactions,   -- positives only: label NULL or 1
               i.n_negative_rows,  -- label 0 (sampled negatives), not interactions
               i.n_interactions / (u.n_users * it.n_items)::DOUBLE AS density,
               1 - i.n_interactions / (u.n_users * it.n_items)::DOUBLE AS sparsity
        FROM (SELECT dataset,
                     count(*) FILTER (WHERE label IS NULL OR label = 1) AS n_interactions,
                     count(*) FILTER (WHERE label = 0) AS n_negative_rows
              FROM (SELECT dataset, label FROM (
                      SELECT * FROM interactions
                      UNION ALL BY NAME SELECT NULL::VARCHAR AS dataset, NULL::TINYINT AS label
                      WHERE false))
              GROUP BY ALL) i
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


_READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _fingerprint(sql: str) -> str:
    """What a view's comment records of its definition (see ``Warehouse.refresh_views``)."""
    return "kg4rec view " + hashlib.sha256(sql.encode()).hexdigest()[:16]


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

    def wanted_views(self) -> dict[str, str]:
        """Every view this warehouse should have, name → the SQL that defines it: one per lake
        table (only names matching :data:`TABLE_NAME`, see :meth:`ignored_files`), the derived
        views whose tables exist, and the run-result views (``warehouse.runs``)."""
        from warehouse.runs import run_views  # runs.py imports this module

        tables = [t for t in self.lake.tables() if TABLE_NAME.fullmatch(t)]
        views = {}
        for table in tables:
            pattern = (self.lake.root / "dataset=*" / f"{table}.parquet").as_posix()
            views[table] = (f"SELECT * FROM read_parquet({quote_literal(pattern)}, "
                            "hive_partitioning = true, union_by_name = true)")
        for name, (needs, sql) in DERIVED_VIEWS.items():
            if all(t in tables for t in needs):
                views[name] = sql
        views.update(run_views(self.runs_root))
        return views

    def refresh_views(self) -> list[str]:
        """(Re)create every wanted view; each carries the fingerprint of its definition as its
        comment, so :meth:`missing_views` sees a view whose definition changed (a new column in
        a run table, a moved lake, a new release of this package) as missing."""
        from warehouse.runs import migrate_legacy_tables  # runs.py imports this module

        with self.connect() as con:
            migrate_legacy_tables(con, self.runs_root)
            views = self.wanted_views()  # after the migration: it can turn tables into files
            for name, sql in views.items():
                con.execute(f"CREATE OR REPLACE VIEW {quote_identifier(name)} AS {sql}")
                con.execute(f"COMMENT ON VIEW {quote_identifier(name)} IS "
                            f"{quote_literal(_fingerprint(sql))}")
        return list(views)

    def ensure_views(self, lock_timeout_s: float = 2.0) -> tuple[list[str], str | None]:
        """Create the views that are missing or stale, without ever failing a writer.

        Views are globs over the lake, so a republished table needs no refresh: only a table
        new to the lake, or a view whose definition changed, needs a write. If another process
        holds the database (a user's ``duckdb data/warehouse.duckdb``, a notebook), this gives
        up after ``lock_timeout_s`` and says so; the next writer or ``python -m warehouse``
        creates the view. Returns (views created, why not or None)."""
        patient, self.lock_timeout_s = self.lock_timeout_s, lock_timeout_s
        try:
            if not self.missing_views():
                return [], None
            return self.refresh_views(), None
        except duckdb.IOException as exc:
            return [], f"views not refreshed (the warehouse is held by another process: {exc})"
        finally:
            self.lock_timeout_s = patient

    def ignored_files(self) -> list[str]:
        """Lake files whose table name is not a valid one (they get no view)."""
        return sorted(t for t in self.lake.tables() if not TABLE_NAME.fullmatch(t))

    @property
    def runs_root(self) -> Path:
        """Where run results live (``warehouse.runs``): files, like the lake tables."""
        return self.lake.root / "runs"

    def missing_views(self) -> list[str]:
        """Wanted views that are absent or stale — defined by other SQL than this code would
        write (read-only check: takes no write lock). A copied or moved data directory's views
        still read the original lake, so they count as stale too."""
        wanted = self.wanted_views()
        if not self.path.exists():
            return list(wanted)
        with self.connect(read_only=True) as con:
            comments = dict(con.execute(
                "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
        return [name for name, sql in wanted.items() if comments.get(name) != _fingerprint(sql)]

    def user_query(self, sql: str) -> pa.Table:
        """A user's query, in a sandbox: ``SELECT``/``EXPLAIN`` statements only, on a read-only
        connection that may read files under the lake and nothing else (no ``COPY``, no
        ``ATTACH``, no ``read_csv('/etc/passwd')``, no extension loading; the settings are
        locked so the query cannot lift them)."""
        with self.connect(read_only=True) as con:
            statements = con.extract_statements(sql)
            for number, statement in enumerate(statements, 1):
                if statement.type not in _READ_STATEMENTS:
                    kind = str(statement.type).rsplit(".", 1)[-1]
                    raise PermissionError(
                        f"statement {number} is {kind}: the warehouse CLI runs SELECT and "
                        "EXPLAIN only (--unrestricted lifts this)")
            con.execute("SET allowed_directories = [" + quote_literal(
                self.lake.root.as_posix() + "/") + "]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            result = None
            for statement in statements:
                result = con.sql(statement.query)
            return result.to_arrow_table() if result is not None else pa.table({})

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def execute(self, sql: str, params: list | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])
