"""Growth, measured: every stage's seconds and peak RSS at k × ML-1M, and the exponent of each.

Usage::

    python bench/scaling.py [--sizes 1 4 16] [--skip-full] [--threads 1] [--batch-size 10240]
        [--out bench/out/scaling.png] [--work-dir DIR] [--keep-data] [--fresh] [--seed 0]

For each size k it generates a synthetic dataset of k × ML-1M (6,040 users, 3,706 items,
1,000,209 interactions; a KG of ~20,000 entities and ~90,000 triples over 12 relations; a 384-d
text feature per item) into a fresh data directory (``--work-dir``, default under the system
temp dir) and times these stages with the project's own functions, each in its own child
process (``subprocess``), whose peak RSS is read from ``os.wait4``'s ``ru_maxrss`` of exactly
that child (so one stage never inflates another's peak; the child's figure includes its
interpreter, imports and the reading of its inputs):

* ``ingest_split`` — the interactions as a TSV parsed by ``datasources.formats.parse_table``
  (format ``tsv``), ids by ``datasources.assemble.assemble_dataset``, the 8:1:1 split by
  ``datasources.split.split_interactions`` (what bench/ingest.py times);
* ``kg`` — ``datasources.kg.build.build_kg`` over one source of synthetic key triples
  (``item:<key>`` heads, attribute keys), duplicates dropped by build_kg itself;
* ``bfs`` — ``model.graph.collaborative_kg_from_tables`` (TRAIN pairs + KG) and
  ``model.sequences.bfs_neighbor_sequences`` (n = 32, the neighbours stage's default) with its
  ``to_table()`` (what the neighbours asset publishes);
* ``train_lightgcn`` / ``train_full`` — ``model.train.train`` with ``epochs=1``: the stage's
  seconds are the whole call — model build, ONE epoch, and the evaluation train() runs for it
  (the validation full ranking after the epoch and the final valid-split pass); the test split is
  NOT evaluated (``evaluate_test=False``). What is fitted and tabled for these stages is the
  epoch alone (``epoch_s``: the issue's "one training epoch"); the full-ranking validation,
  users × items by definition, and the seconds per step are fitted apart ("the training stages
  taken apart"). ``--batch-per-size`` scales the batch with the size (constant steps per
  epoch); ``--fusion-checkpoint`` sets ``fusion_checkpoint`` for ``full``. ``full``
  uses seq_len 16 and bf16 autocast (``precision=bf16`` where the CPU has native bf16, else
  ``auto``), as bench/train_speed.py / docs/MODEL.md do; ``--skip-full`` leaves it out.

The generation itself (``generate``) is timed too but is not a pipeline stage: it is recorded,
not fitted. Reading inputs and writing outputs (Parquet hand-offs between the children) are
outside the timed region.

Skew (calibrated on the real ML-1M ratings): item popularity and user activity follow a
Zipf–Mandelbrot law in the rank *quantile*, weight(r) = ((r + 0.5) / N + c) ** -a, so the
shape of the count distribution is the same at every k (the head does not get heavier as the
catalogue grows; only the size does):
  * items: a = 2.5, c = 0.2 (Gini ≈ 0.64, top 20 % of items ≈ 69 % of draws; ML-1M: 0.61 /
    63 %); every user draws its items from these weights without replacement (exactly: the
    first distinct items of an i.i.d. weighted stream);
  * users: activity = 20 + the rest of the pairs shared by a = 3.0, c = 0.3 (Gini ≈ 0.55; ML-1M:
    0.53, minimum 20), capped at 62 % of the catalogue (ML-1M's heaviest user: 2,314 of 3,706);
  * KG: heads are items (weights √popularity, 90 %) or attributes (10 %), tails attributes with
    a Zipf–Mandelbrot a = 1.2, c = 0.005 (genre-like hubs), each attribute in one relation.
Below k ≈ 0.09 the k-scaled catalogue cannot hold k × 1,000,209 distinct pairs: n is then capped
at 50 % density (tiny sizes are for tests only; the fit uses the realised n).

Then it fits b of cost ∝ n^b (n = interactions) per stage by least squares on log–log, prints a
markdown table (size, n, seconds and peak RSS per stage) and the exponents against the targets
(every stage ≤ n^1.1; peak RSS at 16× < 20 GB = 20·10⁹ bytes, else the stage that breaks it —
extrapolated by a straight line through the two largest sizes when 16× was not run and the
largest is at least 1×), and writes
``--out`` (a log–log PNG) with ``.md`` (the table) and ``.json`` (every measurement, the fits)
next to it. The JSON is also the resume file: a (size, stage) already in it is not run again,
so an interrupted 16× run continues where it stopped (its data directory is kept until the
size is complete; ``--fresh`` starts over). Timings are wall-clock on whatever else runs on the
machine: compare sizes only within one results file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

#: ML-1M's size (the KG as the issue counts it: ~20k entities including the items, ~90k triples).
ML1M = {"users": 6040, "items": 3706, "interactions": 1_000_209, "entities": 20_000,
        "triples": 90_000, "relations": 12, "text_dim": 384}
ITEM_ZIPF = (2.5, 0.2)          # (a, c) of the item popularity weights
USER_ZIPF = (3.0, 0.3)          # (a, c) of the user activity beyond the floor
USER_FLOOR = 20                 # ML-1M: every user has >= 20 ratings
USER_MAX_SHARE = 0.62           # heaviest user's share of the catalogue
ATTRIBUTE_ZIPF = (1.2, 0.005)   # tail attribute popularity in the KG
MAX_DENSITY = 0.5               # tiny sizes only
BFS_N = 32                      # model.sequences.DEFAULT_SEQUENCE_LENGTH
FULL_SEQ_LEN = 16
GENERATOR_VERSION = 1
TARGET_EXPONENT = 1.1
TARGET_RSS_GB = 20.0
TARGET_SIZE = 16.0

STAGES = ("ingest_split", "kg", "bfs", "train_lightgcn", "train_full")
LABELS = {"generate": "generate", "ingest_split": "ingest+split", "kg": "KG build",
          "bfs": "BFS sequences", "train_lightgcn": "lightgcn epoch", "train_full": "full epoch"}
REQUIRES = {"generate": (), "ingest_split": ("generate",), "kg": ("generate", "ingest_split"),
            "bfs": ("ingest_split", "kg"),
            "train_lightgcn": ("generate", "ingest_split", "kg", "bfs"),
            "train_full": ("generate", "ingest_split", "kg", "bfs")}
GB = 1e9


# --------------------------------------------------------------------------- the generator


def size_key(size: float) -> str:
    return f"{size:g}"


def dataset_shape(size: float) -> dict[str, int]:
    """The counts of k × ML-1M (users, items, interactions, attribute entities, triples)."""
    users = max(3, round(ML1M["users"] * size))
    items = max(3, round(ML1M["items"] * size))
    interactions = min(round(ML1M["interactions"] * size), int(MAX_DENSITY * users * items))
    return {"users": users, "items": items, "interactions": interactions,
            "attributes": max(1, round((ML1M["entities"] - ML1M["items"]) * size)),
            "triples": max(1, round(ML1M["triples"] * size)), "relations": ML1M["relations"]}


def zipf_weights(n: int, a: float, c: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Zipf–Mandelbrot weights in the rank quantile, summing to 1; ranks in a random order of
    the ids when ``rng`` is given (an id says nothing about its popularity)."""
    w = ((np.arange(n) + 0.5) / n + c) ** -a
    w /= w.sum()
    return w[rng.permutation(n)] if rng is not None else w


