"""Benchmark of the vectorised truncated-BFS neighbour sequences on real data.

Usage::

    python bench/neighbors.py [--n 32] [--datasets ml-1m amazon-book] [--tie-break degree]

Reads the staged public data at run time (env ``KG4REC_SHARED_DATA`` or ``../shared/data``
next to the project); nothing is copied into the project (MovieLens / KB4Rec terms forbid
redistribution).  For each dataset it builds the collaborative KG from TRAIN pairs only,
times :func:`model.sequences.bfs_neighbor_sequences` for all items, times the per-item
:func:`model.sequences.reference_bfs` on a seeded sample (and checks both agree there),
extrapolates the reference to all items, prints a scaling table and the peak memory.

Data choices
* ml-1m: pairs of ``ml1m_derived/interactions.tsv.gz`` with a mapped movie id; train = a
  seeded random 80 % of them (this bench needs a graph, not the project's official split).
  Items = all 3,883 movies of ``ml1m_raw/movies.dat`` (item id by sorted movie id), users by
  sorted user id.  KG = MKR's Satori ``kg.txt``; Satori entities listed in
  ``item_index2entity_id.txt`` are the items, the other Satori ids become attribute entities
  after the items (sorted by Satori id); relation ids by sorted relation name.
* amazon-book: KGAT ``train.txt.gz`` (``user item item ...``); ``test.txt.gz`` is read only to
  size the id spaces (70,679 users / 24,915 items), never for edges.  KGAT's ``kg_final.txt``
  is not available offline, and the item -> Freebase MIDs of ``item_list.txt.gz`` give one
  private entity per item with no triples between them, which would add only dead-end nodes,
  so the graph is user-item only.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

from model.graph import CollaborativeKG, build_collaborative_kg  # noqa: E402
from model.sequence_checks import reference_bfs, sequence_stats  # noqa: E402
from model.sequences import (  # noqa: E402
    DEFAULT_SEQUENCE_LENGTH,
    bfs_neighbor_sequences,
)

TARGET_S = {"ml-1m": 2.0, "amazon-book": 10.0}


def shared_data_dir() -> Path:
    env = os.environ.get("KG4REC_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_ml1m(data: Path, seed: int = 0) -> tuple[CollaborativeKG, str]:
    inter = pd.read_csv(
        data / "ml1m_derived" / "interactions.tsv.gz",
        sep="\t",
        usecols=["user_id", "movie_id"],
    )
    inter = inter[inter["movie_id"] != -1]
    movies = pd.read_csv(
        data / "ml1m_raw" / "movies.dat",
        sep="::",
        engine="python",
        header=None,
        names=["movie_id", "title", "genres"],
        encoding="latin-1",
    )
    movie_ids = np.sort(movies["movie_id"].unique())
    user_ids = np.sort(inter["user_id"].unique())
    item = np.searchsorted(movie_ids, inter["movie_id"].to_numpy())
    if not np.array_equal(movie_ids[item], inter["movie_id"].to_numpy()):
        raise ValueError("interactions reference movies missing from movies.dat")
    user = np.searchsorted(user_ids, inter["user_id"].to_numpy())
    rng = np.random.default_rng(seed)
    train = rng.permutation(item.size)[: round(0.8 * item.size)]

    kg_dir = data / "ml1m_kg_satori_mkr"
    kg = pd.read_csv(kg_dir / "kg.txt", sep="\t", header=None, names=["h", "r", "t"])
    link = pd.read_csv(
        kg_dir / "item_index2entity_id.txt", sep="\t", header=None, names=["movie_id", "sat"]
    )
    n_items = movie_ids.size
    sat_item = link["sat"].to_numpy()
    sat_to_item = np.searchsorted(movie_ids, link["movie_id"].to_numpy())
    kg_ids = np.union1d(kg["h"].to_numpy(), kg["t"].to_numpy())
    attr = np.setdiff1d(kg_ids, sat_item)  # Satori ids that are not items, sorted
    max_sat = int(max(kg_ids.max(), sat_item.max())) + 1
    ent = np.full(max_sat, -1, dtype=np.int64)
    ent[sat_item] = sat_to_item
    ent[attr] = n_items + np.arange(attr.size)
    rel_names = np.sort(kg["r"].unique())
    graph = build_collaborative_kg(
        n_users=user_ids.size,
        n_items=n_items,
        n_entities=n_items + attr.size,
        train_user_ids=user[train],
        train_item_ids=item[train],
        kg_heads=ent[kg["h"].to_numpy()],
        kg_tails=ent[kg["t"].to_numpy()],
        kg_relations=np.searchsorted(rel_names, kg["r"].to_numpy()),
    )
    note = (
        f"train = seeded 80% of {item.size:,} mapped pairs ({train.size:,}); "
        f"Satori KG {len(kg):,} triples, {attr.size:,} attribute entities, "
        f"{rel_names.size} relations"
    )
    return graph, note


def _read_kgat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 1:
                ids = np.array(parts[1:], dtype=np.int64)
                items.append(ids)
                users.append(np.full(ids.size, int(parts[0]), dtype=np.int64))
    return np.concatenate(users), np.concatenate(items)


def load_amazon_book(data: Path) -> tuple[CollaborativeKG, str]:
    d = data / "amazon_book_kgat"
    tr_u, tr_i = _read_kgat(d / "train.txt.gz")
    te_u, te_i = _read_kgat(d / "test.txt.gz")  # sizes only: test edges never reach the graph
    n_users = int(max(tr_u.max(), te_u.max())) + 1
    n_items = int(max(tr_i.max(), te_i.max())) + 1
    graph = build_collaborative_kg(
        n_users, n_items, n_items, tr_u, tr_i, np.empty(0, np.int64), np.empty(0, np.int64)
    )
    note = (
        f"train pairs {tr_u.size:,} (test {te_u.size:,} used only for id ranges); "
        "ITEM-ONLY graph (users + items): no kg_final offline, Freebase MIDs add no triples"
    )
    return graph, note


LOADERS = {"ml-1m": load_ml1m, "amazon-book": load_amazon_book}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def bench_dataset(name: str, data: Path, n: int, tie_break: str, sample: int, seed: int) -> None:
    t0 = time.perf_counter()
    graph, note = LOADERS[name](data)
    t_load = time.perf_counter() - t0
    print(f"\n=== {name} (n={n}, tie_break={tie_break}) ===")
    print(f"data: {note}")
    print_graph(graph, n, t_load)
    rss_before = _peak_rss_mib()
    seqs, t_vec = time_vectorised(name, graph, n, tie_break, seed)
    rng = np.random.default_rng(seed)
    compare_with_reference(graph, seqs, t_vec, n, tie_break, sample, seed, rng)
    print_scaling(graph, n, tie_break, seed, rng)
    tracemalloc.start()
    bfs_neighbor_sequences(graph, n, tie_break=tie_break, seed=seed)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"memory: BFS traced peak {traced_peak / 2**20:.1f} MiB (tracemalloc, numpy buffers); "
        f"process peak RSS {rss_before:.0f} MiB after load+build, "
        f"{_peak_rss_mib():.0f} MiB after BFS runs"
    )
    print_sequence_stats(seqs, graph)


def print_graph(graph: CollaborativeKG, n: int, t_load: float) -> None:
    deg = graph.degree()
    item_deg = deg[: graph.n_items]
    print(
        f"graph: {graph.n_nodes:,} nodes ({graph.n_items:,} items, "
        f"{graph.n_entities - graph.n_items:,} attribute entities, {graph.n_users:,} users), "
        f"{graph.n_edges:,} undirected edges; load+build {t_load:.2f} s"
    )
    p = np.percentile(item_deg, [10, 25, 50, 75, 90])
    print(
        "item degree p10/p25/p50/p75/p90 = "
        + " / ".join(f"{v:.0f}" for v in p)
        + f"; isolated items {int((item_deg == 0).sum()):,}; items with degree < n-1: "
        f"{int((item_deg < n - 1).sum()):,} ({(item_deg < n - 1).mean():.1%})"
    )


def time_vectorised(name: str, graph: CollaborativeKG, n: int, tie_break: str, seed: int):
    """Vectorised BFS over all items, best of 3 (to damp noise from the shared CPUs)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        seqs = bfs_neighbor_sequences(graph, n, tie_break=tie_break, seed=seed)
        times.append(time.perf_counter() - t0)
    t_vec = min(times)
    ok = "OK" if t_vec <= TARGET_S[name] else "MISSED"
    print(
        f"vectorised BFS, all {graph.n_items:,} items: {t_vec:.3f} s "
        f"(best of 3; {t_vec / graph.n_items * 1e6:.1f} us/item) "
        f"target <= {TARGET_S[name]:.0f} s: {ok}"
    )
    return seqs, t_vec


