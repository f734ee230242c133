"""Strict item cold start: how well does each model rank items it never saw in training?

Usage::

    python bench/cold_start.py --dataset ml-100k [--fraction 0.1] [--seed 2020]
        [--variants content lightgcn full] [--set seq_len=16 ...] [--threads 1]

Re-splits the lake's positive pairs in memory with the ``cold_items`` strategy of the split
stage (``datasources.split.split_cold_items``: a seeded 10 % of the items has all its pairs in
valid/test, none in train), rebuilds the collaborative KG and the BFS sequences from the new
train pairs (so no cold item is linked to any user), and evaluates with the usual full ranking
(every item a candidate, the user's train items excluded). Training draws BPR negatives from the
warm items only (``negative_items="train"``): a cold item does not exist yet when the model is
trained, so it must not be pushed down as a negative either. ``content`` is the training-free
item–item cosine baseline on the text features (:mod:`model.content`). Models train with
early stopping on the cold validation split; the test split is read once per model, after it.
Runs go to the warehouse under the dataset name ``<dataset>/cold_items`` (source ``cold``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from bench.common import lake_tables, parse_settings, run_store  # noqa: E402
from datasources.split import SPLIT_NAMES, split_cold_items  # noqa: E402
from model.config import VARIANTS, TrainSettings  # noqa: E402
from model.content import ContentSimilarity  # noqa: E402
from model.data import build_data  # noqa: E402
from model.evaluate import evaluate, evaluate_slices  # noqa: E402
from model.graph import collaborative_kg_from_tables  # noqa: E402
from model.report import metric_rows, new_run_id, run_row  # noqa: E402
from model.sequences import bfs_neighbor_sequences  # noqa: E402
from model.train import train  # noqa: E402


def cold_split_table(split: pa.Table, fraction: float, seed: int) -> pa.Table:
    """The lake's split table re-divided by the cold-item strategy (same pairs)."""
    users = split.column("user_id").to_numpy()
    items = split.column("item_id").to_numpy()
    parts = split_cold_items(users, items, (0.8, 0.1, 0.1), seed, fraction)
    return pa.table({"user_id": users, "item_id": items,
                     "split": np.asarray(SPLIT_NAMES, dtype=object)[parts]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--variants", nargs="+", default=["content", "lightgcn", "full"],
                        choices=["content", *VARIANTS])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-warehouse", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data_dir = Path(args.data_dir or os.environ.get("KG4REC_DATA_DIR", "data")).absolute()
    tables = lake_tables(data_dir, args.dataset)
    if tables is None:
        return 2
    tables["split"] = cold_split_table(tables["split"], args.fraction, args.seed)
    if tables.get("neighbor_sequences") is not None:  # BFS again over the cold split's train pairs
        length = int(tables["neighbor_sequences"].column("pos").to_numpy().max()) + 1
        tables = {name: table.to_pandas() if hasattr(table, "to_pandas") else table
                  for name, table in tables.items()}
        tables["neighbor_sequences"] = bfs_neighbor_sequences(
            collaborative_kg_from_tables(tables), n=length).to_table()
    data = build_data(tables)
    cold = torch.unique(torch.cat([data.valid_item, data.test_item]))
    assert not torch.isin(cold, data.train_item).any(), "a cold item has a train pair"
    name = f"{args.dataset}/cold_items"
    print(f"{name}: {cold.numel()} cold items of {data.n_items}; {data.summary()}", flush=True)

    fixed = parse_settings(args.set)
    store = None
    if not args.no_warehouse:
        store = run_store(data_dir)
    rows = []
    for variant in args.variants:
        if variant == "content":
            model = ContentSimilarity(data, "text")
            valid, test = evaluate(model, data, "valid"), evaluate(model, data, "test")
            slices = evaluate_slices(model, data, "test")
            rows.append((variant, valid, test, slices, None))
            continue
        # cold items are not in the catalogue while training: never drawn as negatives
        settings = TrainSettings.from_dict({"negative_items": "train", **fixed,
                                            "variant": variant, "seed": args.seed})
        out = data_dir / "models" / "cold" / args.dataset / variant / settings.config_hash()
        result = train(settings, data, out, log=lambda m: print(m, flush=True))
        rows.append((variant, result.best_valid, result.test, result.slices["test"],
                     result.best_epoch))
        if store is not None:
            run_id = new_run_id(name, variant, result.config_hash)
            store.record_run(run_row(run_id, name, result, source="cold"), metric_rows(result))

    print(f"\n{name} (full ranking over all {data.n_items} items; held-out = cold items only)")
    print("| model | valid recall@20 | test recall@20 | test ndcg@20 | test mrr@20 | "
          "test recall@20, items:tail | best epoch |")
    print("|---|---|---|---|---|---|---|")
    for variant, valid, test, slices, best in rows:
        print(f"| {variant} | {valid['recall@20']:.4f} | {test['recall@20']:.4f} | "
              f"{test['ndcg@20']:.4f} | {test['mrr@20']:.4f} | "
              f"{slices['items:tail']['recall@20']:.4f} | {best if best is not None else '–'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
