#!/usr/bin/env bash
# GPU check of stage 6: train KGAT, LightGCN and Multi-KG4Rec (full) on ML-1M, print s/epoch, the
# seconds of one full-ranking evaluation of every test user, and the test metrics.
#
#   bench/gpu_train.sh [DATA_DIR]          # default $KG4REC_DATA_DIR or ./data
#
# Needs only python3 with torch (CUDA), torch-geometric, numpy, pandas, pyarrow, safetensors
# and this repository's model/ package: no Dagster, no DuckDB (the GPU machine has neither).
# Data: the Parquet lake partition dataset=ml-1m under DATA_DIR (carry data/lake/dataset=ml-1m
# to the machine); when it is missing, synthetic data of ML-1M size is used and said so.
# Budget: under 8 minutes on one H100 — each variant is capped at MAX_SECONDS of training
# (default 150) and EPOCHS epochs (default 40); results also go to $OUT/gpu_train.json.
#
# Settings: each variant's choice of the CPU search ($TUNING_LEDGERS/<DATASET>.jsonl, default
# bench/results/tuning) when it has one, else the defaults; the budget's epochs and time cap
# (TINY: 2 epochs, batch 256) replace the search's.
# Environment: VARIANTS (default "kgat lightgcn full"), EPOCHS, MAX_SECONDS, BATCH_SIZE (default:
# the tuned one, else 4096), DATASET (ml-1m), TINY=1 (a seconds-long dry run on small synthetic
# data, for CPU checks: tests/test_bench.py runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATA_DIR="${1:-${KG4REC_DATA_DIR:-data}}"
export VARIANTS="${VARIANTS:-kgat lightgcn full}" EPOCHS="${EPOCHS:-40}" MAX_SECONDS="${MAX_SECONDS:-150}"
export BATCH_SIZE="${BATCH_SIZE:-}" DATASET="${DATASET:-ml-1m}" TINY="${TINY:-0}"
export TUNING_LEDGERS="${TUNING_LEDGERS:-bench/results/tuning}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" - <<'EOF'
import json, os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import torch

from bench.tune import tuned_settings
from model.checkpoints import load_model
from model.data import build_data, read_lake_tables
from model.evaluate import evaluate
from model.synthetic_data import synthetic_tables
from model.train import TrainSettings, train

print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""), flush=True)
data_dir, dataset = Path(os.environ["DATA_DIR"]), os.environ["DATASET"]
tiny = os.environ["TINY"] == "1"
t0 = time.perf_counter()
if tiny:
    tables, source = synthetic_tables(n_users=200, n_items=150, n_pairs=4000,
                                      sequence_length=8), "synthetic tiny (TINY=1)"
elif (data_dir / "lake" / f"dataset={dataset}" / "split.parquet").is_file():
    tables, source = read_lake_tables(data_dir, dataset), f"lake {data_dir} {dataset}"
else:
    print(f"NOTE: no lake partition {dataset} under {data_dir}: synthetic ML-1M-size data",
          flush=True)
    tables = synthetic_tables(n_users=6040, n_items=3706, n_pairs=1_000_000,
                              n_attributes=5000, n_relations=7, n_triples=20_000,
                              modalities=("image", "text"),
                              feature_dims={"image": 512, "text": 384}, sequence_length=32,
                              rank=16)
    source = "synthetic ML-1M size"
data = build_data(tables)
print(f"data: {source} ({time.perf_counter() - t0:.1f} s) {data.summary()}", flush=True)
for note in data.notes:
    print(f"note: {note}")

results = {}
for variant in os.environ["VARIANTS"].split():
    # the settings the CPU search chose on validation (bench/results/tuning/<dataset>.jsonl),
    # so GPU and CPU numbers are of the same model; the budget is this script's
    tuned = tuned_settings(dataset, variant, Path(os.environ["TUNING_LEDGERS"]))
    batch = 256 if tiny else int(os.environ["BATCH_SIZE"] or tuned.get("batch_size", 4096))
    settings = TrainSettings.from_dict({
        "variant": variant, "patience": 10, **tuned, "batch_size": batch, "device": "auto",
        "epochs": 2 if tiny else int(os.environ["EPOCHS"]),
        "max_seconds": float(os.environ["MAX_SECONDS"])})
    print(f"{variant}: {'tuned on validation: ' + str(tuned) if tuned else 'defaults'}, "
          f"batch {settings.batch_size}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        result = train(settings, data, out, resume=False,
                       log=lambda m: print(m, flush=True))
        model = load_model(Path(out) / "best.safetensors", data, device="auto")
    device = next(model.parameters()).device
    on_device = data.to(device)
    evaluate(model, on_device, "test")  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    evaluate(model, on_device, "test")
    if device.type == "cuda":
        torch.cuda.synchronize()
    eval_s = time.perf_counter() - t1
    results[variant] = {
        "device": result.device, "epochs_run": result.epochs_run, "best_epoch":
        result.best_epoch, "stopped": result.stopped,
        "seconds_per_epoch": result.seconds_per_epoch, "eval_seconds_all_test_users": eval_s,
        "test": {k: v for k, v in result.test.items()}, "notes": result.notes}
    del model, on_device
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

print(f"\n{source}")
print("| variant | device | epochs | best | s/epoch | eval s | recall@20 | ndcg@20 | mrr@20 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for variant, r in results.items():
    t = r["test"]
    print(f"| {variant} | {r['device']} | {r['epochs_run']} | {r['best_epoch']} | "
          f"{r['seconds_per_epoch']:.2f} | {r['eval_seconds_all_test_users']:.3f} | "
          f"{t['recall@20']:.4f} | {t['ndcg@20']:.4f} | {t['mrr@20']:.4f} |")
out = os.environ.get("OUT")
if out:
    Path(out, "gpu_train.json").write_text(json.dumps({"source": source, "results": results},
                                                      indent=2))
EOF