def allocate(total: int, weights: np.ndarray, floor: int, cap: int) -> np.ndarray:
    """Integers >= ``floor`` and <= ``cap`` summing to ``total``, the part above the floor in
    proportion to ``weights`` (water-filling: what a capped entry cannot take goes to the rest)."""
    n = weights.size
    if not n * floor <= total <= n * cap:
        raise ValueError(f"cannot share {total} among {n} between {floor} and {cap}")
    a = np.full(n, float(floor))
    rest, free = float(total - n * floor), np.ones(n, dtype=bool)
    while rest > 1e-6 and free.any():
        a[free] += rest * weights[free] / weights[free].sum()
        over = free & (a > cap)
        rest = float((a[over] - cap).sum())
        a[over] = cap
        free &= ~over
    base = np.floor(a + 1e-9).astype(np.int64)
    short = int(total - base.sum())
    if short > 0:
        base[np.argsort(-(a - base), kind="stable")[:short]] += 1
    return base


def sample_pairs(activity: np.ndarray, item_weights: np.ndarray, rng: np.random.Generator,
                 max_rounds: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, ``activity[u]`` for user u, items drawn without replacement
    with probability ∝ ``item_weights``: the first distinct items of an i.i.d. weighted stream,
    drawn in rounds for the users still short (after ``max_rounds`` the few left are filled
    uniformly from their unseen items). Returns users and items sorted by (user, item)."""
    n_users, n_items = activity.size, item_weights.size
    cdf = np.cumsum(item_weights)
    cdf /= cdf[-1]
    done: list[np.ndarray] = []
    cur = np.empty(0, dtype=np.int64)  # distinct keys u * n_items + i of the users still short
    need = activity.astype(np.int64).copy()
    pending = np.flatnonzero(need > 0)
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        covered = np.bincount(cur // n_items, weights=item_weights[cur % n_items],
                              minlength=n_users)[pending]
        draws = np.ceil(need[pending] * 1.1 / np.maximum(1.0 - covered, 0.05)).astype(np.int64) + 2
        users = np.repeat(pending, draws)
        items = np.searchsorted(cdf, rng.random(users.size), side="right")
        keys = np.concatenate([cur, users * n_items + np.minimum(items, n_items - 1)])
        uniq, first = np.unique(keys, return_index=True)
        order = np.lexsort((first, uniq // n_items))  # per user, in order of first draw
        uniq = uniq[order]
        owner = uniq // n_items
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        rank = np.arange(uniq.size) - np.repeat(starts, np.diff(np.r_[starts, uniq.size]))
        cur = uniq[rank < activity[owner]]
        have = np.bincount(cur // n_items, minlength=n_users)
        need = np.where(np.isin(np.arange(n_users), pending), activity - have, 0)
        complete = need[cur // n_items] == 0
        done.append(cur[complete])
        cur = cur[~complete]
        pending = np.flatnonzero(need > 0)
    for u in pending:  # only where a user takes most of a tiny catalogue
        seen = cur[cur // n_items == u] % n_items
        extra = rng.choice(np.setdiff1d(np.arange(n_items), seen), size=int(need[u]), replace=False)
        done.append(u * n_items + extra)
    done.append(cur)  # the users filled just above: their drawn items
    keys = np.sort(np.concatenate(done))
    return keys // n_items, keys % n_items


def generate_interactions(size: float, seed: int = 0) -> dict:
    """The interactions of k × ML-1M: ``user``, ``item`` (0-based ids), ``rating``, ``ts`` and
    the item popularity weights they were drawn with."""
    shape = dataset_shape(size)
    rng = np.random.default_rng([seed, 1])
    n_users, n_items, n = shape["users"], shape["items"], shape["interactions"]
    item_w = zipf_weights(n_items, *ITEM_ZIPF, rng)
    user_w = zipf_weights(n_users, *USER_ZIPF, rng)
    floor = min(USER_FLOOR, n // n_users)
    cap = max(floor, math.ceil(USER_MAX_SHARE * n_items))
    activity = allocate(n, user_w, floor, cap)
    users, items = sample_pairs(activity, item_w, rng)
    rating = rng.choice(np.arange(1, 6), size=users.size, p=[0.06, 0.11, 0.26, 0.35, 0.22])
    ts = 956_703_932 + rng.integers(0, 10**8, users.size)
    return {"user": users, "item": items, "rating": rating.astype(np.int64), "ts": ts,
            "item_weights": item_w, "shape": shape}


def generate_kg_keys(size: float, item_weights: np.ndarray, seed: int = 0):
    """Synthetic KG key triples (``head_key``, ``relation_key``, ``tail_key``): items are
    ``item:<item_key>`` (item key = id + 1, as in the TSV), attributes ``synthetic:a<j>``."""
    import pandas as pd

    shape = dataset_shape(size)
    rng = np.random.default_rng([seed, 2])
    n_attr, n_rel, n_triples = shape["attributes"], shape["relations"], shape["triples"]
    attr_w = zipf_weights(n_attr, *ATTRIBUTE_ZIPF, rng)
    attr_rel = rng.choice(n_rel, size=n_attr, p=zipf_weights(n_rel, 1.0, 0.1))
    tails = rng.choice(n_attr, size=n_triples, p=attr_w)
    from_item = rng.random(n_triples) < 0.9
    head_w = np.sqrt(item_weights) / np.sqrt(item_weights).sum()
    item_heads = rng.choice(item_weights.size, size=n_triples, p=head_w)
    attr_heads = rng.integers(0, n_attr, n_triples)
    item_keys = np.char.add("item:", (item_heads + 1).astype(str))
    attr_keys = np.char.add("synthetic:a", attr_heads.astype(str))
    return pd.DataFrame({
        "head_key": np.where(from_item, item_keys, attr_keys).astype(object),
        "relation_key": np.char.add("synthetic:r", attr_rel[tails].astype(str)).astype(object),
        "tail_key": np.char.add("synthetic:a", tails.astype(str)).astype(object),
    })


def gini(counts: np.ndarray) -> float:
    c = np.sort(np.asarray(counts, dtype=float))
    n = c.size
    return float(1 - 2 * np.sum(np.cumsum(c) / c.sum()) / n + 1 / n)


# --------------------------------------------------------------------------- the stages (children)


def _write_parquet(frame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path)


def _read(work: Path, *names: str) -> dict:
    import pandas as pd

    return {name: pd.read_parquet(work / f"{name}.parquet") for name in names}


def stage_generate(work: Path, size: float, seed: int, **_) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    data = generate_interactions(size, seed)
    table = pa.table({"user_id": data["user"] + 1, "item_id": data["item"] + 1,
                      "rating": data["rating"], "ts": data["ts"]})
    with (work / "interactions.tsv").open("wb") as fh:  # arrow would quote the header names
        fh.write(("\t".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, delimiter="\t",
                                                      quoting_style="none"))
    kg = generate_kg_keys(size, data["item_weights"], seed)
    _write_parquet(kg, work / "kg_source.parquet")
    rng = np.random.default_rng([seed, 3])
    n_items = data["shape"]["items"]
    np.save(work / "text_features.npy",  # row j: the item with key j + 1
            rng.standard_normal((n_items, ML1M["text_dim"]), dtype=np.float32))
    return {"seconds": time.perf_counter() - started,
            "extra": {**{f"target_{k}": v for k, v in data["shape"].items()},
                      "n_interactions": int(data["user"].size), "n_key_triples": len(kg)}}


def stage_ingest_split(work: Path, **_) -> dict:
    import pandas as pd

    from datasources.assemble import assemble_dataset
    from datasources.formats import parse_table
    from datasources.split import SPLIT_NAMES, split_interactions

    options = {"user_col": "user_id", "item_col": "item_id", "rating_col": "rating", "ts_col": "ts"}
    t0 = time.perf_counter()
    inter = parse_table("tsv", "interactions", work / "interactions.tsv", options)
    t1 = time.perf_counter()
    data = assemble_dataset(inter)
    t2 = time.perf_counter()
    parts = split_interactions(data.interactions["user_id"].to_numpy(),
                               data.interactions["item_id"].to_numpy())
    t3 = time.perf_counter()
    split = pd.DataFrame({"user_id": data.interactions["user_id"].to_numpy(),
                          "item_id": data.interactions["item_id"].to_numpy(),
                          "split": pd.Categorical.from_codes(parts, list(SPLIT_NAMES)).astype(str)})
    _write_parquet(data.users, work / "users.parquet")
    _write_parquet(data.items[["item_id", "item_key", "title"]], work / "items.parquet")
    _write_parquet(split, work / "split.parquet")
    counts = np.bincount(parts, minlength=3)
    return {"seconds": t3 - t0,
            "extra": {"parse_s": t1 - t0, "ids_s": t2 - t1, "split_s": t3 - t2,
                      "n_users": len(data.users), "n_items": len(data.items),
                      "n_interactions": len(data.interactions),
                      "n_train": int(counts[0]), "n_valid": int(counts[1]), "n_test": int(counts[2])}}


def stage_kg(work: Path, **_) -> dict:
    from datasources.kg.build import build_kg

    tables = _read(work, "items", "kg_source")
    started = time.perf_counter()
    result = build_kg(tables["items"], (), [("synthetic", tables["kg_source"], None)])
    seconds = time.perf_counter() - started
    _write_parquet(result.entities[["entity_id", "entity_key", "kind"]], work / "entities.parquet")
    _write_parquet(result.relations, work / "relations.parquet")
    _write_parquet(result.kg_triples[["head_id", "relation_id", "tail_id"]],
                   work / "kg_triples.parquet")
    return {"seconds": seconds,
            "extra": {"n_entities": len(result.entities), "n_relations": len(result.relations),
                      "n_triples": len(result.kg_triples)}}


def stage_bfs(work: Path, **_) -> dict:
    from model.graph import collaborative_kg_from_tables
    from model.sequences import bfs_neighbor_sequences

    tables = _read(work, "users", "items", "entities", "split", "kg_triples")
    t0 = time.perf_counter()
    graph = collaborative_kg_from_tables(tables)
    t1 = time.perf_counter()
    table = bfs_neighbor_sequences(graph, n=BFS_N).to_table()
    t2 = time.perf_counter()
    _write_parquet(table, work / "neighbor_sequences.parquet")
    return {"seconds": t2 - t0,
            "extra": {"graph_s": t1 - t0, "bfs_s": t2 - t1, "n_nodes": int(graph.n_nodes),
                      "n_edges": int(graph.n_edges), "n_sequence_rows": table.num_rows}}


def text_features_table(items, features: np.ndarray):
    """``clip_features`` rows (modality ``text``) for the items, from the generated matrix."""
    import pyarrow as pa

    rows = items["item_key"].astype(np.int64).to_numpy() - 1
    vectors = np.ascontiguousarray(features[rows], dtype=np.float32)
    dim = vectors.shape[1]
    return pa.table({
        "entity_id": pa.array(items["item_id"].to_numpy(np.int64)),
        "modality": pa.array(["text"] * len(rows), pa.string()),
        "model": pa.array(["synthetic-text"] * len(rows), pa.string()),
        "dim": pa.array(np.full(len(rows), dim, dtype=np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    })


def full_precision() -> str:
    import torch

    from model.train import cpu_has_bf16

    return "bf16" if torch.cuda.is_available() or cpu_has_bf16() else "auto"


def stage_train(work: Path, variant: str, threads: int | None, batch_size: int,
                fusion_checkpoint: bool = False, **_) -> dict:
    import torch

    from model.config import TrainSettings
    from model.data import build_data
    from model.train import train

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    tables = _read(work, "users", "items", "entities", "relations", "kg_triples", "split",
                   "neighbor_sequences")
    tables["clip_features"] = text_features_table(tables["items"],
                                                  np.load(work / "text_features.npy"))
    t0 = time.perf_counter()
    data = build_data(tables)
    data_s = time.perf_counter() - t0
    del tables
    extra = {"seq_len": FULL_SEQ_LEN, "precision": full_precision(),
             "fusion_checkpoint": fusion_checkpoint} if variant == "full" else {}
    settings = TrainSettings.from_dict({
        "variant": variant, "epochs": 1, "batch_size": batch_size, "patience": 10**6,
        "evaluate_test": False, **extra})
    log_path = work / f"train_{variant}.log"
    with tempfile.TemporaryDirectory(dir=work) as ckpt, log_path.open("w") as log:
        started = time.perf_counter()
        result = train(settings, data, ckpt, resume=False, log=lambda m: print(m, file=log))
        seconds = time.perf_counter() - started
    return {"seconds": seconds,
            "extra": {"epoch_s": result.history[0]["seconds"], "eval_s": result.eval_seconds,
                      "build_data_s": data_s, "device": result.device,
                      "threads": torch.get_num_threads(), "batch_size": batch_size,
                      "steps": math.ceil(data.train_user.numel() / batch_size), **extra}}


def run_stage_here(stage: str, work: Path, args) -> None:
    """The child's side: run one stage, write ``<stage>.result.json`` and ``<stage>.done``."""
    kwargs = {"size": args.size, "seed": args.seed, "threads": args.threads,
              "batch_size": args.batch_size, "fusion_checkpoint": args.fusion_checkpoint}
    if stage.startswith("train_"):
        out = stage_train(work, variant=stage.removeprefix("train_"), **kwargs)
    else:
        out = {"generate": stage_generate, "ingest_split": stage_ingest_split, "kg": stage_kg,
               "bfs": stage_bfs}[stage](work, **kwargs)
    (work / f"{stage}.result.json").write_text(json.dumps(out))
    (work / f"{stage}.done").touch()


# --------------------------------------------------------------------------- the parent


def batch_at(size: float, args) -> int:
    """The training batch at ``size``: fixed, or ``--batch-per-size`` × size (the same number of
    steps per epoch at every size)."""
    return max(1, round(args.batch_size * size)) if args.batch_per_size else args.batch_size


def run_child(stage: str, work: Path, size: float, args) -> dict:
    """Run one stage in a fresh interpreter; its seconds and its own peak RSS (os.wait4)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-stage", stage,
           "--work-dir", str(work), "--size", repr(size), "--seed", str(args.seed),
           "--batch-size", str(batch_at(size, args))]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.fusion_checkpoint:
        cmd.append("--fusion-checkpoint")
    (work / f"{stage}.done").unlink(missing_ok=True)
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode != 0:
        raise SystemExit(f"error: stage {stage} at size {size:g} failed (exit {proc.returncode}); "
                         "the stages measured so far are kept: run again to resume")
    out = json.loads((work / f"{stage}.result.json").read_text())
    out["peak_rss_gb"] = usage.ru_maxrss * 1024 / GB  # ru_maxrss: KiB on Linux
    out["code"] = code_version()
    return out


def code_version() -> str:
    """The commit that measured a stage (``+dirty`` with uncommitted changes)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout
    return git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if git("status", "--porcelain",
                                                                        "--untracked-files=no").strip() else "")


