"""``python -m warehouse "SQL"``: query the lake through the DuckDB warehouse.

Examples::

    python -m warehouse "SELECT dataset, split, count(*) FROM split GROUP BY ALL ORDER BY ALL"
    python -m warehouse --tables
    python -m warehouse --format csv "SELECT * FROM dataset_stats"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyarrow as pa

from warehouse.database import Warehouse
from warehouse.lake import Lake


def default_data_dir() -> Path:
    return Path(os.environ.get("KG4REC_DATA_DIR", "data"))


def open_warehouse(data_dir: str | Path | None = None) -> Warehouse:
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    return Warehouse(data_dir / "warehouse.duckdb", Lake(data_dir))


def format_table(table: pa.Table, fmt: str = "table", max_rows: int = 50) -> str:
    frame = table.to_pandas()
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "markdown":
        return frame.head(max_rows).to_markdown(index=False) if _has_tabulate() else frame.head(max_rows).to_string(index=False)
    with_more = f"\n({len(frame)} rows, showing {max_rows})" if len(frame) > max_rows else f"\n({len(frame)} rows)"
    return frame.head(max_rows).to_string(index=False) + with_more


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warehouse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sql", nargs="?", help="a SQL query over the warehouse views")
    parser.add_argument("--data-dir", default=None, help="data directory (default $KG4REC_DATA_DIR or ./data)")
    parser.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    parser.add_argument("--max-rows", type=int, default=50)
    parser.add_argument("--tables", action="store_true", help="list the views and tables")
    parser.add_argument("--refresh", action="store_true",
                        help="recreate every view first (default: only missing or stale ones)")
    parser.add_argument("--unrestricted", action="store_true",
                        help="run any statement with full access (COPY, ATTACH, files anywhere); "
                        "default: SELECT/EXPLAIN on a read-only connection limited to the lake")
    args = parser.parse_args(argv)

    warehouse = open_warehouse(args.data_dir)
    # The write lock is taken only when a view is missing or stale (or --refresh): a query never makes
    # a running materialization wait.
    if args.refresh:
        warehouse.refresh_views()
    else:  # a held database (a notebook, the DuckDB shell) leaves the views as they are
        _, problem = warehouse.ensure_views()
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
    if args.tables:
        sql = "SELECT table_name, table_type FROM information_schema.tables ORDER BY table_name"
    elif args.sql:
        sql = args.sql
    else:
        parser.print_help()
        return 2
    if args.unrestricted:
        print("warning: --unrestricted: the statement runs with full access", file=sys.stderr)
    try:
        result = warehouse.query(sql) if args.unrestricted else warehouse.user_query(sql)
    except Exception as exc:  # show DuckDB's message, not a traceback, to a CLI user
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(result, args.format, args.max_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
