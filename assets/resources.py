"""Dagster resources: small configurable wrappers that hand pure objects to the assets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from datasources.http import MIRROR_ENV, HttpClient, HttpSettings, parse_mirrors
from features.encoders import EncoderSettings, ImageEncoder, TextEncoder, load_encoders
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


class HttpResource(dg.ConfigurableResource):
    """Every download goes through this client: retries, timeouts, cache, checksums, mirrors.

    ``mirror`` (or the ``KG4REC_MIRROR`` environment variable) maps upstream URL prefixes to a
    local directory or another base URL: ``"https://files.grouplens.org/=/srv/mirror/grouplens/"``,
    several separated by ``;``, or one directory for every URL (``/srv/mirror`` then holds
    ``<host>/<path>``).
    """

    mirror: str | None = None
    cache_dir: str | None = None  # default: <data_dir>/cache/downloads
    user_agent: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff_factor: float = 0.5
    max_retry_after: float = 120.0
    progress: bool = True

    def settings(self) -> HttpSettings:
        mirrors = parse_mirrors(self.mirror if self.mirror is not None else os.environ.get(MIRROR_ENV))
        kwargs = {"user_agent": self.user_agent} if self.user_agent else {}
        return HttpSettings(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries=self.retries,
            backoff_factor=self.backoff_factor,
            max_retry_after=self.max_retry_after,
            progress=self.progress,
            mirrors=mirrors,
            **kwargs,
        )

    def client(self) -> HttpClient:
        cache = Path(self.cache_dir) if self.cache_dir else default_data_dir() / "cache" / "downloads"
        return HttpClient(cache, self.settings())


class EncoderResource(dg.ConfigurableResource):
    """Where encoder weights come from and the hardware that runs them."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = Field(default=None, description="Image decode processes; default: all cores on CUDA.")
    gpu_decode: bool = Field(default=True, description="nvJPEG decoding when torchvision and CUDA are present.")
    jpeg_draft: bool = Field(default=False, description="PIL DCT-domain downscaling: faster, not bit-exact CLIP preprocessing.")
    cache_dir: str | None = Field(default=None, description="Hugging Face cache; default HF_HOME's.")
    offline: bool | None = Field(default=None, description="Load from the cache only; default: HF_HUB_OFFLINE.")

    def settings(self, config: FeaturesConfig | None = None) -> EncoderSettings:
        return EncoderSettings(
            device=(config and config.device) or self.device,
            dtype=(config and config.dtype) or self.dtype,
            batch_size=(config and config.batch_size) or self.batch_size,
            num_workers=self.num_workers,
            gpu_decode=self.gpu_decode,
            jpeg_draft=self.jpeg_draft,
            cache_dir=self.cache_dir,
            offline=self.offline,
        )

    def load(self, config: FeaturesConfig, log=None) -> tuple[ImageEncoder | None, TextEncoder | None]:
        return load_encoders(config.image_model, config.text_model, self.settings(config), config.revision, log)
