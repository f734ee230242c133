"""Stage 3 — media: one poster and one description per item (``item_media``).

The asset reads ``items`` from the lake, joins the dataset's local metadata files, and lets
:class:`datasources.media.MediaCollector` walk the configured source chains (local files, OMDb,
TMDB, Wikipedia, Open Library, a title/genres fallback). Validated posters land in the
content-addressed cache ``<data_dir>/cache/images/``; the table keeps their paths, hashes and
original URLs. A blocking check stops the CLIP stage when too many poster downloads failed.

API keys come from environment variables (named in the config, never given in it: run config is
stored in Dagster's event log).
"""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.config_schema import config_fields, to_settings
from assets.metadata import check_result, stats_markdown, table_metadata
from assets.partitions import Stage, dataset_section, datasets_validator
from assets.resources import HttpResource, LakeResource, WarehouseResource
from datasources.http import HttpClient
from datasources.media import (
    DATASET_DEFAULTS,
    FetchCache,
    ImageStore,
    LocalMetadata,
    MediaCollector,
    MediaSettings,
    build_item_refs,
    contact_sheet,
    image_markdown,
    media_problems,
    media_table,
    summarize_media,
)
from datasources.media.keys import resolve_api_keys

STAGE = Stage(group="media", owners=("team:data",))


class MediaDatasetConfig(dg.Config):
    """Per dataset partition: source chains and local metadata files (all optional)."""

    poster_sources: list[str] | None = Field(
        default=None,
        description="Poster chain, first success wins (image_list, image_folder, omdb_file, "
        "poster_list, omdb_api, tmdb_api, wikipedia, openlibrary). Default: the dataset's chain "
        "(see DATASET_DEFAULTS).",
    )
    description_sources: list[str] | None = Field(
        default=None,
        description="Description chain (text_file, omdb_file, omdb_api, tmdb_api, wikipedia, "
        "openlibrary, title_genres). Default: the dataset's chain.",
    )
    omdb_records: str | None = Field(
        default=None,
        description="OMDb records as JSON lines (.gz ok): {movie_id, imdb_id, omdb: {...}}.",
    )
    poster_list: str | None = Field(default=None, description="'movie_id,url' lines, no header.")
    links: str | None = Field(
        default=None, description="MovieLens links.csv (movieId,imdbId,tmdbId): ids for the APIs."
    )
    descriptions: dict[str, str] | None = Field(
        default=None, description="Your own item texts: {location, item_col, text_col} of a "
        "CSV/TSV/Parquet/JSON-lines file (source text_file). Default: the dataset file's.")
    images: dict[str, str] | None = Field(
        default=None, description="Your own images: {location, item_col, image_col}, each a URL or "
        "a path (relative to the list) (source image_list). Default: the dataset file's.")
    image_folder: str | None = Field(
        default=None, description="A folder of <item_key>.<ext> images (source image_folder). "
        "Default: the dataset file's.")
    kind: str | None = Field(default=None, description="'movie' or 'book' (Wikipedia matching).")
    match_by: str | None = Field(
        default=None,
        description="How items meet the local files: 'item_key' (MovieLens movieId) or "
        "'title_year' (ML-100K, whose ids differ).",
    )


class MediaConfig(config_fields(MediaSettings, dg.Config,
                                exclude=("poster_sources", "description_sources", "api_keys"))):
    """Stage 3 — where posters and descriptions come from, and how politely they are fetched.

    Every field of ``datasources.media.MediaSettings`` (limits and endpoints as sections), plus
    the per-dataset chains and files, the HTTP overrides of this stage and the key variables."""

    datasets: dict[str, MediaDatasetConfig] = Field(
        default_factory=dict,
        description="Settings per dataset partition (ml-100k, ml-1m, amazon-book).",
    )
    _datasets_known = datasets_validator()
    # a materialization in the UI shows its progress; the library default stays quiet
    progress: bool = Field(default=True, description="tqdm progress bar on stderr.")
    # The media stage talks to rate-limited APIs, so it fails faster than the download stage.
    connect_timeout: float = Field(default=10.0, description="Seconds to connect.")
    read_timeout: float = Field(default=30.0, description="Seconds between bytes read.")
    retries: int | None = Field(default=3, description="HTTP retries; null: the http resource's.")
    max_retry_after: float = Field(default=30.0, description="Cap on an honoured Retry-After (s).")
    omdb_api_key_env: str = Field(
        default="OMDB_API_KEY", description="Environment variable with the OMDb key: "
        "OMDB_API_KEY or KG4REC_OMDB_API_KEY (no other: datasources/media/keys.py)."
    )
    tmdb_api_key_env: str = Field(
        default="TMDB_API_KEY", description="Environment variable with the TMDB key: "
        "TMDB_API_KEY or KG4REC_TMDB_API_KEY."
    )
    contact_sheet_size: int = Field(
        default=16, description="Posters shown in the metadata (0: none)."
    )
    from_chunks: bool = Field(
        default=False, description="Publish the union of the item_media_chunk partitions "
        "(dataset x item_chunk, run as a backfill) instead of fetching here; every chunk must "
        "have been materialized for the current items.")

    def dataset(self, dataset: str) -> MediaDatasetConfig:
        return dataset_section(self.datasets, dataset, MediaDatasetConfig())

    def settings_for(self, dataset: str, environ: Mapping[str, str] | None = None) -> MediaSettings:
        env = os.environ if environ is None else environ
        entry = self.dataset(dataset)
        chains = MediaSettings.for_dataset(dataset, entry.poster_sources,
                                           entry.description_sources)
        settings = to_settings(
            MediaSettings, self,
            poster_sources=chains.poster_sources,
            description_sources=chains.description_sources,
        )
        keys = resolve_api_keys(
            {"omdb": self.omdb_api_key_env, "tmdb": self.tmdb_api_key_env},
            {"omdb": settings.endpoints.omdb, "tmdb": settings.endpoints.tmdb}, env)
        return dataclasses.replace(settings, api_keys=keys)


