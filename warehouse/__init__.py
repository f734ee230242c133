"""The Parquet lake and the DuckDB warehouse over it (every DuckDB statement lives here)."""

from warehouse.database import Warehouse
from warehouse.lake import Lake

__all__ = ["Lake", "Warehouse"]
