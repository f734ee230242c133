"""Benchmark: ingest + split at ML-1M scale from local files, on this machine.

    python bench/ingest.py            # needs ../shared/data (the real ML-1M pairs)

Two paths are timed, each parse → ids → split (what the ``dataset_tables`` and ``split`` assets
do, without Dagster's process start-up):
  * the offline ML-1M source (TSV of 1,000,209 real pairs + movies.dat + users.dat);
  * the GroupLens ``ratings.dat`` format at the same scale: the same pairs written to a temporary
    ``::``-separated file with synthetic ratings/timestamps (ratings.dat itself is not staged).
Target (foundation issue): ML-1M ingest + split under 10 s on a 2-core machine.

Then the lake write of the offline path, two ways in the same run, so the ratio is the cost of
the transaction layer (issue #14's target: at most +20 % on the whole ingest):
  * baseline — each table written to a temporary file and renamed (the lake before snapshots);
  * transactional — what the assets do now: the ingest tables in one lake transaction (staged,
    audited: non-empty, row-count drop, dense ids, foreign keys; published by a symlink swap),
    then the split in a second one (audited against the interactions).
Each is repeated ``--repeat`` times (default 3) on a fresh temporary lake; the best is shown.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasources.assemble import assemble_dataset  # noqa: E402
from datasources.formats import parse_table  # noqa: E402
from datasources.split import split_interactions  # noqa: E402
from warehouse import Lake  # noqa: E402
from warehouse.files import atomic_path  # noqa: E402

SHARED = Path(os.environ.get("KG4REC_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET_S = 10.0


def run(interactions_path, fmt, options, items_path, users_path, keep=None):
    t0 = time.perf_counter()
    inter = parse_table(fmt, "interactions", interactions_path, options)
    t1 = time.perf_counter()
    items = parse_table("ml1m.movies", "items", items_path)
    users = parse_table("ml1m.users", "users", users_path)
    data = assemble_dataset(inter, items, users)
    t2 = time.perf_counter()
    parts = split_interactions(data.interactions["user_id"].to_numpy(), data.interactions["item_id"].to_numpy())
    t3 = time.perf_counter()
    if keep is not None:
        split = data.interactions[["user_id", "item_id"]].assign(
            split=np.array(["train", "valid", "test"])[parts])
        keep.update(users=data.users, items=data.items, interactions=data.interactions, split=split)
    return len(data.interactions), np.bincount(parts, minlength=3), (t1 - t0, t2 - t1, t3 - t2, t3 - t0)


def write_plain(root: Path, tables: dict) -> None:
    """The pre-snapshot lake: one temporary file + rename per table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, frame in tables.items():
        with atomic_path(root / "lake" / "dataset=ml-1m" / f"{name}.parquet") as tmp:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")


def write_transactional(root: Path, tables: dict) -> None:
    lake = Lake(root)
    with lake.transaction("ml-1m", note="bench ingest") as tx:
        for name in ("users", "items", "interactions"):
            tx.write(name, tables[name])
    with lake.transaction("ml-1m", note="bench split") as tx:
        tx.write("split", tables["split"])


def time_writes(tables: dict, repeat: int) -> dict[str, float]:
    best = {}
    for name, write in (("baseline", write_plain), ("transactional", write_transactional)):
        times = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                write(Path(tmp), tables)
                times.append(time.perf_counter() - started)
        best[name] = min(times)
    return best


def report(name, rows, parts, times):
    parse_s, assemble_s, split_s, total_s = times
    print(f"{name:<28} rows={rows:>9,}  parse {parse_s:5.2f}s  ids {assemble_s:5.2f}s  split {split_s:5.2f}s  "
          f"total {total_s:5.2f}s  {rows / total_s:>10,.0f} rows/s  target<={TARGET_S:.0f}s "
          f"{'OK' if total_s <= TARGET_S else 'MISSED'}  (total/target = {total_s / TARGET_S:.2f})")
    print(f"{'':<28} split train/valid/test = {parts.tolist()}")


def main() -> int:
    if not (SHARED / "ml1m_derived" / "interactions.tsv.gz").is_file():
        print(f"skip: real data not found under {SHARED}")
        return 0
    movies, users = SHARED / "ml1m_raw" / "movies.dat", SHARED / "ml1m_raw" / "users.dat"
    tsv = SHARED / "ml1m_derived" / "interactions.tsv.gz"
    options = {"user_col": "user_id", "item_col": "movie_id", "label_col": "ge4", "null_item": "-1"}
    tables: dict = {}
    rows, parts, times = run(tsv, "tsv", options, movies, users, keep=tables)
    report("ml-1m offline TSV (.gz)", rows, parts, times)
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    writes = time_writes(tables, repeat)
    plain, txn = times[3] + writes["baseline"], times[3] + writes["transactional"]
    print(f"{'lake write, baseline':<28} {writes['baseline']:5.2f}s  ingest + write {plain:5.2f}s")
    print(f"{'lake write, transactional':<28} {writes['transactional']:5.2f}s  ingest + write {txn:5.2f}s"
          f"  (transactional/baseline, whole ingest = {txn / plain:.3f}; target <= 1.20 "
          f"{'OK' if txn / plain <= 1.2 else 'MISSED'})")

    inter = parse_table("tsv", "interactions", tsv, options).dropna(subset=["item_key"])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ratings = Path(tmp) / "ratings.dat"
        stars = rng.integers(1, 6, len(inter))
        stamps = 956703932 + rng.integers(0, 10**8, len(inter))
        lines = [f"{u}::{i}::{r}::{t}\n" for u, i, r, t in zip(inter.user_key, inter.item_key, stars, stamps, strict=True)]
        ratings.write_text("".join(lines), encoding="latin-1")
        rows, parts, times = run(ratings, "ml1m.ratings", {}, movies, users)
        report("ml-1m GroupLens ratings.dat", rows, parts, times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
