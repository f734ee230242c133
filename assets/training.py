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

import json

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field

from assets.config_schema import config_fields, to_settings
from assets.metadata import png_markdown, stats_markdown, table_metadata
from assets.partitions import dataset_partitions
from assets.resources import LakeResource, WarehouseResource
from model.config import FUSION_VARIANTS, TrainSettings
from model.data import OPTIONAL_TABLES, REQUIRED_TABLES, RecData, build_data
from model.report import (
    code_version,
    metric_rows,
    modality_preference_frame,
    new_run_id,
    recommendation_frame,
    run_row,
)
from model.train import load_model, train
from warehouse.runs import RunStore

GROUP = "training"
OWNERS = ["team:ml"]
INPUT_DEPS = ["split", "entities", "relations", "kg_triples", "clip_features",
              "neighbor_sequences"]


class TrainConfig(config_fields(TrainSettings, dg.Config)):
    """Stage 6 — one training run: every field of ``model.config.TrainSettings`` (defaults: the
    paper's settings where it gives them), plus whether to resume."""

    resume: bool = Field(default=True, description="Continue an interrupted run with the same config.")

    def settings(self) -> TrainSettings:
        return to_settings(TrainSettings, self)


class OutputConfig(dg.Config):
    """Which run the downstream assets read."""

    variant: str | None = Field(default=None, description="Variant whose latest run is used "
                                "(default: the latest run of the dataset; for modality "
                                "preferences the latest fusion run).")
    top_k: int = Field(default=20, description="Recommendations per user.")


def read_training_tables(lake: LakeResource, dataset: str) -> dict[str, pd.DataFrame | None]:
    """Required tables (a clear error when missing) and the optional ones that exist."""
    store = lake.lake()
    tables: dict[str, pd.DataFrame | None] = {}
    for name in REQUIRED_TABLES:
        tables[name] = store.read_pandas(dataset, name)  # raises with the asset to materialize
    for name in OPTIONAL_TABLES:
        tables[name] = store.read(dataset, name) if store.exists(dataset, name) else None
    return tables


def load_training_data(lake: LakeResource, dataset: str, seq_len: int | None) -> RecData:
    return build_data(read_training_tables(lake, dataset), max_seq_len=seq_len)


def _curves_figure(history: list[dict], title: str):
    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    left.plot(epochs, [r["loss"] for r in history], label="total")
    left.plot(epochs, [r["bpr"] for r in history], label="BPR")
    if any(r["kg"] for r in history):
        left.plot(epochs, [r["kg"] for r in history], label="KG (TransR)")
    left.set_xlabel("epoch")
    left.set_title("training loss")
    left.legend()
    valid = [r for r in history if "valid/recall@20" in r]
    for key in ("recall@20", "ndcg@20", "mrr@20"):
        right.plot([r["epoch"] for r in valid], [r[f"valid/{key}"] for r in valid], marker=".",
                   label=key)
    right.set_xlabel("epoch")
    right.set_title("validation")
    right.legend()
    figure.suptitle(title)
    return figure