class MediaCheckConfig(dg.Config):
    """Thresholds of the blocking check (run config key: ``item_media_failure_rate``).

    Failures are counted per item, after the whole poster chain: an item whose first URL was dead
    but whose second source worked is a success. ``no_source`` and ``skipped_offline`` items were
    never attempted, so they lower coverage, not the failure rate.
    """

    max_failure_rate: float = Field(
        default=0.2, description="Largest share of attempted poster downloads that may fail."
    )
    min_poster_coverage: float = Field(
        default=0.0, description="Smallest share of items with a poster."
    )
    min_description_coverage: float = Field(
        default=0.0, description="Smallest share of items with a description."
    )


def _histogram_md(counts: Mapping[str, int], title: str, total: int) -> dg.MetadataValue:
    """A markdown table with a text bar per value: readable in the UI without a plot."""
    lines = [f"**{title}**", "", "| value | count | share | |", "| --- | ---: | ---: | --- |"]
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        if not count:
            continue
        share = count / total if total else 0.0
        bar = "█" * round(share * 30)
        lines.append(f"| {str(name).replace('|', '/')} | {count:,} | {share:.1%} | {bar} |")
    return dg.MetadataValue.md("\n".join(lines))


def _contact_sheet_md(frame: pd.DataFrame, size: int) -> dg.MetadataValue | None:
    if size <= 0:
        return None
    shown = frame[frame["poster_status"] == "ok"].head(size)
    sheet = contact_sheet(list(shown["poster_path"]), [f"#{i}" for i in shown["item_id"]])
    if sheet is None:
        return None
    return dg.MetadataValue.md(image_markdown(sheet, f"{len(shown)} posters"))


def _summary_metadata(summary: Mapping[str, Any]) -> dict[str, Any]:
    n = summary["n_items"]
    return {
        "coverage/poster": summary["poster_coverage"],
        "coverage/description": summary["description_coverage"],
        "coverage/description_without_fallback": summary["description_coverage_without_fallback"],
        "failure_rate": summary["failure_rate"],
        "posters_attempted": summary["attempted"],
        "posters_failed": summary["failed"],
        "unique_posters": summary["unique_posters"],
        "poster_status": _histogram_md(summary["status_counts"], "poster_status", n),
        "poster_sources": _histogram_md(summary["poster_source_counts"], "poster_source (ok)", n),
        "description_sources": _histogram_md(
            summary["description_source_counts"], "description_source", n
        ),
        "top_failure_reasons": _histogram_md(
            summary["top_failure_reasons"], "failure reasons", summary["failed"]
        ),
        **{f"status/{k}": v for k, v in summary["status_counts"].items()},
    }


