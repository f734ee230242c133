"""The Parquet lake: one file per table per dataset, hive-style, written atomically.

Layout: ``<data_dir>/lake/dataset=<name>/<table>.parquet``. A write goes to a temporary file in
the same directory and is renamed into place (``os.replace`` is atomic on POSIX), so a crash in
the middle of a write leaves the previous good file, never a half-written one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.files import atomic_path


class Lake:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.root = self.data_dir / "lake"

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / f"dataset={dataset}"

    def path(self, dataset: str, table: str) -> Path:
        return self.dataset_dir(dataset) / f"{table}.parquet"

    def exists(self, dataset: str, table: str) -> bool:
        return self.path(dataset, table).is_file()

    def write(self, dataset: str, table: str, data: pa.Table | pd.DataFrame) -> Path:
        """Write ``data`` as ``dataset=<dataset>/<table>.parquet``, atomically."""
        if isinstance(data, pd.DataFrame):
            data = pa.Table.from_pandas(data, preserve_index=False)
        # The partition column lives in the directory name; DuckDB/Spark add it back on read.
        if "dataset" in data.column_names:
            data = data.drop_columns(["dataset"])
        target = self.path(dataset, table)
        with atomic_path(target) as tmp:
            pq.write_table(data, tmp, compression="zstd")
        return target

    def read(self, dataset: str, table: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path(dataset, table)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: materialize the '{table}' asset for partition "
                f"'{dataset}' first (e.g. make run DATASET={dataset} CONFIG=configs/offline.yaml)"
            )
        return pq.read_table(path, columns=columns)

    def read_pandas(self, dataset: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.read(dataset, table, columns).to_pandas()

    def tables(self) -> list[str]:
        """Every table name that has at least one dataset partition in the lake."""
        if not self.root.is_dir():
            return []
        return sorted({p.stem for p in self.root.glob("dataset=*/*.parquet")})

    def datasets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name.split("=", 1)[1] for p in self.root.glob("dataset=*") if p.is_dir())