class Results:
    """The JSON results file: measurements per (size, stage), written after every stage."""

    def __init__(self, path: Path, settings: dict, fresh: bool):
        self.path = path
        self.data = {"settings": settings, "sizes": {}}
        if path.is_file() and not fresh:
            old = json.loads(path.read_text())
            if old.get("settings") != settings:
                raise SystemExit(f"error: {path} holds results made with other settings "
                                 f"({old.get('settings')}, now {settings}); use --fresh or "
                                 "another --out")
            self.data["sizes"] = old.get("sizes", {})

    def get(self, size: float, stage: str) -> dict | None:
        return self.data["sizes"].get(size_key(size), {}).get(stage)

    def put(self, size: float, stage: str, record: dict) -> None:
        self.data["sizes"].setdefault(size_key(size), {})[stage] = record
        self.save()

    def save(self, **more) -> None:
        self.data.update(more)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def measure_size(size: float, stages: list[str], results: Results, work_root: Path, args) -> None:
    todo = [s for s in stages if results.get(size, s) is None]
    if not todo:
        print(f"size {size:g}: all stages in {results.path}, skipped", flush=True)
        return
    work = work_root / f"k={size_key(size)}"
    work.mkdir(parents=True, exist_ok=True)

    def ensure(stage: str) -> None:
        for dep in REQUIRES[stage]:
            if not (work / f"{dep}.done").is_file():
                ensure(dep)
        if stage in todo or not (work / f"{stage}.done").is_file():
            print(f"size {size:g}: {LABELS[stage]} ...", flush=True)
            record = run_child(stage, work, size, args)
            print(f"size {size:g}: {LABELS[stage]} {record['seconds']:.2f} s, peak RSS "
                  f"{record['peak_rss_gb']:.2f} GB", flush=True)
            if results.get(size, stage) is None:  # a rerun only to rebuild inputs keeps the first
                results.put(size, stage, record)

    for stage in ["generate", *todo]:
        if results.get(size, stage) is None or stage in todo:
            ensure(stage)
    if all(results.get(size, s) is not None for s in stages) and not args.keep_data:
        shutil.rmtree(work, ignore_errors=True)