def _metrics_markdown(test: dict, valid: dict) -> dg.MetadataValue:
    names = sorted({k.split("@")[0] for k in valid if "@" in k})
    ks = sorted({int(k.split("@")[1]) for k in valid if "@" in k})
    splits = [("test", test)] * bool(test) + [("valid", valid)]
    lines = ["| metric | " + " | ".join(f"{s} @{k}" for s, _ in splits for k in ks) + " |",
             "| --- |" + " --- |" * (len(splits) * len(ks))]
    for name in names:
        cells = [f"{values[f'{name}@{k}']:.4f}" for _, values in splits for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def _slices_markdown(slices: dict[str, dict[str, float]], split: str) -> dg.MetadataValue:
    lines = [f"| slice ({split}) | users | recall@20 | ndcg@20 | mrr@20 |",
             "| --- | --- | --- | --- | --- |"]
    for name, m in slices.items():
        lines.append(f"| {name} | {int(m['users'])} | {m['recall@20']:.4f} | "
                     f"{m['ndcg@20']:.4f} | {m['mrr@20']:.4f} |")
    return dg.MetadataValue.md("\n".join(lines))


def _slices_figure(slices: dict[str, dict[str, float]], title: str):
    names = list(slices)
    figure, axis = plt.subplots(figsize=(7, 3))
    width = 0.4
    for offset, metric in ((-width / 2, "recall@20"), (width / 2, "ndcg@20")):
        axis.bar([i + offset for i in range(len(names))], [slices[n][metric] for n in names],
                 width, label=metric)
    axis.set_xticks(range(len(names)), names, rotation=20)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


@dg.multi_asset(
    specs=[
        dg.AssetSpec("trained_model", deps=INPUT_DEPS, group_name=GROUP, owners=OWNERS,
                     kinds={"pytorch", "safetensors"}, skippable=True,
                     description="A trained recommender (TrainConfig.variant): checkpoint "
                     "(safetensors + config JSON) under <data_dir>/models/, resumable."),
        dg.AssetSpec("training_runs", deps=["trained_model"], group_name=GROUP, owners=OWNERS,
                     kinds={"duckdb"}, skippable=True,
                     description="One row per training run (config, code version, device, time)."),
        dg.AssetSpec("metrics", deps=["trained_model"], group_name=GROUP, owners=OWNERS,
                     kinds={"duckdb"}, skippable=True,
                     description="Final test/valid metrics (epoch NULL) and learning curves."),
    ],
    partitions_def=dataset_partitions,
    # one training run produces all three; selecting any of them trains (and records the run in
    # the warehouse), and yields the selected ones, so `clip_features+` & co. resolve
    can_subset=True,
)
def trained_model(context: dg.AssetExecutionContext, config: TrainConfig, lake: LakeResource,
                  warehouse: WarehouseResource):
    dataset = context.partition_key
    settings = config.settings()
    data = load_training_data(lake, dataset, settings.seq_len)
    out_dir = lake.root / "models" / dataset / settings.variant / settings.config_hash()
    context.log.info(f"{dataset}/{settings.variant}: {data.summary()}")
    result = train(settings, data, out_dir, resume=config.resume, log=context.log.info)

    run_id = new_run_id(dataset, settings.variant, result.config_hash)
    run = run_row(run_id, dataset, result, source="dagster")
    rows = metric_rows(result)
    store = RunStore(warehouse.warehouse())
    store.record_run(run, rows)

    test = {k: v for k, v in result.test.items() if k != "users"}
    figure = _curves_figure(result.history, f"{dataset} — {settings.variant}")
    curves = png_markdown(figure, "training and validation curves")
    plt.close(figure)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    model_metadata = {
        "run_id": run_id,
        "variant": settings.variant,
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
        "test_metrics": _metrics_markdown(test, result.best_valid),
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
    figure = _slices_figure(slices, f"{dataset} — {settings.variant}: {split} by slice")
    yield dg.MaterializeResult(asset_key="metrics", metadata={
        "run_id": run_id, **table_metadata(rows, sample_rows=10),
        "slices": _slices_markdown(slices, split),
        "slices_chart": png_markdown(figure, "Recall/NDCG@20 per popularity and activity slice"),
    })
    plt.close(figure)


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
    """The run's best checkpoint, rebuilt over the current lake tables (same device)."""
    settings = TrainSettings.from_dict(json.loads(run["config_json"]))
    data = load_training_data(lake, dataset, settings.seq_len)
    model = load_model(run["checkpoint_path"], data, device="auto")
    return model, data.to(next(model.parameters()).device)


@dg.asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    deps=["trained_model"],
    description="Top-k unseen items per user (seen = every pair of the split) from the latest "
    "run: run_id, user_id, rank, item_id, score.",
)
def recommendations(context: dg.AssetExecutionContext, config: OutputConfig, lake: LakeResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    run = _pick_run(store, dataset, config.variant)
    if run is None:
        raise dg.Failure(f"no training run for {dataset}: materialize trained_model first")
    model, data = _load_run_model(lake, dataset, run)
    frame = recommendation_frame(model, data, config.top_k)
    store.write_recommendations(run["run_id"], frame)
    coverage = frame["item_id"].nunique() / max(data.n_items, 1)
    return dg.MaterializeResult(metadata={
        "run_id": run["run_id"], "variant": run["variant"], **table_metadata(frame, sample_rows=10),
        "catalogue_coverage": float(coverage), "users": int(frame["user_id"].nunique()),
    })


def _preferences_figure(frame: pd.DataFrame, title: str):
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    weights = frame["visual_weight"].dropna()
    left.hist(weights, bins=np.linspace(0, 1, 21), color="#4C72B0")
    left.set_xlabel("visual weight (text = 1 − visual)")
    left.set_ylabel("users")
    left.set_title("per-user modality preference")
    top = frame.dropna().sort_values("n_items", ascending=False).head(10)
    positions = np.arange(len(top))
    right.barh(positions, top["visual_weight"], color="#DD8452", label="visual")
    right.barh(positions, top["text_weight"], left=top["visual_weight"], color="#55A868",
               label="text")
    right.set_yticks(positions, [f"u{u}" for u in top["user_id"]])
    right.set_xlim(0, 1)
    right.set_title("most active users (Fig. 4)")
    right.legend(loc="lower right")
    figure.suptitle(title)
    return figure


@dg.asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    deps=["trained_model"],
    description="Per-user visual vs text attention weights of the latest fusion run (the "
    "paper's Fig. 4): run_id, user_id, visual_weight, text_weight.",
)
def modality_preferences(context: dg.AssetExecutionContext, config: OutputConfig,
                         lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    run = _pick_run(store, dataset, config.variant, fusion_only=True)
    if run is None:
        context.log.warning(f"{dataset}: no Multi-KG4Rec run yet; nothing to report")
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no fusion run"})
    model, data = _load_run_model(lake, dataset, run)
    frame = modality_preference_frame(model, data)
    if frame is None:
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "run_id": run["run_id"],
                                              "note": f"{run['variant']} has no fusion module"})
    store.write_modality_preferences(run["run_id"], frame)
    figure = _preferences_figure(frame, f"{dataset} — {run['variant']}")
    chart = png_markdown(figure, "modality preferences")
    plt.close(figure)
    weights = frame["visual_weight"].dropna()
    return dg.MaterializeResult(metadata={
        "run_id": run["run_id"], "variant": run["variant"], **table_metadata(frame),
        "mean_visual_weight": float(weights.mean()) if len(weights) else float("nan"),
        "users_preferring_visual": int((weights > 0.5).sum()),
        "chart": chart,
    })


