"""Training and evaluation speed at ML-1M scale on synthetic data (or on a lake partition).

Usage::

    python bench/train_speed.py [--variants kgat full] [--epochs 1] [--batch-size 4096]
                                [--threads 2] [--device auto] [--lake-dataset ml-1m]

Synthetic data of ML-1M size (6,040 users, 3,706 items, 1,000,000 pairs split 8:1:1 per user,
~20,000 KG triples over 5,000 attribute entities, 384-d text features for every entity,
BFS sequences of 32) unless ``--lake-dataset`` names a partition of the lake under
``$KG4REC_DATA_DIR`` (default ./data). For each variant it trains ``--epochs`` epochs and
reports seconds per training epoch, and the seconds of one full-ranking evaluation of every
test user (forward pass + scoring + top-k). Peers (RecBole 1.2.1, this 2-core CPU): KGAT ML-1M
one epoch 206.96 s, full-ranking evaluation of all ML-1M users ≈ 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.data import build_data, read_lake_tables  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.recommenders import VARIANTS, build_model  # noqa: E402
from model.synthetic import synthetic_tables  # noqa: E402
from model.train import TrainSettings, pick_device, train  # noqa: E402

ML1M = {"n_users": 6040, "n_items": 3706, "n_pairs": 1_000_000, "n_attributes": 5000,
        "n_relations": 7, "n_triples": 20_000, "modalities": ("text",),
        "feature_dims": {"text": 384}, "sequence_length": 32, "rank": 16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["kgat"], choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: robust on a shared 2-core machine)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", action="store_true",
                        help="synthetic data also has 512-d image features")
    parser.add_argument("--lake-dataset", default=None,
                        help="use this lake partition instead of synthetic data")
    parser.add_argument("--seq-len", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    t0 = time.perf_counter()
    if args.lake_dataset:
        data_dir = Path(os.environ.get("KG4REC_DATA_DIR", "data"))
        data = build_data(read_lake_tables(data_dir, args.lake_dataset))
        source = f"lake {data_dir}/{args.lake_dataset}"
    else:
        spec = dict(ML1M)
        if args.images:
            spec["modalities"] = ("image", "text")
            spec["feature_dims"] = {"image": 512, "text": 384}
        data = build_data(synthetic_tables(**spec))
        source = "synthetic ML-1M size"
    print(f"data ({source}, {time.perf_counter() - t0:.1f} s): {data.summary()}")
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    rows = []
    for variant in args.variants:
        settings = TrainSettings(variant=variant, epochs=args.epochs,
                                 batch_size=args.batch_size, device=str(device),
                                 seq_len=args.seq_len, patience=10**6)
        with tempfile.TemporaryDirectory() as tmp:
            result = train(settings, data, tmp, resume=False, log=lambda m: print(m, flush=True))
        # one more, separately timed full-ranking evaluation of every test user
        torch.manual_seed(0)
        model = build_model(settings.model_config(), data.to(device)).to(device)
        model.refresh()
        on_device = data.to(device)
        evaluate(model, on_device, "test")  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        metrics = evaluate(model, on_device, "test")
        if device.type == "cuda":
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - t1
        rows.append((variant, result.seconds_per_epoch, eval_s, int(metrics["users"]),
                     result.test["recall@20"]))
    print("\n| variant | s/epoch | eval s (all test users) | users | test recall@20 |")
    print("| --- | --- | --- | --- | --- |")
    for variant, spe, ev, users, rec in rows:
        print(f"| {variant} | {spe:.2f} | {ev:.3f} | {users} | {rec:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
