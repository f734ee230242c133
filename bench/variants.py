"""Train the paper's variants and baselines on one split and compare them (Tables 2–4).

Usage::

    python bench/variants.py --dataset ml-100k [--config configs/offline.yaml]
        [--variants bprmf lightgcn kgat full] [--set epochs=100 --set lr=0.002]
        [--threads 2] [--out bench/out]

Reads the lake of ``$KG4REC_DATA_DIR`` (default ./data): the ingest tables are required (a
clear message says how to create them when they are missing); ``kg_triples``,
``clip_features`` and ``neighbor_sequences`` are used when present (sequences are recomputed
from the train pairs when absent). Every variant is trained on the same split and scored by
the same full-ranking evaluator; each run is appended to the warehouse
(``training_runs``/``metrics``, source ``bench``) and the paper tables are rebuilt.

Settings: ``TrainSettings`` defaults, then the settings ``bench/tune.py`` chose on validation
for this dataset and variant (its ledger, ``bench/results/tuning/<dataset>.jsonl``), then
``ops.trained_model.config`` of ``--config`` when it has one (the Dagster run config, so one file
drives both), then ``--set key=value`` for all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from bench.common import lake_tables, parse_settings, run_store  # noqa: E402
from bench.tune import tuned_settings  # noqa: E402
from model.config import VARIANTS, TrainSettings  # noqa: E402
from model.data import build_data  # noqa: E402
from model.report import metric_rows, new_run_id, run_row  # noqa: E402
from model.train import train  # noqa: E402


def config_overrides(path: str | None) -> dict:
    if not path:
        return {}
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    return dict(((loaded.get("ops") or {}).get("trained_model") or {}).get("config") or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="lake partition, e.g. ml-100k")
    parser.add_argument("--config", default=None, help="Dagster run-config YAML")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainSettings field for every variant")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: robust on a shared 2-core machine)")
    parser.add_argument("--data-dir", default=None, help="default $KG4REC_DATA_DIR or ./data")
    parser.add_argument("--out", default=None, help="checkpoints (default <data>/models/bench)")
    parser.add_argument("--no-warehouse", action="store_true", help="do not record the runs")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = Path(args.data_dir or os.environ.get("KG4REC_DATA_DIR", "data")).absolute()
    tables = lake_tables(data_dir, args.dataset)
    if tables is None:
        return 2
    missing = [n for n in ("kg_triples", "clip_features", "neighbor_sequences")
               if tables.get(n) is None]
    if missing:
        print(f"note: {', '.join(missing)} not in the lake for {args.dataset}: "
              "running without them (see the notes of each run)")
    data = build_data(tables)
    print(f"{args.dataset}: {data.summary()}")
    for note in data.notes:
        print(f"note: {note}")

    base = config_overrides(args.config)
    cli = parse_settings(args.set)
    store = None
    if not args.no_warehouse:
        store = run_store(data_dir)
    out_root = Path(args.out) if args.out else data_dir / "models" / "bench"
    rows = []
    for variant in args.variants:
        tuned = tuned_settings(args.dataset, variant)
        if tuned:
            print(f"{variant}: settings chosen on validation by bench/tune.py: {tuned}")
        values = {**tuned, **base, **cli, "variant": variant}
        settings = TrainSettings.from_dict(values)
        started = time.perf_counter()
        result = train(settings, data, out_root / args.dataset / variant / settings.config_hash(),
                       resume=True, log=lambda m: print(m, flush=True))
        if store is not None:
            run_id = new_run_id(args.dataset, variant, result.config_hash)
            store.record_run(run_row(run_id, args.dataset, result, source="bench"),
                             metric_rows(result))
        rows.append((variant, result, time.perf_counter() - started))

    print(f"\n{args.dataset} (test, full ranking, users with held-out items)")
    print("| variant | recall@20 | ndcg@20 | mrr@20 | hit@20 | recall@10 | best epoch | "
          "s/epoch | eval s | device |")
    print("| --- |" + " --- |" * 9)
    for variant, r, _ in rows:
        t = r.test
        print(f"| {variant} | {t['recall@20']:.4f} | {t['ndcg@20']:.4f} | {t['mrr@20']:.4f} | "
              f"{t['hit@20']:.4f} | {t['recall@10']:.4f} | {r.best_epoch} | "
              f"{r.seconds_per_epoch:.2f} | {r.eval_seconds:.3f} | {r.device} |")
    if store is not None:
        tables_frame = store.rebuild_paper_tables()
        part = tables_frame[tables_frame["dataset"] == args.dataset]
        print(f"\npaper_tables rebuilt: {len(tables_frame)} rows ({len(part)} for "
              f"{args.dataset}) in {data_dir / 'warehouse.duckdb'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
