"""The Parquet lake and the DuckDB warehouse over it (all the project's SQL lives here)."""

from warehouse.duck import Warehouse
from warehouse.lake import Lake

__all__ = ["Lake", "Warehouse"]
