"""Stage 6 — training: Multi-KG4Rec, its ablations and baselines, evaluated in one harness.

Assets (per dataset partition, group ``training``):

* ``trained_model`` (+ ``training_runs``, ``metrics``): trains the ``TrainConfig.variant`` on
  the lake tables, writes a resumable checkpoint under ``<data_dir>/models/``, and appends the
  run and its metrics (final + learning curves) to the warehouse.
* ``recommendations``: the top-k unseen items of every user, from the latest run.
* ``modality_preferences``: per-user visual vs text attention weights (the paper's Fig. 4).
* ``paper_tables``: Tables 2–4 over the latest run of every dataset × variant.

The bodies are thin: the model, the trainer and the evaluator live in ``model/``; every SQL
statement in ``warehouse.runs``.
"""

from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.config_schema import config_fields, to_settings
from assets.figures import (
    bars_figure,
    curves_figure,
    metrics_markdown,
    paper_table_markdown,
    preferences_figure,
    slices_figure,
    slices_markdown,
)
from assets.metadata import png_markdown, stats_markdown, table_metadata
from assets.partitions import Stage
from assets.resources import LakeResource, WarehouseResource
from model.config import FUSION_VARIANTS, TrainSettings
from warehouse.runs import RunStore

if TYPE_CHECKING:
    from model.data import RecData
    from warehouse.lake import Snapshot

STAGE = Stage(group="training", owners=("team:ml",))
INPUT_DEPS = ["split", "entities", "relations", "kg_triples", "clip_features",
              "neighbor_sequences"]


class TrainConfig(config_fields(TrainSettings, dg.Config)):
    """Stage 6 — one training run: every field of ``model.config.TrainSettings`` (defaults: the
    paper's settings where it gives them), plus whether to resume."""

    resume: bool = Field(default=True, description="Continue an interrupted run with the same config.")

    def settings(self) -> TrainSettings:
        return to_settings(TrainSettings, self)


class RunSelectionConfig(dg.Config):
    """Which run the downstream assets read."""

    variant: str | None = Field(default=None, description="Variant whose latest run is used "
                                "(default: the latest run of the dataset; for modality "
                                "preferences the latest fusion run).")
    top_k: int = Field(default=20, description="Recommendations per user.")


def load_training_data(lake: LakeResource, dataset: str, version: int | None = None
                       ) -> tuple["RecData", "Snapshot"]:
    """The training data of one lake snapshot (the published one, or ``version``)."""
    from model.data import build_data, read_snapshot_tables

    snapshot = lake.lake().snapshot(dataset, version)
    return build_data(read_snapshot_tables(snapshot)), snapshot


@STAGE.multi_asset(
    specs=[
        STAGE.spec("trained_model", deps=INPUT_DEPS, kinds={"pytorch", "safetensors"}, description="A trained recommender (TrainConfig.variant): checkpoint "
                     "(safetensors + config JSON) under <data_dir>/models/, resumable."),
        STAGE.spec("training_runs", deps=["trained_model"], kinds={"duckdb"}, description="One row per training run (config, code version, device, time)."),
        STAGE.spec("metrics", deps=["trained_model"], kinds={"duckdb"}, description="Final test/valid metrics (epoch NULL) and learning curves."),
    ],
    # one training run produces all three; selecting any of them trains (and records the run in
    # the warehouse), and yields the selected ones, so `clip_features+` & co. resolve
    can_subset=True,
)
def trained_model(context: dg.AssetExecutionContext, config: TrainConfig, lake: LakeResource,
                  warehouse: WarehouseResource):
    # torch and the model are imported when a step runs, not when the code location loads
    from model.report import metric_rows, new_run_id, run_row
    from model.train import train

    dataset = context.partition_key
    settings = config.settings()
    data, snapshot = load_training_data(lake, dataset)
    out_dir = lake.root / "models" / dataset / settings.variant / settings.config_hash()
    context.log.info(f"{dataset}/{settings.variant}: {data.summary()}")
    result = train(settings, data, out_dir, resume=config.resume, log=context.log.info)

    run_id = new_run_id(dataset, settings.variant, result.config_hash)
    run = run_row(run_id, dataset, result, source="dagster") | {"lake_version": snapshot.version}
    rows = metric_rows(result)
    lake.lake().pin(snapshot, run_id)  # the data of every run stays readable (time travel)
    store = RunStore(warehouse.warehouse())
    store.record_run(run, rows)
    warehouse.ensure_views(context.log)

    test = {k: v for k, v in result.test.items() if k != "users"}
    figure = curves_figure(result.history, f"{dataset} — {settings.variant}")
    curves = png_markdown(figure, "training and validation curves")
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    model_metadata = {
        "run_id": run_id,
        "variant": settings.variant,
        "lake_version": snapshot.version,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "seconds_per_epoch": result.seconds_per_epoch,
        "eval_seconds": result.eval_seconds,
        "total_seconds": result.total_seconds,
        "device": result.device,
        "config_hash": result.config_hash,
        "code_version": run["code_version"],
        "n_parameters": result.n_parameters,
        "resumed_from_epoch": result.resumed_from_epoch,
        "checkpoint": dg.MetadataValue.path(result.checkpoint_path),
        "test_metrics": metrics_markdown(test, result.best_valid),
        **{f"test/{k}": float(v) for k, v in test.items()},
        "curves": curves,
        "data": stats_markdown(data.summary(), "training data"),
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
    }
    if "trained_model" in selected:
        yield dg.MaterializeResult(asset_key="trained_model", metadata=model_metadata)
    if "training_runs" in selected:
        yield dg.MaterializeResult(asset_key="training_runs",
                                   metadata={"run_id": run_id, **table_metadata(pd.DataFrame([run]))})
    if "metrics" not in selected:
        return
    split = "test" if "test" in result.slices else "valid"
    slices = result.slices[split]
    figure = slices_figure(slices, f"{dataset} — {settings.variant}: {split} by slice")
    yield dg.MaterializeResult(asset_key="metrics", metadata={
        "run_id": run_id, **table_metadata(rows, sample_rows=10),
        "slices": slices_markdown(slices, split),
        "slices_chart": png_markdown(figure, "Recall/NDCG@20 per popularity and activity slice"),
    })


