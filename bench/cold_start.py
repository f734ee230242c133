"""Strict item cold start: how well does each model rank items it never saw in training?

Usage::

    python bench/cold_start.py --dataset ml-100k [--fraction 0.1] [--seeds 2020,2021,2022]
        [--variants content lightgcn kgat full] [--set seq_len=16 ...] [--threads 1]
    python bench/cold_start.py --dataset ml-100k --report   # the ledger, mean ± std per model

Re-splits the lake's positive pairs in memory with the ``cold_items`` strategy of the split
stage (``datasources.split.split_cold_items``: a seeded 10 % of the items has all its pairs in
valid/test, none in train), rebuilds the collaborative KG and the BFS sequences from the new
train pairs (so no cold item is linked to any user), and evaluates with the usual full ranking
with the cold items as the only candidates — the usual cold-start protocol (can a model order
the new items for a user?), used for early stopping on the cold validation split and for the
one test read — and again with every item a candidate (do the new items score high enough to
enter a top 20 of the whole catalogue?). Training draws BPR negatives from the
warm items only (``negative_items="train"``): a cold item does not exist yet when the model is
trained, so it must not be pushed down as a negative either. ``content`` is the training-free
item–item cosine baseline on the text features (:mod:`model.content`). Models train with
early stopping on the cold validation split; the test split is read once per model, after it.
Each model trains with the settings its warm search chose (``bench/tune.py``'s ledger, as
``bench/variants.py`` does) under any ``--set``. Every run is appended to the ledger
``bench/results/cold_start/<dataset>.jsonl`` (committed: a run already there is not trained
again) and goes to the warehouse under the dataset name ``<dataset>/cold_items`` (source
``cold``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from bench.common import lake_tables, parse_settings, run_store, spread  # noqa: E402
from bench.tune import tuned_settings  # noqa: E402
from datasources.split import SPLIT_NAMES, split_cold_items  # noqa: E402
from model.checkpoints import load_model  # noqa: E402
from model.config import VARIANTS, TrainSettings  # noqa: E402
from model.content import ContentSimilarity  # noqa: E402
from model.data import build_data  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.graph import collaborative_kg_from_tables  # noqa: E402
from model.report import code_version, metric_rows, new_run_id, run_row  # noqa: E402
from model.sequences import bfs_neighbor_sequences  # noqa: E402
from model.train import train  # noqa: E402

LEDGER_DIR = ROOT / "bench" / "results" / "cold_start"


def cold_split_table(split: pa.Table, fraction: float, seed: int) -> pa.Table:
    """The lake's split table re-divided by the cold-item strategy (same pairs)."""
    users = split.column("user_id").to_numpy()
    items = split.column("item_id").to_numpy()
    parts = split_cold_items(users, items, (0.8, 0.1, 0.1), seed, fraction)
    return pa.table({"user_id": users, "item_id": items,
                     "split": np.asarray(SPLIT_NAMES, dtype=object)[parts]})


def cold_data(tables: dict, fraction: float, seed: int):
    """RecData of the cold-item re-split (``seed`` picks the cold items), with the collaborative
    KG's BFS sequences rebuilt from its train pairs, and the cold item ids."""
    tables = dict(tables)
    tables["split"] = cold_split_table(tables["split"], fraction, seed)
    if tables.get("neighbor_sequences") is not None:  # BFS again over the cold split's train pairs
        length = int(tables["neighbor_sequences"].column("pos").to_numpy().max()) + 1
        tables = {name: table.to_pandas() if hasattr(table, "to_pandas") else table
                  for name, table in tables.items()}
        tables["neighbor_sequences"] = bfs_neighbor_sequences(
            collaborative_kg_from_tables(tables), n=length).to_table()
    data = build_data(tables)
    cold = torch.unique(torch.cat([data.valid_item, data.test_item]))
    assert not torch.isin(cold, data.train_item).any(), "a cold item has a train pair"
    # the cold-start protocol: validation (early stopping) and test rank the cold items alone
    data.candidate_items = torch.zeros(data.n_items, dtype=torch.bool)
    data.candidate_items[cold] = True
    return data, cold


def all_items_metrics(model, data) -> dict[str, dict[str, float]]:
    """Valid and test metrics of the same model when every item, warm or cold, is a candidate:
    are the new items scored high enough to enter a top 20 of the whole catalogue?"""
    everything = torch.ones(data.n_items, dtype=torch.bool)
    with torch.no_grad():
        representations = model.eval()()
    return {f"{split}_all_items": evaluate(model, data, split, representations=representations,
                                           candidates=everything)
            for split in ("valid", "test")}


def run_key(variant: str, seed: int, fraction: float, settings: dict) -> str:
    """What makes two cold-start runs the same run (the ledger's key)."""
    return json.dumps({"variant": variant, "seed": seed, "fraction": fraction,
                       "settings": settings}, sort_keys=True)


