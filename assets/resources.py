"""Dagster resources: small configurable wrappers that hand pure objects to the assets."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.config_schema import config_fields, to_settings
from datasources.http import MIRROR_ENV, HttpClient, HttpSettings, parse_mirrors
from features.interface import EncoderSettings, ImageEncoder, TextEncoder
from warehouse import Lake, Warehouse
from warehouse.files import exclusive_lock

if TYPE_CHECKING:
    from assets.features import FeaturesConfig

DATA_DIR_ENV = "KG4REC_DATA_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data")).absolute()


class LakeResource(dg.ConfigurableResource):
    """The data directory: Parquet lake, download cache, media cache, checkpoints."""

    data_dir: str | None = None  # default: $KG4REC_DATA_DIR or ./data
    max_row_drop: float = Field(
        default=0.5, description="Refuse to publish a table whose row count falls by more than "
        "this fraction against the current snapshot (a broken download, not a real change).")
    keep_snapshots: int = Field(default=10, description="Old lake snapshots kept for time travel "
                                "(beyond those a training run read, which are always kept).")
    lock_timeout_s: float = Field(default=1800.0, description="How long a writer (or a run) "
                                  "waits for another one of the same dataset partition.")

    @property
    def root(self) -> Path:
        return Path(self.data_dir).absolute() if self.data_dir else default_data_dir()

    def lake(self, log: Callable[[str], None] | None = None) -> Lake:
        return Lake(self.root, max_row_drop=self.max_row_drop, keep_snapshots=self.keep_snapshots,
                    lock_timeout_s=self.lock_timeout_s, log=log)

    def publish(self, context: dg.AssetExecutionContext, tables: Mapping[str, object],
                checks: Mapping[str, Callable[[object], list[str]]] | None = None) -> dict[str, Path]:
        """Write ``tables`` to the run's dataset partition in one lake transaction: audited
        — the lake's guards plus the asset's blocking ``checks`` (name → function of the staged
        tables, see ``assets.checks``) — and published together, or not at all. Returns each
        table's published path."""
        store = self.lake(context.log.info)
        with store.transaction(context.partition_key, note=f"run {context.run.run_id}: "
                               f"{', '.join(tables)}", holder=f"run {context.run.run_id}") as tx:
            paths = {name: tx.write(name, frame) for name, frame in tables.items()}
            for name, check in (checks or {}).items():
                tx.check(name, check(tx))
        return paths

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[LakeResource]:
        """Hold the run's dataset partition for the whole run: two runs of one partition would
        interleave their tables (each step publishes atomically, a run of steps does not), so
        the second waits here — logging whom it waits for — or fails after lock_timeout_s."""
        run = context.run
        partition = run.tags.get("dagster/partition") if run is not None else None
        if partition is None:
            yield self
            return
        log = context.log.info if context.log is not None else None
        lock = self.root / "lake" / ".snapshots" / partition / ".run.lock"
        if "|" in partition:  # one dataset x item_chunk partition: chunks of one dataset run at once
            lock = self.root / "chunks" / ".locks" / f"{partition.replace('|', '.')}.lock"
        with exclusive_lock(lock, timeout_s=self.lock_timeout_s, holder=f"run {run.run_id}",
                            on_wait=log) as died_holding:
            if died_holding:
                _fail_dead_run(context, died_holding.removeprefix("run "), partition)
            yield self

    def cache_dir(self, *parts: str) -> Path:
        path = self.root.joinpath("cache", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _fail_dead_run(context: dg.InitResourceContext, run_id: str, partition: str) -> None:
    """A run that died holding this partition's run lock (``kill -9``, out of memory) stays
    STARTED in Dagster for ever: no process is left to report its end, and the default run
    launcher cannot check on it. Holding the lock now proves it is gone, so say so."""
    instance = context.instance
    dead = instance.get_run_by_id(run_id) if instance is not None else None
    if dead is None or dead.is_finished or run_id == context.run.run_id:
        return
    instance.report_run_failed(dead, message=(
        f"its process died while materializing partition {partition!r} (found by run "
        f"{context.run.run_id}, which now holds the partition); the lake kept the last snapshot "
        "published before it"))
    if context.log is not None:
        context.log.warning(f"run {run_id} had died holding {partition!r}: marked failed")


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file with one view per lake table."""

    data_dir: str | None = None
    database: str | None = None  # default: <data_dir>/warehouse.duckdb

    def warehouse(self) -> Warehouse:
        root = Path(self.data_dir).absolute() if self.data_dir else default_data_dir()
        return Warehouse(Path(self.database) if self.database else root / "warehouse.duckdb", Lake(root))

    def ensure_views(self, log) -> None:
        """Create the views of tables new to the lake; never fails a materialization (a reader
        holding the database only delays the views, see ``Warehouse.ensure_views``)."""
        created, problem = self.warehouse().ensure_views()
        if problem:
            log.warning(problem)
        elif created:
            log.info(f"warehouse views: {', '.join(created)}")


class HttpResource(config_fields(HttpSettings, dg.ConfigurableResource, exclude=("mirrors",))):
    """Every download goes through this client: retries, timeouts, cache, checksums, mirrors.

    Its fields are ``datasources.http.HttpSettings``'s, plus where the cache is and ``mirror``
    (or the ``KG4REC_MIRROR`` environment variable), which maps upstream URL prefixes to a local
    directory or another base URL: ``"https://files.grouplens.org/=/srv/mirror/grouplens/"``,
    several separated by ``;``, or one directory for every URL (``/srv/mirror`` then holds
    ``<host>/<path>``).
    """

    mirror: str | None = Field(default=None, description="Mirrors (see above); default: $KG4REC_MIRROR.")
    cache_dir: str | None = Field(default=None, description="Download cache; default <data_dir>/cache/downloads.")

    def settings(self) -> HttpSettings:
        mirrors = parse_mirrors(self.mirror if self.mirror is not None else os.environ.get(MIRROR_ENV))
        return to_settings(HttpSettings, self, mirrors=mirrors)

    def client(self) -> HttpClient:
        cache = Path(self.cache_dir) if self.cache_dir else default_data_dir() / "cache" / "downloads"
        return HttpClient(cache, self.settings())


class EncoderResource(config_fields(EncoderSettings, dg.ConfigurableResource, exclude=("normalize",))):
    """Where encoder weights come from and the hardware that runs them (the fields of
    ``features.encoders.EncoderSettings``); a run's ``FeaturesConfig`` may override device,
    dtype and batch size."""

    def settings(self, config: FeaturesConfig | None = None) -> EncoderSettings:
        overrides = {name: value for name in ("device", "dtype", "batch_size")
                     if config is not None and (value := getattr(config, name))}
        return to_settings(EncoderSettings, self, **overrides)

    def load(self, config: FeaturesConfig, log=None) -> tuple[ImageEncoder | None, TextEncoder | None]:
        from features.encoders import load_encoders  # torch + transformers: only when encoding

        return load_encoders(config.image_model, config.text_model, self.settings(config), config.revision, log)