def fit_exponent(n, y) -> tuple[float, float]:
    """b and c of y = c · n^b, least squares on log–log."""
    x, z = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(y, dtype=float))
    b, a = np.polyfit(x, z, 1)
    return float(b), float(math.exp(a))


def points(results: Results, stage: str, key: str) -> tuple[list[float], list[float], list[float]]:
    sizes, ns, ys = [], [], []
    for k, record in sorted(results.data["sizes"].items(), key=lambda kv: float(kv[0])):
        gen = record.get("generate")
        if stage in record and gen is not None:
            sizes.append(float(k))
            ns.append(gen["extra"]["n_interactions"])
            ys.append(record[stage][key] if key in record[stage] else record[stage]["extra"][key])
    return sizes, ns, ys


def cost_key(stage: str) -> str:
    """What is fitted: a training stage's epoch alone (the stage's seconds also hold building
    the model and the full-ranking validation, users × items by definition: reported apart in
    :func:`training_parts`); any other stage's seconds."""
    return "epoch_s" if stage.startswith("train_") else "seconds"


def fits(results: Results, stages: list[str]) -> dict:
    out = {}
    target_n = ML1M["interactions"] * TARGET_SIZE
    for stage in stages:
        sizes, ns, secs = points(results, stage, cost_key(stage))
        _, _, rss = points(results, stage, "peak_rss_gb")
        row: dict = {"sizes": sizes}
        if len(set(ns)) >= 2:
            # the slope between consecutive sizes too: a curve, not a line, says where it bends
            # (e.g. when the working arrays outgrow the CPU's last-level cache)
            row["segments"] = [
                [sizes[i], sizes[i + 1], fit_exponent(ns[i:i + 2], secs[i:i + 2])[0]]
                for i in range(len(ns) - 1) if ns[i + 1] != ns[i]]
            row["exponent_seconds"], row["coef_seconds"] = fit_exponent(ns, secs)
            row["exponent_rss"], _ = fit_exponent(ns, rss)
            row["seconds_ok"] = row["exponent_seconds"] <= TARGET_EXPONENT
        if TARGET_SIZE in sizes:
            row["rss_at_16x_gb"], row["rss_at_16x_how"] = rss[sizes.index(TARGET_SIZE)], "measured"
        elif len(set(ns)) >= 2 and max(ns) >= ML1M["interactions"]:
            # memory grows with n plus a constant (interpreter, imports): a line, not a power;
            # from sizes under 1× the constant hides the slope, so nothing is extrapolated
            (n1, r1), (n2, r2) = sorted(zip(ns, rss, strict=True))[-2:]
            slope = (r2 - r1) / (n2 - n1) if n2 != n1 else 0.0
            row["rss_at_16x_gb"] = r2 + max(slope, 0.0) * (target_n - n2)
            row["rss_at_16x_how"] = "extrapolated"
        out[stage] = row
    return out