def read_ledger(path: Path) -> dict[str, dict]:
    """Finished cold-start runs by :func:`run_key` (the last record of a key wins)."""
    runs = {}
    if path.is_file():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
                runs[record["key"]] = record
    return runs


def report(path: Path) -> str:
    """Markdown: per model (and its settings), mean ± std over the seeds run; the cold items
    ranked alone (what early stopping and the test read use), then the same model ranking
    every item, cold and warm."""
    groups: dict[tuple, list[dict]] = {}
    for record in read_ledger(path).values():
        label = (record["variant"], json.dumps(record["overrides"], sort_keys=True),
                 record["fraction"])
        groups.setdefault(label, []).append(record)
    columns = (("valid", "recall@20"), ("test", "recall@20"), ("test", "ndcg@20"),
               ("test", "mrr@20"), ("test_all_items", "recall@20"), ("test_all_items", "ndcg@20"))
    lines = ["| model | settings beside the tuned ones | cold fraction | seeds | cold items ranked: "
             "valid Recall@20 | test Recall@20 | test NDCG@20 | test MRR@20 | every item ranked: "
             "test Recall@20 | test NDCG@20 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (variant, overrides, fraction), records in groups.items():
        seeds = sorted(r["seed"] for r in records)
        cells = [spread([r[split][metric] for r in records if split in r])
                 for split, metric in columns]
        lines.append(f"| {variant} | {overrides} | {fraction} | {seeds} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", default="2020", metavar="S1,S2",
                        help="one re-split and one training per seed (the seed picks the cold "
                             "items and seeds the training)")
    parser.add_argument("--variants", nargs="+", default=["content", "lightgcn", "full"],
                        choices=["content", *VARIANTS])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="setting over the variant's tuned ones (the warm search's choice)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ledger", default=None,
                        help="default bench/results/cold_start/<dataset>.jsonl")
    parser.add_argument("--tuning-ledgers", default=None,
                        help="where the warm searches' ledgers are (default bench/results/tuning)")
    parser.add_argument("--report", action="store_true", help="print the ledger and exit")
    parser.add_argument("--no-warehouse", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ledger = Path(args.ledger) if args.ledger else LEDGER_DIR / f"{args.dataset}.jsonl"
    if args.report:
        print(report(ledger))
        return 0

    data_dir = Path(args.data_dir or os.environ.get("KG4REC_DATA_DIR", "data")).absolute()
    tables = lake_tables(data_dir, args.dataset)
    if tables is None:
        return 2
    overrides = parse_settings(args.set)
    store = None if args.no_warehouse else run_store(data_dir)
    name = f"{args.dataset}/cold_items"
    for seed in [int(v) for v in args.seeds.split(",") if v.strip()]:
        data, cold = cold_data(tables, args.fraction, seed)
        print(f"{name} seed {seed}: {cold.numel()} cold items of {data.n_items}; "
              f"{data.summary()}", flush=True)
        for variant in args.variants:
            tuned = tuned_settings(args.dataset, variant, args.tuning_ledgers
                                   and Path(args.tuning_ledgers))
            settings = {} if variant == "content" else {
                # cold items are not in the catalogue while training: never drawn as negatives
                "negative_items": "train", **tuned, **overrides}
            key = run_key(variant, seed, args.fraction, settings)
            if key in read_ledger(ledger):
                print(f"{variant} seed {seed}: already in {ledger.name}", flush=True)
                continue
            record = {"key": key, "variant": variant, "seed": seed, "fraction": args.fraction,
                      "overrides": overrides if variant != "content" else {},
                      "settings": settings, "n_cold": int(cold.numel()),
                      "code_version": code_version()}
            if variant == "content":
                model = ContentSimilarity(data, "text")
                record |= {"valid": evaluate(model, data, "valid"),
                           "test": evaluate(model, data, "test"), "best_epoch": None}
                record |= all_items_metrics(model, data)
            else:
                train_settings = TrainSettings.from_dict(settings | {"variant": variant,
                                                                     "seed": seed})
                out = (data_dir / "models" / "cold" / args.dataset / variant
                       / f"{seed}-{train_settings.config_hash()}")
                result = train(train_settings, data, out, resume=True,
                               log=lambda m: print(m, flush=True))
                record |= {"valid": result.best_valid, "test": result.test,
                           "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                           "seconds": result.total_seconds}
                record |= all_items_metrics(load_model(result.checkpoint_path, data, train_settings.device),
                                            data)
                if store is not None:
                    run_id = new_run_id(name, variant, result.config_hash)
                    store.record_run(run_row(run_id, name, result, source="cold"),
                                     metric_rows(result))
            ledger.parent.mkdir(parents=True, exist_ok=True)
            with ledger.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            print(f"{variant} seed {seed}: valid recall@20 {record['valid']['recall@20']:.4f}, "
                  f"test recall@20 {record['test']['recall@20']:.4f} "
                  f"ndcg@20 {record['test']['ndcg@20']:.4f}", flush=True)
    print(f"\n{name} (held-out = cold items only)")
    print(report(ledger))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