def compare_with_reference(graph: CollaborativeKG, seqs, t_vec: float, n: int, tie_break: str, sample: int,
                           seed: int, rng: np.random.Generator) -> None:
    """The reference BFS on a seeded sample of items: agreement and extrapolated speedup."""
    k = min(sample, graph.n_items)
    picks = rng.choice(graph.n_items, size=k, replace=False)
    t0 = time.perf_counter()
    ref = [reference_bfs(graph, int(i), n, tie_break, seed) for i in picks]
    t_ref = time.perf_counter() - t0
    agree = all(
        seqs.node_id[i, : seqs.length[i]].tolist() == r[0]
        and seqs.hop[i, : seqs.length[i]].tolist() == r[1]
        for i, r in zip(picks, ref, strict=True)
    )
    t_ref_all = t_ref / k * graph.n_items
    print(
        f"reference BFS: {k} sampled items in {t_ref:.3f} s ({t_ref / k * 1e3:.2f} ms/item) "
        f"-> extrapolated to {graph.n_items:,} items: {t_ref_all:.1f} s; "
        f"agrees with vectorised on the sample: {agree}"
    )
    print(f"speedup (extrapolated reference / vectorised): {t_ref_all / t_vec:.0f}x")


def print_scaling(graph: CollaborativeKG, n: int, tie_break: str, seed: int,
                  rng: np.random.Generator) -> None:
    print("scaling (vectorised, seeded random subsets of items):")
    print(f"  {'items':>8} {'share':>6} {'seconds':>9} {'us/item':>9}")
    perm = rng.permutation(graph.n_items)
    for share in (0.25, 0.5, 1.0):
        m = round(share * graph.n_items)
        sub = np.sort(perm[:m])
        best = _best_time(lambda sub=sub: bfs_neighbor_sequences(
            graph, n, tie_break=tie_break, seed=seed, items=sub))
        print(f"  {m:>8,} {share:>6.0%} {best:>9.3f} {best / m * 1e6:>9.1f}")