def _cost(record: dict, stage: str) -> float:
    key = cost_key(stage)
    return record[key] if key in record else record["extra"][key]


def markdown(results: Results, stages: list[str], fitted: dict) -> str:
    cols = [LABELS[s] for s in stages]
    lines = ["| size (× ML-1M) | n | " + " | ".join(f"{c} s" for c in cols) + " | "
             + " | ".join(f"{c} peak RSS GB" for c in cols) + " |",
             "|---:|---:|" + "---:|" * (2 * len(stages))]
    for k, record in sorted(results.data["sizes"].items(), key=lambda kv: float(kv[0])):
        if "generate" not in record:
            continue
        n = record["generate"]["extra"]["n_interactions"]
        secs = [f"{_cost(record[s], s):.2f}" if s in record else "–" for s in stages]
        rss = [f"{record[s]['peak_rss_gb']:.2f}" if s in record else "–" for s in stages]
        lines.append(f"| {k} | {n:,} | " + " | ".join(secs) + " | " + " | ".join(rss) + " |")
    lines += ["", f"| stage | b (seconds ∝ n^b) | ≤ {TARGET_EXPONENT} | b between sizes | "
              f"b (peak RSS) | peak RSS at {TARGET_SIZE:g}× GB |", "|---|---:|---|---|---:|---:|"]
    for stage in stages:
        row = fitted[stage]
        if "exponent_seconds" in row:
            b = f"{row['exponent_seconds']:.2f}"
            ok = "OK" if row["seconds_ok"] else "MISSED"
            br = f"{row['exponent_rss']:.2f}"
        else:
            b, ok, br = "–", "(needs 2 sizes)", "–"
        at16 = (f"{row['rss_at_16x_gb']:.2f} ({row['rss_at_16x_how']})" if "rss_at_16x_gb" in row
                else "–")
        segments = ", ".join(f"{a:g}→{c:g}: {e:.2f}" for a, c, e in row.get("segments", [])) or "–"
        lines.append(f"| {LABELS[stage]} | {b} | {ok} | {segments} | {br} | {at16} |")
    return "\n".join(lines)