def _pick_run(store: RunStore, dataset: str, variant: str | None, fusion_only: bool = False
              ) -> dict | None:
    if variant is not None:
        return store.latest_run(dataset, variant)
    if not fusion_only:
        return store.latest_run(dataset)
    runs = [store.latest_run(dataset, v) for v in FUSION_VARIANTS]
    runs = [r for r in runs if r is not None]
    return max(runs, key=lambda r: (r["finished_at"], r["run_id"])) if runs else None


def _load_run_model(lake: LakeResource, dataset: str, run: dict):
    """The run's best checkpoint, rebuilt over the lake snapshot it trained on (its ids are
    those of that snapshot, whatever was re-ingested since)."""
    from model.checkpoints import load_model

    data, _ = load_training_data(lake, dataset, run.get("lake_version") or None)
    model = load_model(run["checkpoint_path"], data, device="auto")
    return model, data.to(next(model.parameters()).device)


@STAGE.asset(
    kinds={"duckdb"},
    deps=["trained_model"],
    description="Top-k unseen items per user (seen = every pair of the split) from the latest "
    "run: run_id, user_id, rank, item_id, score.",
)
def recommendations(context: dg.AssetExecutionContext, config: RunSelectionConfig, lake: LakeResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    run = _pick_run(store, dataset, config.variant)
    if run is None:
        raise dg.Failure(f"no training run for {dataset}: materialize trained_model first")
    model, data = _load_run_model(lake, dataset, run)
    from model.report import recommendation_frame

    frame = recommendation_frame(model, data, config.top_k)
    store.write_recommendations(run["run_id"], frame)
    warehouse.ensure_views(context.log)
    coverage = frame["item_id"].nunique() / max(data.n_items, 1)
    return dg.MaterializeResult(metadata={
        "run_id": run["run_id"], "variant": run["variant"], **table_metadata(frame, sample_rows=10),
        "catalogue_coverage": float(coverage), "users": int(frame["user_id"].nunique()),
    })


@STAGE.asset(
    kinds={"duckdb"},
    deps=["trained_model"],
    description="Per-user visual vs text attention weights of the latest fusion run (the "
    "paper's Fig. 4): run_id, user_id, visual_weight, text_weight.",
)
def modality_preferences(context: dg.AssetExecutionContext, config: RunSelectionConfig,
                         lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    run = _pick_run(store, dataset, config.variant, fusion_only=True)
    if run is None:
        context.log.warning(f"{dataset}: no Multi-KG4Rec run yet; nothing to report")
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no fusion run"})
    model, data = _load_run_model(lake, dataset, run)
    from model.report import modality_preference_frame

    frame = modality_preference_frame(model, data)
    if frame is None:
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "run_id": run["run_id"],
                                              "note": f"{run['variant']} has no fusion module"})
    store.write_modality_preferences(run["run_id"], frame)
    warehouse.ensure_views(context.log)
    figure = preferences_figure(frame, f"{dataset} — {run['variant']}")
    chart = png_markdown(figure, "modality preferences")
    weights = frame["visual_weight"].dropna()
    return dg.MaterializeResult(metadata={
        "run_id": run["run_id"], "variant": run["variant"], **table_metadata(frame),
        "mean_visual_weight": float(weights.mean()) if len(weights) else float("nan"),
        "users_preferring_visual": int((weights > 0.5).sum()),
        "chart": chart,
    })


@STAGE.asset(
    kinds={"duckdb"},
    deps=["metrics"],
    description="The paper's Tables 2–4 over the latest run of every dataset × variant "
    "(DuckDB table paper_tables + markdown), and a bar chart per variant.",
)
def paper_tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource
                 ) -> dg.MaterializeResult:
    from model.report import code_version

    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    frame = store.rebuild_paper_tables()
    warehouse.ensure_views(context.log)
    figure = bars_figure(frame, dataset)
    chart = png_markdown(figure, "metrics per variant")
    return dg.MaterializeResult(metadata={
        **table_metadata(frame, sample_rows=20),
        "table_2": dg.MetadataValue.md(paper_table_markdown(frame, "Table 2")),
        "table_3": dg.MetadataValue.md(paper_table_markdown(frame, "Table 3")),
        "table_4": dg.MetadataValue.md(paper_table_markdown(frame, "Table 4")),
        "chart": chart,
        "code_version": code_version(),
    })


TRAINING_ASSETS = [trained_model, recommendations, modality_preferences, paper_tables]
