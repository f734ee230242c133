"""Attention over the fusion's tiny heads: which CPU kernel is fastest, forward + backward.

Usage::

    python bench/attention_kernels.py [--items 3508] [--heads 8] [--length 16] [--head-dim 8]
        [--valid 0.63] [--threads 1] [--repeats 5] [--no-compile]

The Bi-Transformer attends, per block, over every item's BFS sequence: on the ML-1M lake
3,508 sequences × 8 heads of (16 × 8) queries, keys and values (embed 64 / 8 heads), with
about a third of the keys masked; the last block queries position 0 only. Such heads are far
too small for a matmul kernel to reach its speed (docs/MODEL.md, "Training speed"). This
bench times one attention call forward + backward on those shapes for

* ``sdpa``: ``F.scaled_dot_product_attention`` (the fused CPU flash kernel; the model's path,
  in fp32 also under bf16 autocast);
* ``math``: q kᵀ, masked softmax, @ v with materialised scores, in fp32 and in bf16;
* ``compiled``: the same math through ``torch.compile`` (inductor's generated C++ kernels;
  needs a C++ compiler; compile time printed apart),

and prints each one's milliseconds, achieved GFLOP/s and speed against ``sdpa`` fp32 measured
in the same run, for the sequence-wide blocks (L queries) and for the last block (1 query).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def math_attention(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


def inputs(items: int, heads: int, queries: int, length: int, head_dim: int, valid: float,
           dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)

    def leaf(rows: int) -> torch.Tensor:
        x = torch.randn(items, heads, rows, head_dim, generator=generator)
        return x.to(dtype).requires_grad_()

    keep = torch.rand(items, length, generator=generator) < valid
    keep[:, 0] = True  # every sequence has its own item as a key
    return leaf(queries), leaf(length), leaf(length), keep[:, None, None, :]


def timed_ms(fn, args: tuple, repeats: int) -> float:
    fn(*args).float().sum().backward()  # warm-up (and compilation)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args).float().sum().backward()
    return (time.perf_counter() - start) / repeats * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3508, help="sequences (ML-1M items)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--length", type=int, default=16, help="keys per sequence (seq_len)")
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--valid", type=float, default=0.63, help="fraction of unmasked keys")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{args.items} × {args.heads} heads, {args.length} keys × {args.head_dim} dims")

    kernels = [("sdpa", sdpa, torch.float32), ("math", math_attention, torch.float32),
               ("math", math_attention, torch.bfloat16)]
    if not args.no_compile:
        compiled = torch.compile(math_attention, dynamic=False)
        kernels += [("compiled", compiled, torch.float32), ("compiled", compiled, torch.bfloat16)]
    print("| queries | kernel | dtype | ms fwd+bwd | GFLOP/s | × sdpa fp32 |")
    print("|---|---|---|---|---|---|")
    for queries in (args.length, 1):
        # q kᵀ and p v: 2 matmuls of 2·Lq·Lk·d FLOPs per head forward, about twice that backward
        gflop = 3 * 4 * args.items * args.heads * queries * args.length * args.head_dim / 1e9
        baseline = None
        for name, fn, dtype in kernels:
            tensors = inputs(args.items, args.heads, queries, args.length, args.head_dim,
                             args.valid, dtype)
            start = time.perf_counter()
            ms = timed_ms(fn, tensors, args.repeats)
            if name == "compiled" and dtype == torch.float32:
                warm = time.perf_counter() - start - ms * args.repeats / 1000
                print(f"(compiled for {queries} queries in about {warm:.0f} s)")
            baseline = baseline or ms
            print(f"| {queries} | {name} | {str(dtype).removeprefix('torch.')} | {ms:.1f} | "
                  f"{gflop / ms * 1000:.1f} | {baseline / ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
