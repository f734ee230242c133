"""The one ``Definitions`` object: assets, checks, jobs and resources of the whole pipeline."""

from __future__ import annotations

import dagster as dg

from assets.checks import INGEST_CHECKS
from assets.ingest import dataset_tables, source_files, split
from pipeline.resources import HttpResource, LakeResource, WarehouseResource

INGEST_ASSETS = [source_files, dataset_tables, split]

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("ingest"),
    description="Stage 1 only: download, parse, assign ids and split one dataset partition.",
)

# The main job is the whole asset graph; every later stage joins it by being in the graph.
main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.all(),
    description="The whole pipeline for one dataset partition: ingest → KG → media → features → "
    "neighbours → training → recommendations and tables.",
)

defs = dg.Definitions(
    assets=[*INGEST_ASSETS],
    asset_checks=[*INGEST_CHECKS],
    jobs=[main_job, ingest_job],
    resources={
        "http": HttpResource(),
        "lake": LakeResource(),
        "warehouse": WarehouseResource(),
    },
)
