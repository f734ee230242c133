"""The Parquet lake: per dataset, a chain of immutable snapshots, each published atomically.

Layout::

    <data_dir>/lake/
      dataset=ml-1m -> .snapshots/ml-1m/000012     the published snapshot (a symlink)
      .snapshots/ml-1m/000011/<table>.parquet      older snapshots (time travel), _manifest.json
      .snapshots/ml-1m/000012/<table>.parquet
      .snapshots/ml-1m/.staging-<id>/              a transaction being written
      .snapshots/ml-1m/.lock                       one writer per dataset at a time

Readers see ``dataset=<name>/<table>.parquet`` as before (DuckDB views, pyarrow, users' SQL):
the symlink resolves to one published snapshot. A writer opens a :meth:`Lake.transaction`:

1. **write** — its tables go to a private staging directory; nothing a reader sees changes;
2. **audit** — the staged snapshot (new tables + the unchanged ones carried from the current
   snapshot) must pass :mod:`warehouse.audit` (non-empty, row-count drop, dense ids, foreign
   keys) and the checks the asset adds (:meth:`LakeTransaction.check`); a failure raises
   :class:`AuditError`, the staging directory is removed and the previous snapshot stays;
3. **publish** — unchanged tables are hard-linked in, every file is fsynced, the directory is
   renamed to the next version number and the ``dataset=`` symlink is swapped to it with one
   ``rename(2)``: all tables of the materialization appear at once, or none.

A ``kill -9`` at any point leaves the old snapshot published (or, after the final rename, the
new one): never a mix. What a killed writer left (its staging directory) is removed by the next
writer, who holds the lock and therefore knows nobody else is writing. Why not DuckLake, Delta
or Iceberg: docs/ARCHITECTURE.md, "The lake's table format".
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.audit import AuditReport, audit_snapshot
from warehouse.files import atomic_write_json, exclusive_lock, fsync_directory, fsync_file
from warehouse.sql import TABLE_NAME

MANIFEST = "_manifest.json"
SNAPSHOTS = ".snapshots"


class AuditError(RuntimeError):
    """A staged snapshot failed its audit; the previous snapshot is still the published one."""

    def __init__(self, dataset: str, failures: list[str], base_version: int | None) -> None:
        self.failures = failures
        kept = f"snapshot {base_version} stays published" if base_version else "nothing was published"
        super().__init__(f"{dataset}: the new tables failed their audit ({kept}):\n  - "
                         + "\n  - ".join(failures))


def _version_name(version: int) -> str:
    return f"{version:06d}"


@dataclass(frozen=True)
class Snapshot:
    """One published version of a dataset's tables (read-only)."""

    dataset: str
    version: int
    directory: Path
    manifest: dict

    def path(self, table: str) -> Path:
        return self.directory / f"{table}.parquet"

    def has(self, table: str) -> bool:
        return self.path(table).is_file()

    def tables(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.parquet"))

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path(table)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: materialize the '{table}' asset for partition "
                f"'{self.dataset}' first (e.g. make run DATASET={self.dataset} "
                "CONFIG=configs/offline.yaml)")
        return pq.read_table(path, columns=columns)

    def read_pandas(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.read(table, columns).to_pandas()


class LakeTransaction:
    """The tables one materialization writes; published together when the block ends cleanly."""

    def __init__(self, dataset: str, base: Snapshot | None, staging: Path, published_dir: Path) -> None:
        self.dataset = dataset
        self.published_dir = published_dir
        self.base = base
        self.staging = staging
        self.rows: dict[str, int] = {}
        self.check_failures: list[str] = []
        self.report: AuditReport | None = None
        self.published: Snapshot | None = None

    def write(self, table: str, data: pa.Table | pd.DataFrame) -> Path:
        """Stage ``data`` as ``table``; returns the path it will have once published."""
        if not TABLE_NAME.fullmatch(table):
            raise ValueError(f"{table!r} is not a valid lake table name ({TABLE_NAME.pattern})")
        if isinstance(data, pd.DataFrame):
            data = pa.Table.from_pandas(data, preserve_index=False)
        # The partition column lives in the directory name; DuckDB/Spark add it back on read.
        if "dataset" in data.column_names:
            data = data.drop_columns(["dataset"])
        pq.write_table(data, self.staging / f"{table}.parquet", compression="zstd")
        self.rows[table] = data.num_rows
        return self.published_dir / f"{table}.parquet"

    def path(self, table: str) -> Path | None:
        """The staged file of ``table`` if this transaction wrote it, else the current one."""
        if table in self.rows:
            return self.staging / f"{table}.parquet"
        if self.base is not None and self.base.has(table):
            return self.base.path(table)
        return None

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        path = self.path(table)
        if path is None:
            raise FileNotFoundError(f"{self.dataset}: no table {table!r} staged or published")
        return pq.read_table(path, columns=columns)

    def read_pandas(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.read(table, columns).to_pandas()

    def check(self, name: str, problems: list[str]) -> None:
        """Add an asset's own blocking check of the staged data; problems stop the publish."""
        self.check_failures.extend(f"{name}: {problem}" for problem in problems)


class Lake:
    """The lake under ``<data_dir>/lake``.

    ``max_row_drop``: the largest fraction by which a written table's row count may fall
    against the current snapshot; ``keep_snapshots``: how many old snapshots are kept for time
    travel beyond the pinned ones (:meth:`pin`); ``lock_timeout_s``: how long a writer waits
    for another writer of the same dataset.
    """

    def __init__(self, data_dir: str | Path, *, max_row_drop: float = 0.5, keep_snapshots: int = 10,
                 lock_timeout_s: float = 1800.0, log: Callable[[str], None] | None = None) -> None:
        # resolved: two spellings of one directory (a symlink, "..") give the same view SQL
        self.data_dir = Path(data_dir).resolve()
        self.root = self.data_dir / "lake"
        self.max_row_drop = max_row_drop
        self.keep_snapshots = keep_snapshots
        self.lock_timeout_s = lock_timeout_s
        self.log = log or (lambda message: None)

    # -- layout ---------------------------------------------------------------------------------

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / f"dataset={dataset}"

    def snapshots_dir(self, dataset: str) -> Path:
        return self.root / SNAPSHOTS / dataset

    def path(self, dataset: str, table: str) -> Path:
        return self.dataset_dir(dataset) / f"{table}.parquet"

    def exists(self, dataset: str, table: str) -> bool:
        return self.path(dataset, table).is_file()

    def tables(self) -> list[str]:
        """Every table name that has at least one dataset partition in the lake."""
        if not self.root.is_dir():
            return []
        return sorted({p.stem for p in self.root.glob("dataset=*/*.parquet")})

    def datasets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name.split("=", 1)[1] for p in self.root.glob("dataset=*") if p.is_dir())

    # -- reading --------------------------------------------------------------------------------

    def read(self, dataset: str, table: str, columns: list[str] | None = None) -> pa.Table:
        return self._current_or_empty(dataset).read(table, columns)

    def read_pandas(self, dataset: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.read(dataset, table, columns).to_pandas()

    def snapshot(self, dataset: str, version: int | None = None) -> Snapshot:
        """The published snapshot (``version`` None) or an older one, for time travel."""
        if version is None:
            current = self.current(dataset)
            if current is None:
                raise FileNotFoundError(
                    f"{self.dataset_dir(dataset)}: nothing published for dataset {dataset!r} "
                    f"yet: materialize its assets first (e.g. make run DATASET={dataset} "
                    "CONFIG=configs/offline.yaml)")
            return current
        directory = self.snapshots_dir(dataset) / _version_name(version)
        if not (directory / MANIFEST).is_file():
            known = [s["version"] for s in self.snapshots(dataset)]
            raise FileNotFoundError(f"{dataset}: snapshot {version} does not exist (or was "
                                    f"pruned); kept: {known}")
        return self._open(dataset, directory)

    def current(self, dataset: str) -> Snapshot | None:
        """The published snapshot, or None. A legacy plain directory counts as version 0."""
        link = self.dataset_dir(dataset)
        if link.is_symlink():
            return self._open(dataset, link.resolve())
        if link.is_dir():
            return Snapshot(dataset, 0, link, {"version": 0, "legacy": True})
        latest = self._published_versions(dataset)  # the link was lost between two renames
        return self._open(dataset, self.snapshots_dir(dataset) / latest[-1]) if latest else None

    def snapshots(self, dataset: str) -> list[dict]:
        """The manifests of every kept snapshot, oldest first."""
        return [json.loads((self.snapshots_dir(dataset) / name / MANIFEST).read_text("utf-8"))
                for name in self._published_versions(dataset)]

    def pin(self, snapshot: Snapshot, key: str) -> None:
        """Keep ``snapshot`` out of pruning for good (e.g. a training run read it)."""
        if snapshot.manifest.get("legacy"):
            return
        pins = snapshot.directory / "_pins"
        pins.mkdir(exist_ok=True)
        (pins / key.replace("/", "_")).touch()

    def _open(self, dataset: str, directory: Path) -> Snapshot:
        manifest = json.loads((directory / MANIFEST).read_text("utf-8"))
        return Snapshot(dataset, int(manifest["version"]), directory, manifest)

    def _current_or_empty(self, dataset: str) -> Snapshot:
        current = self.current(dataset)
        return current or Snapshot(dataset, 0, self.dataset_dir(dataset), {})

    def _published_versions(self, dataset: str) -> list[str]:
        directory = self.snapshots_dir(dataset)
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir()
                      if p.name.isdigit() and (p / MANIFEST).is_file())

    # -- writing --------------------------------------------------------------------------------

    def write(self, dataset: str, table: str, data: pa.Table | pd.DataFrame) -> Path:
        """Publish one table (a transaction of one write)."""
        with self.transaction(dataset, note=f"write {table}") as tx:
            return tx.write(table, data)

    @contextmanager
    def transaction(self, dataset: str, *, note: str = "", holder: str = "") -> Iterator[LakeTransaction]:
        """Stage, audit and publish the tables written in the block (see the module docstring).

        ``note`` goes into the manifest (which step wrote it); ``holder`` into the lock file (so
        a second writer can say whom it waits for)."""
        directory = self.snapshots_dir(dataset)
        directory.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(directory / ".lock", timeout_s=self.lock_timeout_s,
                            holder=holder or note or "a lake writer", on_wait=self.log):
            self._recover(dataset)
            staging = directory / f".staging-{uuid.uuid4().hex[:12]}"
            staging.mkdir()
            tx = LakeTransaction(dataset, self.current(dataset), staging, self.dataset_dir(dataset))
            try:
                yield tx
                self._audit_and_publish(tx, note)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _recover(self, dataset: str) -> None:
        """Under the lock: remove what killed writers left, adopt a legacy plain directory."""
        directory = self.snapshots_dir(dataset)
        for stale in directory.glob(".staging-*"):
            self.log(f"{dataset}: removing {stale.name}, left by a writer that did not finish")
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.root.glob(f".dataset={dataset}.*.link"):
            stale.unlink(missing_ok=True)
        link = self.dataset_dir(dataset)
        if link.is_dir() and not link.is_symlink():
            self._adopt_legacy_directory(dataset, link)
        elif not link.exists() and not link.is_symlink() and self._published_versions(dataset):
            self._swap_link(dataset, directory / self._published_versions(dataset)[-1])

    def _adopt_legacy_directory(self, dataset: str, legacy: Path) -> None:
        for stale in legacy.glob(".*.tmp"):
            self.log(f"{dataset}: removing {stale.name}, left by a writer that did not finish")
            stale.unlink(missing_ok=True)
        version = self._next_version(dataset)
        tables = {p.stem: {"rows": pq.ParquetFile(p).metadata.num_rows, "written_in": version}
                  for p in legacy.glob("*.parquet")}
        atomic_write_json(legacy / MANIFEST, {"dataset": dataset, "version": version, "parent": None,
                                              "created_at": _now(), "note": "adopted legacy files",
                                              "written": sorted(tables), "tables": tables})
        target = self.snapshots_dir(dataset) / _version_name(version)
        os.rename(legacy, target)
        self._swap_link(dataset, target)
        self.log(f"{dataset}: the lake's plain directory became snapshot {version}")

    def _next_version(self, dataset: str) -> int:
        names = [p.name for p in self.snapshots_dir(dataset).iterdir() if p.name.isdigit()]
        return max((int(n) for n in names), default=0) + 1

    def _audit_and_publish(self, tx: LakeTransaction, note: str) -> None:
        base = tx.base
        previous = {t: _table_entry(base, t)["rows"] for t in base.tables()} if base else {}
        report = audit_snapshot(tx.path, tx.rows, previous, self.max_row_drop,
                                base.version if base else None)
        tx.report = report
        failures = tx.check_failures + report.failures
        if failures:
            raise AuditError(tx.dataset, failures, base.version if base else None)
        if not tx.rows:
            return  # nothing written: nothing to publish
        version = self._next_version(tx.dataset)
        tables = self._stage_carried(tx, version, report)
        manifest = {"dataset": tx.dataset, "version": version,
                    "parent": base.version if base else None, "created_at": _now(), "note": note,
                    "written": sorted(tx.rows), "dropped": report.dropped, "tables": tables}
        (tx.staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for path in tx.staging.iterdir():
            fsync_file(path)
        fsync_directory(tx.staging)
        target = self.snapshots_dir(tx.dataset) / _version_name(version)
        os.rename(tx.staging, target)
        fsync_directory(target.parent)
        self._swap_link(tx.dataset, target)
        tx.published = self._open(tx.dataset, target)
        for table, reason in report.dropped.items():
            self.log(f"{tx.dataset}: {table} left out of snapshot {version}: {reason}; "
                     f"materialize {table} again")
        self._prune(tx.dataset)

    def _stage_carried(self, tx: LakeTransaction, version: int, report: AuditReport) -> dict:
        """Hard-link the base's unchanged tables into the staging directory; the table list."""
        base = tx.base
        tables = {t: {"rows": n, "written_in": version} for t, n in tx.rows.items()}
        for table in base.tables() if base else []:
            if table in tx.rows or table in report.dropped:
                continue
            source = base.path(table)
            try:
                os.link(source, tx.staging / source.name)
            except OSError:  # a filesystem without hard links: copy
                shutil.copy2(source, tx.staging / source.name)
            tables[table] = _table_entry(base, table)
        return tables

    def _swap_link(self, dataset: str, target: Path) -> None:
        link = self.dataset_dir(dataset)
        temporary = self.root / f".dataset={dataset}.{uuid.uuid4().hex[:8]}.link"
        os.symlink(target.relative_to(self.root), temporary)
        os.replace(temporary, link)  # atomic: readers see the old snapshot or the new one
        fsync_directory(self.root)

    def _prune(self, dataset: str) -> None:
        """Delete old snapshots beyond ``keep_snapshots`` that no training run pinned."""
        versions = self._published_versions(dataset)
        current = self.current(dataset)
        for name in versions[: max(len(versions) - self.keep_snapshots - 1, 0)]:
            directory = self.snapshots_dir(dataset) / name
            if current is not None and directory == current.directory:
                continue
            if (directory / "_pins").is_dir() and any((directory / "_pins").iterdir()):
                continue
            shutil.rmtree(directory, ignore_errors=True)


def _table_entry(snapshot: Snapshot, table: str) -> dict:
    """A table's manifest entry (rows, the version that wrote it), read from the file if the
    manifest does not list it."""
    entry = snapshot.manifest.get("tables", {}).get(table)
    if entry is None:
        entry = {"rows": pq.ParquetFile(snapshot.path(table)).metadata.num_rows,
                 "written_in": snapshot.version}
    return entry


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
