"""Run results as rows: run ids, code version, metric rows, recommendations, modality weights.

Shared by the Dagster assets and the benchmark scripts (pandas only; no Dagster, no DuckDB).
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from model.data import RecData
from model.evaluate import recommend
from model.recommenders import Recommender
from model.train import TrainResult

MODEL_DIR = Path(__file__).resolve().parent


def code_version() -> str:
    """Package version + a hash of the model sources (no git call: works from any copy)."""
    try:
        version = metadata.version("multi-kg4rec")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    digest = hashlib.sha256()
    for path in sorted(MODEL_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"{version}+src.{digest.hexdigest()[:10]}"


def new_run_id(dataset: str, variant: str, config_hash: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    salt = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:6]
    return f"{dataset}-{variant}-{stamp}-{config_hash[:8]}-{salt}"


def _split_metric(name: str) -> tuple[str, int | None]:
    if "@" in name:
        metric, k = name.split("@", 1)
        return metric, int(k)
    return name, None


def metric_rows(result: TrainResult) -> pd.DataFrame:
    """Final test/valid metrics (epoch NULL; ``slice`` "all" and the popularity/activity
    slices) and the per-epoch curves (train losses, valid)."""
    rows = []
    for split, values in (("test", result.test), ("valid", result.best_valid)):
        for name, value in values.items():
            if name == "users":
                continue
            metric, k = _split_metric(name)
            rows.append({"split": split, "metric": metric, "k": k, "value": float(value),
                         "epoch": None, "slice": "all"})
    for split, slices in result.slices.items():
        for slice_name, values in slices.items():
            if slice_name == "all":
                continue  # the rows above
            for name, value in values.items():
                metric, k = _split_metric(name)  # "users": how many users the slice holds
                rows.append({"split": split, "metric": metric, "k": k, "value": float(value),
                             "epoch": None, "slice": slice_name})
    for record in result.history:
        epoch = int(record["epoch"])
        for name in ("loss", "bpr", "reg", "kg", "seconds"):
            rows.append({"split": "train", "metric": name, "k": None,
                         "value": float(record[name]), "epoch": epoch, "slice": "all"})
        for name, value in record.items():
            if name.startswith("valid/"):
                metric, k = _split_metric(name[6:])
                rows.append({"split": "valid", "metric": metric, "k": k, "value": float(value),
                             "epoch": epoch, "slice": "all"})
    frame = pd.DataFrame(rows, columns=["split", "metric", "k", "value", "epoch", "slice"])
    return frame.astype({"k": "Int64", "epoch": "Int64"})


def run_row(run_id: str, dataset: str, result: TrainResult, source: str) -> dict:
    return {
        "run_id": run_id, "dataset": dataset, "variant": result.settings["variant"],
        "config_json": json.dumps(result.settings, sort_keys=True),
        "config_hash": result.config_hash, "code_version": code_version(),
        "device": result.device, "seconds": result.total_seconds,
        "seconds_per_epoch": result.seconds_per_epoch, "eval_seconds": result.eval_seconds,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped": result.stopped, "n_parameters": result.n_parameters,
        "checkpoint_path": result.checkpoint_path, "source": source,
    }


def recommendation_frame(model: Recommender, data: RecData, k: int = 20) -> pd.DataFrame:
    users, items, scores = recommend(model, data, k)
    frame = pd.DataFrame({"user_id": users.cpu().numpy(), "item_id": items.cpu().numpy(),
                          "score": scores.float().cpu().numpy()})
    frame["rank"] = frame.groupby("user_id").cumcount() + 1
    return frame[["user_id", "rank", "item_id", "score"]]


@torch.no_grad()
def modality_preference_frame(model: Recommender, data: RecData) -> pd.DataFrame | None:
    """Per user: mean over the user's TRAIN items of the item's attention mass on visual vs
    text keys (the paper's Fig. 4 "attention distribution"); None for models without fusion.
    Users whose items carry no modality at all get NaN weights."""
    mass = model.item_modality_attention()
    if mass is None:
        return None
    mass = mass.float().cpu()
    users, items = data.train_user.cpu(), data.train_item.cpu()
    total = torch.zeros(data.n_users, 2).index_add_(0, users, mass[items])
    count = torch.bincount(users, minlength=data.n_users).float()
    share = total / total.sum(1, keepdim=True).clamp(min=1e-12)
    empty = total.sum(1) <= 0
    share[empty] = float("nan")
    return pd.DataFrame({"user_id": range(data.n_users), "visual_weight": share[:, 0].numpy(),
                         "text_weight": share[:, 1].numpy(), "n_items": count.int().numpy()})