TRAIN_PARTS = {"epoch_s": "epoch (steps)", "step_s": "one step", "eval_s": "one validation"}


def training_parts(results: Results, stages: list[str]) -> str:
    """The training stages taken apart: the epoch's steps, one step, one validation ranking
    (each fitted against n): an epoch is steps × step, and a step propagates the whole graph."""
    lines = ["| stage | size | batch | steps | epoch s | s/step | validation s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    fitted_rows = []
    for stage in (s for s in stages if s.startswith("train_")):
        for k, record in sorted(results.data["sizes"].items(), key=lambda kv: float(kv[0])):
            if stage in record:
                x = record[stage]["extra"]
                lines.append(f"| {LABELS[stage]} | {k} | {x['batch_size']:,} | {x['steps']:,} | "
                             f"{x['epoch_s']:.2f} | {x['epoch_s'] / x['steps']:.3f} | "
                             f"{x['eval_s']:.2f} |")
        _, ns, epoch = points(results, stage, "epoch_s")
        _, _, steps = points(results, stage, "steps")
        _, _, evals = points(results, stage, "eval_s")
        if len(set(ns)) >= 2:
            per_step = [e / st for e, st in zip(epoch, steps, strict=True)]
            b = {part: fit_exponent(ns, ys)[0] for part, ys in
                 (("epoch_s", epoch), ("step_s", per_step), ("eval_s", evals))}
            fitted_rows.append(f"| {LABELS[stage]} | " + " | ".join(
                f"{b[part]:.2f}" for part in TRAIN_PARTS) + " |")
    if fitted_rows:
        lines += ["", "| stage | " + " | ".join(f"b: {v}" for v in TRAIN_PARTS.values()) + " |",
                  "|---|" + "---:|" * len(TRAIN_PARTS), *fitted_rows]
    return "\n".join(lines)


def verdict(stages: list[str], fitted: dict) -> list[str]:
    out = []
    slow = [s for s in stages if fitted[s].get("seconds_ok") is False]
    have = [s for s in stages if "seconds_ok" in fitted[s]]
    if have:
        out.append(f"time target (every stage ≤ n^{TARGET_EXPONENT}): "
                   + ("OK" if not slow else "MISSED by " + ", ".join(
                       f"{LABELS[s]} (b = {fitted[s]['exponent_seconds']:.2f})" for s in slow)))
    at16 = {s: fitted[s] for s in stages if "rss_at_16x_gb" in fitted[s]}
    if at16:
        worst = max(at16, key=lambda s: at16[s]["rss_at_16x_gb"])
        how = {r["rss_at_16x_how"] for r in at16.values()}
        broken = [s for s in at16 if at16[s]["rss_at_16x_gb"] >= TARGET_RSS_GB]
        out.append(f"memory target (peak RSS at {TARGET_SIZE:g}× < {TARGET_RSS_GB:g} GB, "
                   f"{'/'.join(sorted(how))}): largest {at16[worst]['rss_at_16x_gb']:.2f} GB "
                   f"({LABELS[worst]}) → " + ("OK" if not broken else "MISSED, broken by "
                                              + ", ".join(LABELS[s] for s in broken)))
    elif have:
        out.append(f"memory target (peak RSS at {TARGET_SIZE:g}× < {TARGET_RSS_GB:g} GB): not "
                   f"judged ({TARGET_SIZE:g}× not run; an extrapolation needs a size ≥ 1×)")
    return out


def plot(results: Results, stages: list[str], fitted: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for stage in stages:
        _, ns, secs = points(results, stage, cost_key(stage))
        _, _, rss = points(results, stage, "peak_rss_gb")
        if not ns:
            continue
        row = fitted[stage]
        label = LABELS[stage] + (f" (b={row['exponent_seconds']:.2f})"
                                 if "exponent_seconds" in row else "")
        (line,) = ax_t.loglog(ns, secs, "o", label=label)
        if "exponent_seconds" in row:
            grid = np.geomspace(min(ns), max(ns), 20)
            ax_t.loglog(grid, row["coef_seconds"] * grid ** row["exponent_seconds"], "-",
                        color=line.get_color(), alpha=0.6)
        ax_m.loglog(ns, rss, "o-", label=LABELS[stage], color=line.get_color())
    if any(points(results, s, cost_key(s))[1] for s in stages):
        ns_all = sorted({n for s in stages for n in points(results, s, cost_key(s))[1]})
        ref = np.geomspace(ns_all[0], ns_all[-1], 20)
        ax_t.loglog(ref, (ref / ref[0]) ** TARGET_EXPONENT, ":", color="grey",
                    label=f"slope {TARGET_EXPONENT} (target)")
    ax_m.axhline(TARGET_RSS_GB, color="red", ls="--", label=f"{TARGET_RSS_GB:g} GB target")
    ax_t.set(xlabel="interactions n", ylabel="seconds", title="stage time vs n (fit: n^b)")
    ax_m.set(xlabel="interactions n", ylabel="peak RSS (GB)", title="peak RSS per stage")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                        help="multiples of ML-1M (default 1 4 16)")
    parser.add_argument("--skip-full", action="store_true", help="leave out the full variant")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of the training stages (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=10240,
                        help="BPR batch of both variants (docs/MODEL.md's ML-1M setting)")
    parser.add_argument("--batch-per-size", action="store_true",
                        help="batch = --batch-size × size: every size trains the same number of "
                             "steps per epoch (each step propagates the whole graph, so a fixed "
                             "batch makes an epoch cost steps × graph ∝ n²)")
    parser.add_argument("--fusion-checkpoint", action="store_true",
                        help="full: recompute the fusion blocks in backward "
                             "(TrainSettings.fusion_checkpoint): its memory no longer grows "
                             "with tokens × blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scaling.png",
                        help="the plot; .md and .json (results, resumable) are written beside it")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the per-size data directories go (default: system temp)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep each size's data directory after it is complete")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore (and overwrite) an existing results file")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to measure (default: all; the ones they need run too)")
    parser.add_argument("--redo", nargs="+", choices=STAGES, default=[],
                        help="forget the recorded results of these stages first (e.g. after "
                             "changing their code); each record names the code that made it")
    parser.add_argument("--run-stage", choices=["generate", *STAGES], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(s <= 0 for s in args.sizes):
        parser.error("--sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_stage:
        run_stage_here(args.run_stage, args.work_dir, args)
        return 0
    stages = [s for s in STAGES if s in args.stages
              and not (args.skip_full and s == "train_full")]
    settings = {"generator": GENERATOR_VERSION, "seed": args.seed, "threads": args.threads,
                "batch_size": args.batch_size, "bfs_n": BFS_N, "full_seq_len": FULL_SEQ_LEN}
    # (absent unless set: results files written before these options stay valid)
    settings |= {k: True for k in ("batch_per_size", "fusion_checkpoint") if getattr(args, k)}
    out = args.out.resolve()
    results = Results(out.with_suffix(".json"), settings, args.fresh)
    for record in results.data["sizes"].values():
        for stage in args.redo:
            record.pop(stage, None)
    work_root = (args.work_dir or Path(tempfile.gettempdir()) / f"kg4rec-scaling-seed{args.seed}")
    if args.fresh:
        for size in args.sizes:
            shutil.rmtree(work_root / f"k={size_key(size)}", ignore_errors=True)
    for size in sorted(args.sizes):
        measure_size(size, stages, results, work_root.resolve(), args)

    shown = [s for s in STAGES if any(s in r for r in results.data["sizes"].values())]
    fitted = fits(results, shown)
    table = markdown(results, shown, fitted)
    lines = verdict(shown, fitted)
    parts = training_parts(results, shown)
    print("\n" + table + "\n\n" + parts + "\n")
    for line in lines:
        print(line)
    gens = [(k, r["generate"]["seconds"]) for k, r in results.data["sizes"].items() if "generate" in r]
    print("generation (not a stage): " + ", ".join(f"{k}× {s:.1f} s" for k, s in gens))
    results.save(fits=fitted)
    out.with_suffix(".md").write_text(
        f"# Scaling (bench/scaling.py)\n\nsettings: {json.dumps(settings)}\n\n{table}\n\n"
        + "\n".join(f"* {x}" for x in lines) + f"\n\nThe training stages taken apart:\n\n{parts}\n")
    plot(results, shown, fitted, out)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
