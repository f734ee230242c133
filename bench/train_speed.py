"""Training and evaluation speed at ML-1M scale on synthetic data (or on a lake partition).

Usage::

    python bench/train_speed.py [--variants lightgcn kgat full] [--epochs 1]
        [--batch-size 4096] [--precision auto|bf16|fp32] [--seq-len 16] [--set key=value]
        [--threads 2] [--device auto] [--lake-dataset ml-1m] [--profile]

Synthetic data of ML-1M size (6,040 users, 3,706 items, 1,000,000 pairs split 8:1:1 per user,
~20,000 KG triples over 5,000 attribute entities, 384-d text features for every entity,
BFS sequences of 32) unless ``--lake-dataset`` names a partition of the lake under
``$KG4REC_DATA_DIR`` (default ./data). For each variant it trains ``--epochs`` epochs and
prints seconds per epoch, steps per epoch and seconds per step, the seconds of one
full-ranking evaluation of every test user, and for the fusion variants the Bi-Transformer's
GFLOP per step (counted from the shapes, checked against torch's FLOP counter in
tests/test_bench.py), its achieved GFLOP/s forward+backward, and the GFLOP/s of one plain
matmul of the QKV shape at the same precision (the ratio says how much of the machine's
matmul speed the fusion reaches). Then each variant's epoch time over LightGCN's, and KGAT's
epoch against RecBole 1.2.1's on this 2-core CPU (206.96 s; its full-ranking evaluation of all
ML-1M users ≈ 0.5 s).

``--profile`` adds, per fusion variant, where the fusion's forward+backward spends its time
(torch.profiler, self CPU time of each op, in categories: the matmuls of the linear layers, the
attention kernel, data movement — copies, concatenations, index copies and zero fills — and the
rest) and the s/step bound if every op but the matmuls and the attention took no time: how far
the exact speedups (they remove data movement) can go before the model has to change.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import parse_settings  # noqa: E402
from model.checkpoints import pick_device  # noqa: E402
from model.config import VARIANTS, TrainSettings  # noqa: E402
from model.data import build_data, read_lake_tables  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.fusion import ROUTES, PackedTokens  # noqa: E402
from model.recommenders import build_model  # noqa: E402
from model.synthetic_data import synthetic_tables  # noqa: E402
from model.train import train, uses_bf16  # noqa: E402

ML1M = {"n_users": 6040, "n_items": 3706, "n_pairs": 1_000_000, "n_attributes": 5000,
        "n_relations": 7, "n_triples": 20_000, "modalities": ("text",),
        "feature_dims": {"text": 384}, "sequence_length": 32, "rank": 16}
#: RecBole 1.2.1's KGAT, one ML-1M epoch on this 2-core CPU (measured earlier, docs/MODEL.md).
RECBOLE_KGAT_EPOCH_S = 206.96


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
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other training setting, for every variant")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the fusion: time per op category (CPU)")
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

    extra = parse_settings(args.set)
    rows, profiles = [], []
    for variant in args.variants:
        settings = TrainSettings.from_dict({
            "variant": variant, "epochs": args.epochs, "batch_size": args.batch_size,
            "device": str(device), "seq_len": args.seq_len, "patience": 10**6,
            "precision": args.precision, "evaluate_test": False, **extra})
        with tempfile.TemporaryDirectory() as tmp:
            result = train(settings, data, tmp, resume=False, log=lambda m: print(m, flush=True))
        # one more, separately timed full-ranking evaluation of every test user
        torch.manual_seed(0)
        on_device = data.to(device)
        model = build_model(settings.model_config(), on_device).to(device)
        model.refresh_attention()
        evaluate(model, on_device, "test")  # warm-up
        synchronize(device)
        t1 = time.perf_counter()
        metrics = evaluate(model, on_device, "test")
        synchronize(device)
        eval_s = time.perf_counter() - t1
        steps = math.ceil(data.train_user.numel() / settings.batch_size)
        fusion = fusion_speed(model, settings, device) if getattr(model, "modalities", ()) else None
        if fusion and args.profile:
            profiles.append((variant, steps, result.seconds_per_epoch,
                             fusion["gflop"] / fusion["gflops"],
                             profile_categories(fusion_step(model, settings, device))))
        rows.append((variant, result.seconds_per_epoch, steps, eval_s, int(metrics["users"]),
                     fusion))
    print("\n| variant | s/epoch | steps/epoch | s/step | eval s (all test users) | users | "
          "fusion GFLOP/step | fusion GFLOP/s | matmul GFLOP/s, same shape | fusion/matmul |")
    print("| --- |" + " --- |" * 9)
    for variant, spe, steps, ev, users, fusion in rows:
        cells = (f"{fusion['gflop']:.1f} | {fusion['gflops']:.1f} | {fusion['matmul_gflops']:.1f} | "
                 f"{fusion['gflops'] / fusion['matmul_gflops']:.0%}") if fusion else "– | – | – | –"
        print(f"| {variant} | {spe:.2f} | {steps} | {spe / steps:.3f} | {ev:.3f} | {users} | "
              f"{cells} |")
    for variant, steps, spe, fusion_s, shares in profiles:
        print(f"\n{variant}: where the fusion's forward+backward ({fusion_s:.3f} s) spends its "
              "self CPU time")
        print("| " + " | ".join(shares) + " |")
        print("|" + " --- |" * len(shares))
        print("| " + " | ".join(f"{share:.0%}" for share in shares.values()) + " |")
        saved = fusion_s * (1 - shares["matmul"] - shares["attention"])
        print(f"with only its matmuls and attention taking time: ≥ {spe / steps - saved:.3f} s/step, "
              f"≥ {spe - saved * steps:.1f} s/epoch (now {spe / steps:.3f} / {spe:.1f})")
    per_epoch = {variant: spe for variant, spe, *_ in rows}
    for variant in per_epoch:
        if variant != "lightgcn" and "lightgcn" in per_epoch:
            print(f"{variant} / lightgcn epoch time: {per_epoch[variant] / per_epoch['lightgcn']:.1f}×")
    if "kgat" in per_epoch:
        print(f"kgat epoch {per_epoch['kgat']:.1f} s against RecBole's {RECBOLE_KGAT_EPOCH_S} s "
              f"(ML-1M, same CPU): {RECBOLE_KGAT_EPOCH_S / per_epoch['kgat']:.1f}× faster")
    return 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fusion_flops(model, settings: TrainSettings) -> dict[str, float]:
    """FLOPs (2 × multiply-adds) of one fusion forward over every item, as the packed path
    runs it: ``linear`` (QKV on kept tokens; output projection and FFN on kept tokens, on
    position 0 only in the last block) and ``attention`` (q·kᵀ and p·v on the padded
    (B, H, L, L) tensors)."""
    d, f = settings.embed_dim, settings.ffn_dim
    n_items, length = model.seq_node.shape
    kept = {}
    for m in model.modalities:
        valid = getattr(model, f"{m}_has")[model.seq_node] & model.seq_real
        kept[m] = float(PackedTokens.keep_mask(valid).sum())
    linear = attention = 0.0
    blocks = list(model.fusion.blocks)
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        for m in model.modalities:
            queries = n_items if last else kept[m]
            linear += 2 * kept[m] * d * 3 * d + 2 * queries * d * d + 2 * queries * d * f * 2
            sources = [s for s in ROUTES[block.mode][m] if s in model.modalities]
            attention += 4 * n_items * (1 if last else length) * length * len(sources) * d
    return {"linear": linear, "attention": attention, "total": linear + attention}


def fusion_step(model, settings: TrainSettings, device: torch.device):
    """One forward+backward of the fusion over every item, as training runs it."""
    model.train()
    bf16 = uses_bf16(settings.precision, device, settings.variant)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            contents = {m: model.content(m) for m in model.modalities}
            z, _, _ = model.fuse(contents)
            loss = sum(v.float().sum() for v in z.values())
        loss.backward()

    return step


def fusion_speed(model, settings: TrainSettings, device: torch.device, repeats: int = 3) -> dict:
    """Fusion forward+backward (≈ 3× the forward's FLOPs) timed alone, against one plain matmul
    of the QKV shape (kept tokens × d) @ (d × 3d), forward+backward, at the same precision."""
    bf16 = uses_bf16(settings.precision, device, settings.variant)
    flops = 3 * fusion_flops(model, settings)["total"]
    seconds = timed(fusion_step(model, settings, device), repeats, device)
    tokens = int(max(float(PackedTokens.keep_mask(
        getattr(model, f"{m}_has")[model.seq_node] & model.seq_real).sum())
        for m in model.modalities))
    d = settings.embed_dim
    x = torch.randn(tokens, d, device=device, requires_grad=True)
    w = torch.randn(d, 3 * d, device=device, requires_grad=True)

    def matmul_step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            y = x @ w
        y.float().sum().backward()

    mm_seconds = timed(matmul_step, repeats, device)
    return {"gflop": flops / 1e9, "gflops": flops / seconds / 1e9,
            "matmul_gflops": 3 * 2 * tokens * d * 3 * d / mm_seconds / 1e9}


#: torch op name → category of :func:`profile_categories` (ops not named here: "other").
OP_CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "data movement": ("aten::copy_", "aten::cat", "aten::index_copy", "aten::index_select",
                      "aten::fill_", "aten::zero_", "aten::index", "aten::_index_put_impl_",
                      "aten::clone", "aten::contiguous"),
}


def op_category(name: str) -> str:
    """The category of one profiled op: its exact name, except that attention is matched by
    prefix, so that SDPA's CPU kernels (forward and backward, whatever their suffix) count."""
    for category, names in OP_CATEGORIES.items():
        if name in names or (category == "attention" and name.startswith(names)):
            return category
    return "other"


def profile_categories(step, repeats: int = 2) -> dict[str, float]:
    """Share of ``step``'s self CPU time per category, over ``repeats`` calls after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals = dict.fromkeys([*OP_CATEGORIES, "other"], 0.0)
    for event in prof.key_averages():
        totals[op_category(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {category: t / whole for category, t in totals.items()}


def timed(step, repeats: int, device: torch.device) -> float:
    step()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    raise SystemExit(main())