@STAGE.asset(
    kinds={"python", "parquet"},
    deps=["items"],
    description="One row per item: its poster (validated, RGB, ≤1024 px, stored once by sha256 "
    "under cache/images/; original URL kept) and description, from a configurable chain of sources "
    "(OMDb records/API, poster lists, TMDB, Wikipedia, Open Library, title+genres fallback).",
)
def item_media(
    context: dg.AssetExecutionContext,
    config: MediaConfig,
    http: HttpResource,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    dataset = context.partition_key
    items = lake.lake().read_pandas(dataset, "items")
    if config.from_chunks:
        from assets.chunks import chunks_union

        table, stats = chunks_union(lake, dataset, "item_media", context.log.info), None
    else:
        run = collect_media(context, config, http, lake, dataset, items)
        table, stats = media_table(run.frame), run.stats
    path = lake.publish(context, {"item_media": table})["item_media"]
    warehouse.ensure_views(context.log)
    return dg.MaterializeResult(metadata=media_metadata(context, config, lake, dataset, table, path, stats))


def collect_media(context, config: MediaConfig, http: HttpResource, lake: LakeResource,
                  dataset: str, items: pd.DataFrame):
    """Posters and descriptions of ``items`` through the configured chains (a MediaRun)."""
    entry = config.dataset(dataset)
    defaults = DATASET_DEFAULTS.get(dataset)
    local = LocalMetadata.load(
        entry.omdb_records, entry.poster_list, entry.links,
        descriptions=entry.descriptions or (defaults.descriptions if defaults else None),
        images=entry.images or (defaults.images if defaults else None),
        image_folder=entry.image_folder or (defaults.image_folder if defaults else None))
    refs = build_item_refs(
        items,
        local,
        kind=entry.kind or (defaults.kind if defaults else "movie"),
        match_by=entry.match_by or (defaults.match_by if defaults else "item_key"),
    )
    settings = config.settings_for(dataset)
    context.log.info(
        f"{dataset}: {len(refs)} items; posters {list(settings.poster_sources)}, descriptions "
        f"{list(settings.description_sources)}; offline={settings.offline}"
    )
    base = http.settings()
    http_settings = dataclasses.replace(
        base,
        progress=False,  # one bar for the stage, not one per poster
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries=config.retries if config.retries is not None else base.retries,
        max_retry_after=config.max_retry_after,
    )
    with (
        HttpClient(lake.cache_dir("media", "downloads"), http_settings) as client,
        FetchCache(lake.cache_dir("media") / "fetch_cache.sqlite") as cache,
    ):
        collector = MediaCollector(
            settings, client, cache, ImageStore(lake.cache_dir("images")), local, logger=context.log
        )
        return collector.run(refs)


def media_metadata(context, config: MediaConfig, lake: LakeResource, dataset: str, table,
                   path, stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """Coverage, failure rate, sources and a contact sheet; request statistics when this step
    fetched (``stats``), not when it joined chunks that did."""
    frame = table.to_pandas()
    summary = summarize_media(frame)
    context.log.info(
        f"{dataset}: posters {summary['poster_coverage']:.1%}, descriptions "
        f"{summary['description_coverage']:.1%}, failure rate {summary['failure_rate']:.1%}"
        + (f"; {stats['requests']} requests in {stats['seconds']:.1f}s" if stats else "")
    )
    metadata: dict[str, Any] = {
        **table_metadata(table, path),
        **_summary_metadata(summary),
        "image_cache": dg.MetadataValue.path(str(Path(lake.cache_dir("images")))),
    }
    if stats is not None:
        metadata.update({
            "run": stats_markdown(
                {k: v for k, v in stats.items() if not isinstance(v, dict)}, "requests and cache"
            ),
            "requests": stats["requests"],
            "items_per_s": stats["items_per_s"] or 0.0,
            "offline": config.offline,
            "disabled_sources": dg.MetadataValue.json(stats["disabled_sources"]),
            "unreachable_hosts": dg.MetadataValue.json(stats["unreachable_hosts"]),
        })
    sheet = _contact_sheet_md(frame, config.contact_sheet_size)
    if sheet is not None:
        metadata["contact_sheet"] = sheet
    return metadata


@dg.asset_check(
    asset=item_media,
    name="failure_rate",  # op name (run config key): item_media_failure_rate
    blocking=True,
    description="Exactly one row per item, and the share of failed poster downloads (404, 5xx, "
    "timeouts, invalid images, ...) among attempted ones at most max_failure_rate.",
)
def item_media_failure_rate(
    context: dg.AssetCheckExecutionContext, config: MediaCheckConfig, lake: LakeResource
) -> dg.AssetCheckResult:
    store, dataset = lake.lake(), context.partition_key
    frame = store.read_pandas(
        dataset,
        "item_media",
        [
            "item_id",
            "poster_status",
            "poster_error",
            "poster_source",
            "poster_sha256",
            "description",
            "description_source",
        ],
    )
    summary = summarize_media(frame)
    problems = media_problems(
        summary,
        max_failure_rate=config.max_failure_rate,
        min_poster_coverage=config.min_poster_coverage,
        min_description_coverage=config.min_description_coverage,
    )
    item_ids = store.read_pandas(dataset, "items", ["item_id"])["item_id"]
    if frame["item_id"].duplicated().any():
        problems.append(f"{int(frame['item_id'].duplicated().sum())} duplicate item_id rows")
    missing = set(item_ids) - set(frame["item_id"])
    if missing:
        problems.append(f"{len(missing)} items have no row (e.g. item_id {min(missing)})")
    if summary["failure_rate"] > config.max_failure_rate and summary["top_failure_reasons"]:
        top = sorted(summary["top_failure_reasons"].items(), key=lambda kv: -kv[1])[:3]
        problems.append("most frequent poster failures: "
                        + ", ".join(f"{reason} ({count} items)" for reason, count in top))
    # item_media has no pre-publish audit (the table is kept whatever the failure rate): this
    # check is what blocks CLIP. check_result (ERROR severity) fails the step with these
    # problems — the failure rate, its counts and threshold — as the error the user reads.
    return check_result(
        problems,
        failure_rate=summary["failure_rate"],
        max_failure_rate=config.max_failure_rate,
        posters_attempted=summary["attempted"],
        posters_failed=summary["failed"],
        poster_status=_histogram_md(summary["status_counts"], "poster_status", summary["n_items"]),
        top_failure_reasons=_histogram_md(
            summary["top_failure_reasons"], "failure reasons", summary["failed"]
        ),
    )


MEDIA_ASSETS = [item_media]
MEDIA_CHECKS = [item_media_failure_rate]
