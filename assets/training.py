"""Stage 6 — training: Multi-KG4Rec, its ablations and baselines, evaluated in one harness.

Assets (per dataset partition, group ``training``):

* ``trained_model`` (+ ``training_runs``, ``metrics``): trains the ``TrainConfig.variant`` on
  the lake tables, writes a resumable checkpoint under ``<data_dir>/models/``, and appends the
  run and its metrics (final + learning curves) to the warehouse. By default the training runs
  out of the Dagster process: ``python -m model.job`` launched through Dagster Pipes
  (``TrainConfig.launch``; ``in_process`` runs the same job in the step's process).
* ``recommendations``: the top-k unseen items of every user, from the latest run.
* ``modality_preferences``: per-user visual vs text attention weights (the paper's Fig. 4).
* ``paper_tables``: Tables 2–4 over the latest run of every dataset × variant.

The bodies are thin: the model, the trainer and the evaluator live in ``model/``; every SQL
statement in ``warehouse.runs``.
"""

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from model.job import METRIC_COLUMNS, PATH_KEYS, RESULT_FILE, JobConfig, asset_metadata, run_job
from warehouse.runs import RunStore

if TYPE_CHECKING:
    from model.data import RecData
    from warehouse.lake import Snapshot

#: The checkout the training job is launched from (its ``model`` package is the child's).
REPO_ROOT = Path(__file__).resolve().parents[1]

STAGE = Stage(group="training", owners=("team:ml",))
INPUT_DEPS = ["split", "entities", "relations", "kg_triples", "clip_features",
              "neighbor_sequences"]


class TrainConfig(config_fields(TrainSettings, dg.Config)):
    """Stage 6 — one training run: every field of ``model.config.TrainSettings`` (defaults: the
    paper's settings where it gives them), plus whether to resume."""

    resume: bool = Field(default=True, description="Continue an interrupted run with the same config.")
    launch: Literal["subprocess", "in_process"] = Field(
        default="subprocess", description="subprocess: train in `python -m model.job`, launched "
        "through Dagster Pipes (logs and results stream back; a crash fails the step with the "
        "job's message; cancelling the run stops it). in_process: train in the step's process.")

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
                  warehouse: WarehouseResource, pipes_subprocess_client: dg.PipesSubprocessClient):
    dataset = context.partition_key
    settings = config.settings()
    selected = sorted(key.to_user_string() for key in context.selected_asset_keys)
    where = warehouse.warehouse()
    job = JobConfig(dataset=dataset, data_dir=str(lake.root), settings=settings,
                    resume=config.resume, report_assets=tuple(selected), source="dagster",
                    out_dir=str(lake.root / "models" / dataset / settings.variant
                                / settings.config_hash()),
                    warehouse={"path": str(where.path), "data_dir": str(where.lake.data_dir)})
    if config.launch == "in_process":
        summary = run_job(job, log=context.log.info)
        reported = {key: _typed(values) for key, values in asset_metadata(summary).items()}
    else:
        summary, reported = _launch(context, pipes_subprocess_client, job)
    warehouse.ensure_views(context.log)
    yield from _training_results(summary, reported, selected)


def _launch(context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient, job: JobConfig
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run ``python -m model.job`` through Pipes: its log lines stream to this run, its
    reported materializations come back, and its error message becomes the step's failure."""
    with tempfile.TemporaryDirectory(prefix="kg4rec-job-") as tmp:
        config_path, error_path = Path(tmp) / "run.json", Path(tmp) / "error.txt"
        config_path.write_text(json.dumps(job.to_dict()), "utf-8")
        command = [sys.executable, "-m", "model.job", "--config", str(config_path),
                   "--error-file", str(error_path)]
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        try:
            invocation = client.run(context=context, command=command, cwd=str(REPO_ROOT),
                                    env={"PYTHONPATH": path})
        except Exception as error:
            if not error_path.is_file():
                raise
            raise dg.Failure(description=f"training job failed: {error_path.read_text('utf-8')}",
                             metadata={"command": " ".join(command[1:3])}) from error
    reported = {result.asset_key.to_user_string(): dict(result.metadata or {})
                for result in invocation.get_results() if isinstance(result, dg.MaterializeResult)}
    summary = json.loads((job.output_dir() / RESULT_FILE).read_text("utf-8"))
    return summary, reported


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """The job's JSON metadata as Dagster metadata (what Pipes does for the child's)."""
    return {name: dg.MetadataValue.path(value) if name in PATH_KEYS else value
            for name, value in values.items()}


def _training_results(summary: dict[str, Any], reported: dict[str, dict[str, Any]],
                      selected: list[str]):
    """The selected assets' MaterializeResults: the job's values plus the figures built here."""
    train, run_id = summary["train"], summary["run_id"]
    title = f"{summary['dataset']} — {summary['variant']}"
    if "trained_model" in selected:
        test = {k: v for k, v in train["test"].items() if k != "users"}
        curves = png_markdown(curves_figure(train["history"], title),
                              "training and validation curves")
        notes = "\n".join(f"- {n}" for n in train["notes"]) or "none"
        yield dg.MaterializeResult(asset_key="trained_model", metadata={
            **reported.get("trained_model", {}),
            "test_metrics": metrics_markdown(test, train["best_valid"]),
            "curves": curves,
            "data": stats_markdown(summary["data"], "training data"),
            "notes": dg.MetadataValue.md(notes),
        })
    if "training_runs" in selected:
        yield dg.MaterializeResult(asset_key="training_runs", metadata={
            **reported.get("training_runs", {}), "run_id": run_id,
            **table_metadata(pd.DataFrame([summary["run"]]))})
    if "metrics" not in selected:
        return
    rows = pd.DataFrame(summary["metric_rows"], columns=METRIC_COLUMNS).astype(
        {"k": "Int64", "epoch": "Int64"})
    split = "test" if "test" in train["slices"] else "valid"
    slices = train["slices"][split]
    figure = slices_figure(slices, f"{title}: {split} by slice")
    yield dg.MaterializeResult(asset_key="metrics", metadata={
        **reported.get("metrics", {}), "run_id": run_id, **table_metadata(rows, sample_rows=10),
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