def print_sequence_stats(seqs, graph: CollaborativeKG) -> None:
    st = sequence_stats(seqs, graph)
    ln = st["length"]
    print(
        f"lengths: min {ln['min']} / median {ln['median']:.0f} / mean {ln['mean']:.2f} / "
        f"max {ln['max']}; short (< n): {st['short']['count']:,} "
        f"({st['short']['share']:.1%}), isolated: {st['short']['isolated']:,}"
    )
    hist = ln["histogram"]
    print("length histogram (length:count): " + ", ".join(f"{k}:{v}" for k, v in hist.items()))
    for h, row in st["type_share_by_hop"].items():
        print(
            f"  hop {h}: {row['count']:>9,} nodes  item {row['item']:.1%}  "
            f"entity {row['entity']:.1%}  user {row['user']:.1%}"
        )
    ex = st["short"]["examples"][:5]
    if ex:
        print(
            "short examples: "
            + "; ".join(
                f"item {e['item_id']} len {e['length']} deg {e['degree']} hop {e['max_hop']}"
                for e in ex
            )
        )


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=DEFAULT_SEQUENCE_LENGTH)
    ap.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    ap.add_argument("--tie-break", default="degree", choices=["degree", "random"])
    ap.add_argument("--sample", type=int, default=300, help="items for the reference BFS")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = shared_data_dir()
    if not data.is_dir():
        print(f"shared data not found at {data} (set KG4REC_SHARED_DATA)", file=sys.stderr)
        return 2
    for name in args.datasets:
        bench_dataset(name, data, args.n, args.tie_break, args.sample, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