def paper_table_markdown(frame: pd.DataFrame, paper_table: str) -> str:
    """One of the paper's tables: rows = models, columns = dataset × (Recall, MRR, NDCG)."""
    part = frame[frame["paper_table"] == paper_table]
    if part.empty:
        return f"**{paper_table}**: no runs yet"
    datasets = sorted(part["dataset"].unique())
    labels = part.sort_values("row_order").drop_duplicates("row_label")["row_label"].tolist()
    header = "| Models | " + " | ".join(f"{d} Recall | {d} MRR | {d} NDCG" for d in datasets) + " |"
    lines = [f"**{paper_table}** (test, @20, latest run per dataset × variant)", "", header,
             "| --- |" + " --- |" * (3 * len(datasets))]
    improvements = []
    for label in labels:
        cells, improv = [], []
        for d in datasets:
            row = part[(part["row_label"] == label) & (part["dataset"] == d)]
            if row.empty:
                cells += ["–"] * 3
                improv += ["–"] * 3
                continue
            r = row.iloc[0]
            cells += [f"{r['recall']:.4f}", f"{r['mrr']:.4f}", f"{r['ndcg']:.4f}"]
            improv += ["–" if pd.isna(r[f"improvement_{m}"]) else f"{100 * r[f'improvement_{m}']:.2f}%"
                       for m in ("recall", "mrr", "ndcg")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if any(c != "–" for c in improv):
            improvements.append(f"| Improv. ({label}) | " + " | ".join(improv) + " |")
    return "\n".join(lines + improvements)


def _bars_figure(frame: pd.DataFrame, dataset: str):
    part = frame[frame["dataset"] == dataset].drop_duplicates("variant").set_index("variant")
    figure, axis = plt.subplots(figsize=(8, 3))
    if part.empty:
        axis.set_title(f"{dataset}: no runs")
        return figure
    x = np.arange(len(part))
    for offset, metric in zip((-0.25, 0.0, 0.25), ("recall", "mrr", "ndcg"), strict=True):
        axis.bar(x + offset, part[metric], width=0.25, label=f"{metric}@20")
    axis.set_xticks(x, part.index)
    axis.set_title(f"{dataset}: test metrics of the latest run per variant")
    axis.legend()
    return figure


@dg.asset(
    partitions_def=dataset_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    deps=["metrics"],
    description="The paper's Tables 2–4 over the latest run of every dataset × variant "
    "(DuckDB table paper_tables + markdown), and a bar chart per variant.",
)
def paper_tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource
                 ) -> dg.MaterializeResult:
    dataset = context.partition_key
    store = RunStore(warehouse.warehouse())
    frame = store.rebuild_paper_tables()
    figure = _bars_figure(frame, dataset)
    chart = png_markdown(figure, "metrics per variant")
    plt.close(figure)
    return dg.MaterializeResult(metadata={
        **table_metadata(frame, sample_rows=20),
        "table_2": dg.MetadataValue.md(paper_table_markdown(frame, "Table 2")),
        "table_3": dg.MetadataValue.md(paper_table_markdown(frame, "Table 3")),
        "table_4": dg.MetadataValue.md(paper_table_markdown(frame, "Table 4")),
        "chart": chart,
        "code_version": code_version(),
    })


TRAINING_ASSETS = [trained_model, recommendations, modality_preferences, paper_tables]
