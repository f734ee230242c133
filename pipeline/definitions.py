"""The one ``Definitions`` object: assets, checks, jobs and resources of the whole pipeline."""

from __future__ import annotations

import dagster as dg

from assets.checks import INGEST_CHECKS
from assets.chunks import CHUNK_ASSETS
from assets.features import FEATURES_ASSETS, FEATURES_CHECKS, EncoderResource
from assets.ingest import dataset_tables, split
from assets.kg import KG_CHECKS, knowledge_graph
from assets.media import MEDIA_ASSETS, MEDIA_CHECKS
from assets.neighbors import NEIGHBOR_CHECKS, neighbor_sequences
from assets.resources import HttpResource, LakeResource, WarehouseResource
from assets.training import TRAINING_ASSETS
from pipeline.executors import chunk_executor, in_process_by_default

INGEST_ASSETS = [dataset_tables, split]
KG_ASSETS = [knowledge_graph]
NEIGHBOR_ASSETS = [neighbor_sequences]

#: One job per stage (its asset group), in pipeline order; "main" is the whole graph.
STAGE_JOBS = [
    ("ingest", "Stage 1 only: download, parse, assign ids and split one dataset partition."),
    ("kg", "Stage 2 only: link items to entities and build the KG (needs the ingest tables)."),
    ("media", "Stage 3 only: posters and descriptions (needs the items table)."),
    ("features", "Stage 4 only: CLIP / sentence-encoder vectors (needs item_media and entities)."),
    ("neighbors", "Stage 5 only: the collaborative KG and every item's BFS neighbour sequence."),
    ("training", "Stage 6 only: train TrainConfig.variant and refresh recommendations and tables."),
]
stage_jobs = [dg.define_asset_job(name, selection=dg.AssetSelection.groups(name),
                                  description=description, executor_def=in_process_by_default)
              for name, description in STAGE_JOBS]
main_job = dg.define_asset_job(
    "main",
    # the item-chunk assets are partitioned dataset x item_chunk: they run as a backfill of
    # their own job, and item_media / clip_features (from_chunks) publish their union
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("chunks"),
    executor_def=in_process_by_default,
    description="The whole pipeline for one dataset partition: ingest → KG → media → features → "
    "neighbours → training → recommendations and tables.",
)

#: Stages 3-4 over dataset x item_chunk partitions (assets/chunks.py), one run per chunk: a
#: backfill fans the chunks out; Dagster's multiprocess executor is kept, and
#: a deployment swaps in k8s_job_executor / celery_executor with $KG4REC_EXECUTOR (deploy/).
chunks_job = dg.define_asset_job(
    "media_chunks", selection=dg.AssetSelection.groups("chunks"), executor_def=chunk_executor(),
    description="Posters, texts and their vectors for one dataset x item_chunk partition; "
    "backfill every chunk, then run item_media and clip_features with from_chunks: true.")

defs = dg.Definitions(
    assets=[*INGEST_ASSETS, *KG_ASSETS, *MEDIA_ASSETS, *FEATURES_ASSETS, *NEIGHBOR_ASSETS, *TRAINING_ASSETS,
            *CHUNK_ASSETS],
    asset_checks=[*INGEST_CHECKS, *KG_CHECKS, *MEDIA_CHECKS, *FEATURES_CHECKS, *NEIGHBOR_CHECKS],
    jobs=[main_job, *stage_jobs, chunks_job],
    executor=in_process_by_default,  # also what the UI's "Materialize" runs on
    resources={
        "http": HttpResource(),
        "lake": LakeResource(),
        "warehouse": WarehouseResource(),
        "encoder": EncoderResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),  # trained_model's training job
    },
)
