#!/usr/bin/env bash
# One-command GPU check of the features stage: CLIP ViT-B/32 (random weights) images/s and
# texts/s on CUDA, with their ceilings (image/text tower alone, host PIL decode on every core,
# nvJPEG decode alone) and measured/ceiling ratios. Fits in 5 minutes on one H100 (≈ 2 min).
#
#   bash bench/gpu_features.sh                  # from anywhere; extra args go to the bench
#   IMAGES=5000 TEXTS=20000 bash bench/gpu_features.sh --no-gpu-decode
#
# Needs only python3 with torch (CUDA), transformers, pillow, numpy (+ torchvision for the nvJPEG
# path); nothing from this repository is installed and no dagster/duckdb is imported. Results
# also go to $OUT/clip_throughput.json (or /tmp when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-/tmp}/clip_throughput.json
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout "${TIMEOUT_S:-290}" "$PY" bench/clip_throughput.py --device cuda \
    --images "${IMAGES:-20000}" --texts "${TEXTS:-100000}" --draft --json "$RESULTS" "$@"
echo "results: $RESULTS"
