"""The media stage's pure code: posters and descriptions for every item (no Dagster here).

Modules, in the order data flows through them:

* :mod:`.local` — read the local metadata files (OMDb records, poster URL lists, MovieLens
  ``links.csv``) and join them to the ``items`` table as :class:`ItemRef` (ids resolved);
* :mod:`.sources` — one adapter per source (local files, OMDb, TMDB, Wikipedia, Open Library,
  the title/genres fallback), all network through :class:`datasources.http.HttpClient`;
* :mod:`.settings` — the chains per dataset and every knob, as plain values;
* :mod:`.collect` — the chains (first success wins), thread pool, cross-run cache
  (:mod:`.cache`) and offline mode, over :mod:`.requester` (single flight, per-host rate limit
  from :mod:`.throttle`, circuit breaker);
* :mod:`.table` — the ``item_media`` schema and the summary the asset check judges;
* :mod:`.images` — Pillow validation (bombs, truncation, HTML-as-JPEG), RGB + size bound, the
  content-addressed store and the contact sheet.

Typical use (what ``assets/media.py`` does)::

    refs = build_item_refs(items, LocalMetadata.load(omdb_records=..., poster_list=..., links=...))
    with HttpClient(cache_dir / "downloads", settings) as client, FetchCache(db) as cache:
        run = MediaCollector(MediaSettings.for_dataset("ml-1m"), client, cache,
                             ImageStore(data_dir / "cache" / "images"), local).run(refs)
    run.frame  # one row per item, columns MEDIA_COLUMNS; media_table(run.frame) for Parquet
"""

from datasources.media.cache import RETRY_POLICIES, FetchCache, should_retry
from datasources.media.collect import MediaCollector, MediaRun
from datasources.media.images import (
    ImageLimits,
    ImageRejected,
    ImageStore,
    ProcessedImage,
    contact_sheet,
    image_markdown,
    process_image,
)
from datasources.media.local import (
    LocalMetadata,
    build_item_refs,
    imdb_id_from_url,
    is_isbn10,
    normalize_imdb_id,
    read_links,
    read_omdb_records,
    read_poster_list,
)
from datasources.media.settings import DATASET_DEFAULTS, DatasetDefaults, MediaSettings, Redactor
from datasources.media.sources import SOURCE_NAMES, TEXT_KINDS, Endpoints, classify_error
from datasources.media.table import (
    MEDIA_COLUMNS,
    MEDIA_SCHEMA,
    media_problems,
    media_table,
    summarize_media,
)
from datasources.media.throttle import HostRateLimiter
from datasources.media.types import (
    FAILURE_STATUSES,
    POSTER_STATUSES,
    TRANSIENT_STATUSES,
    ItemRef,
    Lookup,
)

__all__ = [
    "DATASET_DEFAULTS",
    "FAILURE_STATUSES",
    "MEDIA_COLUMNS",
    "MEDIA_SCHEMA",
    "POSTER_STATUSES",
    "RETRY_POLICIES",
    "SOURCE_NAMES",
    "TEXT_KINDS",
    "TRANSIENT_STATUSES",
    "DatasetDefaults",
    "Endpoints",
    "FetchCache",
    "HostRateLimiter",
    "ImageLimits",
    "ImageRejected",
    "ImageStore",
    "ItemRef",
    "LocalMetadata",
    "Lookup",
    "MediaCollector",
    "MediaRun",
    "MediaSettings",
    "ProcessedImage",
    "Redactor",
    "build_item_refs",
    "classify_error",
    "contact_sheet",
    "image_markdown",
    "imdb_id_from_url",
    "is_isbn10",
    "media_problems",
    "media_table",
    "normalize_imdb_id",
    "process_image",
    "read_links",
    "read_omdb_records",
    "read_poster_list",
    "should_retry",
    "summarize_media",
]
