"""Dagster resources: small configurable wrappers that hand pure objects to the assets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.config_schema import config_fields, to_settings
from datasources.http import MIRROR_ENV, HttpClient, HttpSettings, parse_mirrors
from features.interface import EncoderSettings, ImageEncoder, TextEncoder
from warehouse import Lake, Warehouse

if TYPE_CHECKING:
    from assets.features import FeaturesConfig

DATA_DIR_ENV = "KG4REC_DATA_DIR"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data")).absolute()


class LakeResource(dg.ConfigurableResource):
    """The data directory: Parquet lake, download cache, media cache, checkpoints."""

    data_dir: str | None = None  # default: $KG4REC_DATA_DIR or ./data

    @property
    def root(self) -> Path:
        return Path(self.data_dir).absolute() if self.data_dir else default_data_dir()

    def lake(self) -> Lake:
        return Lake(self.root)

    def cache_dir(self, *parts: str) -> Path:
        path = self.root.joinpath("cache", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file with one view per lake table."""

    data_dir: str | None = None
    database: str | None = None  # default: <data_dir>/warehouse.duckdb

    def warehouse(self) -> Warehouse:
        root = Path(self.data_dir).absolute() if self.data_dir else default_data_dir()
        return Warehouse(Path(self.database) if self.database else root / "warehouse.duckdb", Lake(root))


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
