"""The pictures and tables shown as asset metadata in the Dagster UI.

Figures are bare ``matplotlib.figure.Figure`` objects (no pyplot: no global state to close, no
GUI backend in a worker process), and matplotlib is imported only when one is drawn, so loading
the code location does not pay for it. ``assets.metadata.png_markdown`` embeds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


# --------------------------------------------------------------------------- stage 5: neighbours


def length_histogram(lengths: np.ndarray, n: int):
    figure = _figure(6, 2.6)
    axis = figure.subplots()
    axis.hist(lengths, bins=np.arange(0.5, n + 1.5, 1), color="#4C72B0")
    axis.set_xlabel("sequence length")
    axis.set_ylabel("items")
    axis.set_title("BFS sequence length per item")
    return figure


# --------------------------------------------------------------------------- stage 6: training


def curves_figure(history: list[dict], title: str):
    epochs = [r["epoch"] for r in history]
    figure = _figure(9, 3)
    left, right = figure.subplots(1, 2)
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


def slices_figure(slices: dict[str, dict[str, float]], title: str):
    names = list(slices)
    figure = _figure(7, 3)
    axis = figure.subplots()
    width = 0.4
    for offset, metric in ((-width / 2, "recall@20"), (width / 2, "ndcg@20")):
        axis.bar([i + offset for i in range(len(names))], [slices[n][metric] for n in names],
                 width, label=metric)
    axis.set_xticks(range(len(names)), names, rotation=20)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def preferences_figure(frame: pd.DataFrame, title: str):
    figure = _figure(9, 3)
    left, right = figure.subplots(1, 2)
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


def bars_figure(frame: pd.DataFrame, dataset: str):
    part = frame[frame["dataset"] == dataset].drop_duplicates("variant").set_index("variant")
    figure = _figure(8, 3)
    axis = figure.subplots()
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


def metrics_markdown(test: dict, valid: dict) -> dg.MetadataValue:
    names = sorted({k.split("@")[0] for k in valid if "@" in k})
    ks = sorted({int(k.split("@")[1]) for k in valid if "@" in k})
    splits = [("test", test)] * bool(test) + [("valid", valid)]
    lines = ["| metric | " + " | ".join(f"{s} @{k}" for s, _ in splits for k in ks) + " |",
             "| --- |" + " --- |" * (len(splits) * len(ks))]
    for name in names:
        cells = [f"{values[f'{name}@{k}']:.4f}" for _, values in splits for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def slices_markdown(slices: dict[str, dict[str, float]], split: str) -> dg.MetadataValue:
    lines = [f"| slice ({split}) | users | recall@20 | ndcg@20 | mrr@20 |",
             "| --- | --- | --- | --- | --- |"]
    for name, m in slices.items():
        lines.append(f"| {name} | {int(m['users'])} | {m['recall@20']:.4f} | "
                     f"{m['ndcg@20']:.4f} | {m['mrr@20']:.4f} |")
    return dg.MetadataValue.md("\n".join(lines))


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
