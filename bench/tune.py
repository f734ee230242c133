"""Hyperparameter search on the validation split; the test split is read once, for the winner.

Usage::

    python bench/tune.py --dataset ml-100k --variant lightgcn \\
        --grid lr=1e-3,5e-3,1e-2 --grid batch_size=1024,2048 [--budget 8] [--seed 0] \\
        [--set epochs=200 --set patience=10] [--threads 1] [--no-test]
    python bench/tune.py --dataset ml-100k --report     # the ledger as a markdown table
    python bench/tune.py --dataset ml-100k --report --slices   # the chosen models' test slices
    python bench/tune.py --dataset ml-100k --report --trials   # every configuration tried

Protocol (docs/MODEL.md, "How choices are made"):

* the search space is the cartesian product of the ``--grid`` axes; when it is larger than
  ``--budget`` a seeded random subset of ``--budget`` configurations is tried (same seed, same
  subset), so every variant gets the same, documented number of trainings;
* every trial trains with ``evaluate_test=False`` and early-stops on validation Recall@20; its
  settings, validation metrics and timings are appended to the trial ledger
  ``bench/results/tuning/<dataset>.jsonl`` (committed: the evidence for every default) and,
  unless ``--no-warehouse``, to the warehouse (``training_runs`` source ``tune`` and the
  ``tuning_trials`` table);
* the configuration with the best validation Recall@20 is chosen; only then, unless
  ``--no-test``, its best checkpoint is evaluated on the test split — once — and recorded as a
  normal run (source ``tuned``), which the paper tables read.

Trials already in the ledger with the same settings hash are not trained again, so a search
interrupted by the end of a session continues where it stopped (checkpoints resume too).
``--shard K/N`` splits one search between N workers sharing the ledger file (cores, machines
with a shared disk): worker K trains trials K, K+N, ...; whichever worker finds every trial in
the ledger chooses and reads the test split, under the study's lock, so it is read once.
``--warm-leader``: a worker beside a running search rebuilds the lost checkpoint of the best
trial so far (validation only), so the test read at the end need not replay it first.

Over 400 lines because the protocol is one reviewable unit: the grid and its seeded subset,
the ledger (read, append, void), trial and replicate runs, the one test read and the report
share the settings hash and the ledger format; split apart, each piece would need the others.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import lake_tables, mean_std, parse_settings, parse_value, run_store, spread  # noqa: E402
from model.config import VARIANTS, TrainSettings  # noqa: E402
from model.data import build_data, with_valid_in_train  # noqa: E402
from model.evaluate import SLICES  # noqa: E402
from model.report import code_version, metric_rows, new_run_id, run_row  # noqa: E402
from model.train import train  # noqa: E402
from warehouse.files import exclusive_lock  # noqa: E402

LEDGER_DIR = ROOT / "bench" / "results" / "tuning"
#: Marks a checkpoint directory rebuilt by ``--warm-leader`` (its test read is a replay's).
WARM_REPLAY = "warm_replay.json"
#: What the ledger keeps of each slice of a test read (``model.evaluate.SLICES``).
SLICE_FIELDS = ("recall@20", "ndcg@20", "users")


def parse_grid(axes: list[str]) -> dict[str, list]:
    """``["lr=1e-3,5e-3", "batch_size=1024"]`` → ``{"lr": [0.001, 0.005], ...}``."""
    grid: dict[str, list] = {}
    for axis in axes:
        name, sep, values = axis.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {axis!r}: expected NAME=V1,V2,...")
        if name not in TrainSettings.__dataclass_fields__:
            raise ValueError(f"--grid {axis!r}: {name!r} is not a training setting")
        grid[name] = [parse_value(v) for v in values.split(",")]
    return grid


def candidates(grid: dict[str, list], budget: int, seed: int) -> list[dict]:
    """The whole grid when it fits the budget, else a seeded random subset of it."""
    names = sorted(grid)
    every = [dict(zip(names, combo, strict=True))
             for combo in itertools.product(*(grid[n] for n in names))]
    if len(every) <= budget:
        return every
    return random.Random(seed).sample(every, budget)


def read_ledger(path: Path) -> dict[str, dict]:
    """Finished trials by settings hash (the last record of a hash wins).

    The ledger is append-only: a trial whose budget was not the one the others had (e.g. cut
    by its time cap while other jobs shared the CPU) is withdrawn by a later ``void`` record of
    its hash (``--void HASH --reason ...``) and runs again; both records stay as evidence."""
    trials: dict[str, dict] = {}
    if path.is_file():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
            if record.get("void"):
                trials.pop(record["config_hash"], None)
            else:
                trials[record["config_hash"]] = record
    return trials


def tuned_settings(dataset: str, variant: str, ledger_dir: Path | None = None,
                   study: str | None = None) -> dict:
    """The settings bench/tune.py chose on validation for this dataset and variant (the
    chosen record of ``bench/results/tuning/<dataset>.jsonl``), or {} when it was never tuned.

    ``study``: that study's choice. Without it, the variant's latest choice among its studies
    without a preset: a preset (``--study paper --set preset=paper``) is another model."""
    path = (ledger_dir or LEDGER_DIR) / f"{dataset}.jsonl"
    chosen = [r for r in read_ledger(path).values() if r.get("chosen") and r["variant"] == variant
              and (r.get("study") == study if study else not r.get("fixed", {}).get("preset"))]
    latest = chosen_record(chosen)
    return {**latest.get("fixed", {}), **latest["params"]} if latest else {}


#: Settings that say how a configuration is computed, not which model it is: a trial run on
#: another machine (another device, a CPU without native bf16 — docs/MODEL.md: fp32 and bf16
#: validation curves agree to 0.001) is the same trial, and a replay or a seed of it takes this
#: machine's values (the search's ``--set``) instead of the recorded ones.
EXECUTION_SETTINGS = ("device", "precision", "eval_chunk")


def find_trial(done: dict[str, dict], settings: TrainSettings) -> dict | None:
    """The ledger's record of these settings: same hash, or equal on every recorded setting
    but the :data:`EXECUTION_SETTINGS` — with settings added to TrainSettings after the record
    was written at their defaults (so a new field does not make every finished trial run
    again)."""
    if settings.config_hash() in done:
        return done[settings.config_hash()]
    current = settings.to_dict()
    defaults = TrainSettings(variant=settings.variant).to_dict()
    ignored = {"evaluate_test", *EXECUTION_SETTINGS}
    for record in reversed(search_trials(list(done.values()))):
        stored = record.get("settings", {})
        if stored.get("variant") != settings.variant:
            continue
        if all(current[k] == v for k, v in stored.items() if k in current and k not in ignored) \
                and all(current[k] == defaults[k] for k in current.keys() - stored.keys()):
            return record
    return None


def append_ledger(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def void_trial(ledger: Path, config_hash: str, reason: str) -> int:
    record = read_ledger(ledger).get(config_hash)
    if record is None:
        print(f"error: no finished trial {config_hash} in {ledger}", file=sys.stderr)
        return 2
    append_ledger(ledger, {"study": record["study"], "dataset": record["dataset"],
                           "variant": record["variant"], "trial": record["trial"],
                           "config_hash": config_hash, "void": reason, "voided_at":
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"voided trial {record['trial']} of {record['study']} ({config_hash}): {reason}")
    return 0


def choose(trials: list[dict]) -> dict:
    """Best validation Recall@20; ties go to the cheaper (fewer seconds) trial."""
    return max(trials, key=lambda t: (t["valid"]["recall@20"], -t["seconds"]))


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` → (2, 3): this worker trains trials 2, 5, 8, ... of the search."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:  # not two integers
        index = count = 0
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/2")
    return index, count


def study_lock(ledger: Path, study: str) -> AbstractContextManager:
    """Held while a worker chooses and reads the test split: two workers of one search
    (``--shard``) finishing together must not both read it. Per study, so another study of
    the same dataset's ledger is not kept waiting."""
    return exclusive_lock(ledger.parent / f".{ledger.name}.{study}.lock",
                          holder=f"tune.py concluding {study}", on_wait=_say)


def training_lock(out_dir: Path) -> AbstractContextManager:
    """Held while a process trains into ``out_dir``: a test read that would resume a warm
    replay (``--warm-leader``) still training waits for it instead of training beside it."""
    return exclusive_lock(out_dir / ".training.lock", holder="tune.py training", on_wait=_say)


def _say(message: str) -> None:
    print(message, flush=True)


def replay_settings(record: dict, **changes) -> TrainSettings:
    """A finished trial's settings made reproducible on any machine load.

    ``max_seconds`` is wall time, so a trial cut by it would stop at another epoch when re-run
    on a busier or idler machine; its replay runs exactly the epochs it ran instead (the
    early-stopping rule is unchanged). Other trials replay as they were."""
    values = dict(record["settings"])
    if record.get("stopped") == "time":
        values |= {"epochs": record["epochs_run"], "max_seconds": None}
    return TrainSettings.from_dict(values | changes)


def search_trials(records: list[dict]) -> list[dict]:
    """The search's own trials (replicate seeds of the chosen configuration excluded)."""
    return [r for r in records if not r.get("replicate") and not r.get("refit")]


def chosen_record(study_records: list[dict]) -> dict | None:
    """A study's chosen trial (the latest choice when the study was re-chosen), or None while
    its search is open."""
    chosen = [r for r in search_trials(study_records) if r.get("chosen")]
    return max(chosen, key=lambda r: r.get("chosen_at") or r.get("tested_at") or "",
               default=None)


def test_read(records: list[dict], chosen: dict) -> dict | None:
    """The record of a study's one test read: the chosen checkpoint's, or (``--refit``) its
    seed-less refit on train+valid."""
    if chosen.get("test"):
        return chosen
    refits = [r for r in records if r.get("refit") and "seed" not in r and r.get("test")
              and r.get("refit_of") == chosen["config_hash"]]
    return max(refits, key=lambda r: r.get("finished_at") or "", default=None)


def report(ledger: Path) -> str:
    """Markdown: per study, the trials run, the chosen settings, its validation and test, and
    the test mean ± std over the chosen configuration's seeds when replicates were run."""
    records = list(read_ledger(ledger).values())
    lines = ["| study | variant | trials | chosen (validation) | valid Recall@20 | "
             "test Recall@20 | NDCG@20 | MRR@20 | best epoch | s/epoch | seeds: test Recall@20 | "
             "seeds: test NDCG@20 | refit on train+valid: test Recall@20 | NDCG@20 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for study in dict.fromkeys(r["study"] for r in records):
        mine = search_trials([r for r in records if r["study"] == study])
        trials = {json.dumps(r["params"], sort_keys=True) for r in mine}  # configurations
        c = chosen_record(mine)
        if c is None:
            best = choose(mine)
            lines.append(f"| {study} | {best['variant']} | {len(trials)} | (search open) best so "
                         f"far {best['params']} | {best['valid']['recall@20']:.4f} | – | – | – | "
                         f"{best['best_epoch']} | {best['seconds_per_epoch']:.1f} | – | – | – | – |")
            continue
        refits = [r for r in records if r.get("refit") and r.get("refit_of") == c["config_hash"]]
        refit = [spread([r["test"][m] for r in refits]) for m in ("recall@20", "ndcg@20")]
        t = c.get("test")  # absent when the study's one test read was a refit
        tested = ((f"{t['recall@20']:.4f}", f"{t['ndcg@20']:.4f}", f"{t['mrr@20']:.4f}")
                  if t else ("–", "–", "–"))
        runs = [c] + [r for r in records if r["study"] == study and r.get("replicate")
                      and r.get("chosen_hash") == c["config_hash"]]
        seeds = (f"{mean_std([r['test']['recall@20'] for r in runs])} (n={len(runs)})",
                 mean_std([r["test"]["ndcg@20"] for r in runs])) if len(runs) > 1 else ("–", "–")
        lines.append(f"| {study} | {c['variant']} | {len(trials)} | {c['params']} | "
                     f"{c['valid']['recall@20']:.4f} | {tested[0]} | {tested[1]} | "
                     f"{tested[2]} | {c['best_epoch']} | {c['seconds_per_epoch']:.1f} | "
                     f"{seeds[0]} | {seeds[1]} | {refit[0]} | {refit[1]} |")
    return "\n".join(lines)


def trials_report(ledger: Path) -> str:
    """Markdown: every configuration each study trained (withdrawn trials left out), in trial
    order, with its validation score, how it ended and the precision it ran in (a search
    continued on another machine: :data:`EXECUTION_SETTINGS`); the chosen one marked."""
    records = list(read_ledger(ledger).values())
    lines = ["| study | trial | configuration | valid Recall@20 | valid NDCG@20 | best epoch | "
             "epochs run | stopped by | s/epoch | precision | chosen |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for study in dict.fromkeys(r["study"] for r in records):
        # one row per configuration: a trial run again after a setting was added to the hash
        # has two records; the chosen one, else the latest, speaks for it
        latest = {json.dumps(r["params"], sort_keys=True): r for r in sorted(
            search_trials([r for r in records if r["study"] == study]),
            key=lambda r: (bool(r.get("chosen")), r.get("finished_at") or ""))}
        for r in sorted(latest.values(), key=lambda r: r.get("trial") or 0):
            valid = r["valid"]
            lines.append(f"| {study} | {r.get('trial', '–')} | {r['params']} | "
                         f"{valid['recall@20']:.4f} | {valid.get('ndcg@20', float('nan')):.4f} | "
                         f"{r.get('best_epoch', '–')} | {r.get('epochs_run', '–')} | "
                         f"{r.get('stopped', '–')} | {r.get('seconds_per_epoch', float('nan')):.1f} | "
                         f"{r.get('settings', {}).get('precision', '–')} | "
                         f"{'**chosen**' if r.get('chosen') else ''} |")
    return "\n".join(lines)


def slice_summary(slices: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The ledger's copy of one split's slice metrics: Recall/NDCG@20 and the user count."""
    return {name: {key: float(values[key]) for key in SLICE_FIELDS if key in values}
            for name, values in slices.items()}


def slices_report(ledger: Path) -> str:
    """Markdown: per study, the chosen configuration's test Recall@20 (NDCG@20) on every slice,
    the mean over those of its seeds (replicates, seeded refits) whose record has slices
    (``seeds`` says how many)."""
    records = list(read_ledger(ledger).values())
    lines = ["| study | seeds | " + " | ".join(SLICES) + " |",
             "|---|---|" + "---|" * len(SLICES)]
    for study in dict.fromkeys(r["study"] for r in records):
        mine = [r for r in records if r["study"] == study]
        chosen = chosen_record(mine)
        c = test_read(mine, chosen) if chosen else None
        if c is None:
            continue
        runs = [r for r in mine if r.get("test") and r.get("test_slices")
                and (r is c or _same_configuration(r, c))]
        if not runs:
            continue
        cells = []
        for name in SLICES:
            recall = [r["test_slices"][name]["recall@20"] for r in runs if name in r["test_slices"]]
            ndcg = [r["test_slices"][name]["ndcg@20"] for r in runs if name in r["test_slices"]]
            cells.append(f"{sum(recall) / len(recall):.4f} ({sum(ndcg) / len(ndcg):.4f})"
                         if recall else "–")
        lines.append(f"| {study} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _same_configuration(run: dict, read: dict) -> bool:
    """Whether ``run`` is another seed of the test read ``read`` (a replicate of the chosen
    checkpoint's configuration, or a seeded refit of the same chosen trial)."""
    if run.get("replicate"):
        return run.get("chosen_hash") == read["config_hash"]
    return bool(run.get("refit")) and "seed" in run and run.get("refit_of") == read.get("refit_of")


def backfill_slices(ledger: Path, store, dataset: str) -> int:
    """Test reads recorded before the ledger kept slices: their slices from the warehouse run
    recorded under the same hash (appended as an amended record naming that run)."""
    filled = 0
    for record in read_ledger(ledger).values():
        if not record.get("test") or record.get("test_slices"):
            continue
        found = None
        for run_id in store.run_ids_named(dataset, record["variant"], record["config_hash"]):
            frame = store.slice_metrics(run_id)
            # the same run: its overall test Recall@20 is the ledger's
            if abs(float(frame.set_index("slice").loc["all", "recall"])
                   - record["test"]["recall@20"]) < 1e-9:
                found = run_id, frame
                break
        if found is None:
            print(f"{record['study']} {record['config_hash']}: no warehouse run with its slices")
            continue
        run_id, frame = found
        slices = {row.slice: {"recall@20": row.recall, "ndcg@20": row.ndcg, "users": row.users}
                  for row in frame.itertuples()}
        slices["all"]["users"] = record["test"]["users"]  # the warehouse keeps it per slice only
        append_ledger(ledger, {**record, "test_slices": slices, "slices_from": run_id})
        print(f"{record['study']} {record['config_hash']}: slices from {run_id}")
        filled += 1
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="lake partition, e.g. ml-100k")
    parser.add_argument("--variant", choices=VARIANTS, help="required unless --report")
    parser.add_argument("--report", action="store_true",
                        help="print the ledger's studies (chosen settings, valid, test) and exit")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...")
    parser.add_argument("--budget", type=int, default=8, help="most configurations trained")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="fixed setting for every trial (also part of the study)")
    parser.add_argument("--study", default=None,
                        help="name of the study (default: <variant>); trials are grouped by it")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None, help="default $KG4REC_DATA_DIR or ./data")
    parser.add_argument("--ledger", default=None, help="default bench/results/tuning/<dataset>.jsonl")
    parser.add_argument("--no-test", action="store_true", help="choose, but do not test")
    parser.add_argument("--warm-leader", action="store_true",
                        help="rebuild the checkpoint of the best finished trial so far if it is "
                             "gone (a replay, validation only: the test split is not read), so "
                             "the one test read is immediate if it stays chosen; then exit")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="train only trials K, K+N, ... (N workers sharing the ledger file); "
                             "the worker that finds every trial in the ledger chooses and tests")
    parser.add_argument("--replicate-seeds", default="", metavar="S1,S2",
                        help="after the test read, train the chosen configuration again with "
                             "these seeds (validation early stopping, test evaluated): the "
                             "spread of the reported number")
    parser.add_argument("--refit", action="store_true",
                        help="the test read is of a refit: the chosen settings trained on "
                             "train+valid for the chosen trial's best epoch count (no early "
                             "stopping; a release's train file used whole) instead of the "
                             "chosen checkpoint; replicate seeds are refits too")
    parser.add_argument("--slices", action="store_true",
                        help="with --report: the chosen configurations' test slices instead")
    parser.add_argument("--trials", action="store_true",
                        help="with --report: every configuration tried, with its validation")
    parser.add_argument("--backfill-slices", action="store_true",
                        help="copy the slices of test reads recorded without them from the "
                             "warehouse runs of the same hash into the ledger, and exit")
    parser.add_argument("--no-warehouse", action="store_true", help="do not record the runs")
    parser.add_argument("--void", metavar="CONFIG_HASH",
                        help="withdraw a finished trial (it runs again next time); needs --reason")
    parser.add_argument("--reason", help="why the trial is withdrawn (kept in the ledger)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ledger = Path(args.ledger) if args.ledger else LEDGER_DIR / f"{args.dataset}.jsonl"
    if args.report:
        if not ledger.is_file():
            print(f"error: no tuning ledger at {ledger}", file=sys.stderr)
            return 2
        print(slices_report(ledger) if args.slices
              else trials_report(ledger) if args.trials else report(ledger))
        return 0
    if args.backfill_slices:
        data_dir = Path(args.data_dir or os.environ.get("KG4REC_DATA_DIR", "data")).absolute()
        backfill_slices(ledger, run_store(data_dir), args.dataset)
        return 0
    if args.void:
        if not args.reason:
            parser.error("--void needs --reason")
        return void_trial(ledger, args.void, args.reason)
    if args.variant is None:
        parser.error("--variant is required (unless --report)")
    if args.warm_leader and (args.refit or args.no_test):
        parser.error("--warm-leader prepares the test read of the chosen checkpoint: "
                     "useless with --refit (a new training) or --no-test")

    try:
        grid = parse_grid(args.grid)
        shard, shards = parse_shard(args.shard)
    except ValueError as exc:
        parser.error(str(exc))
    fixed = parse_settings(args.set)
    study = args.study or args.variant
    configs = candidates(grid, args.budget, args.seed)
    print(f"{study}: {len(configs)} configuration(s) of a grid of "
          f"{len(list(itertools.product(*grid.values())))} (budget {args.budget})", flush=True)

    data_dir = Path(args.data_dir or os.environ.get("KG4REC_DATA_DIR", "data")).absolute()
    tables = lake_tables(data_dir, args.dataset)
    if tables is None:
        return 2
    search = Search(dataset=args.dataset, variant=args.variant, study=study, grid=grid,
                    fixed=fixed, budget=args.budget, seed=args.seed, threads=args.threads,
                    ledger=ledger, data=build_data(tables),
                    store=None if args.no_warehouse else run_store(data_dir),
                    out_root=data_dir / "models" / "tune" / args.dataset / args.variant)
    if args.warm_leader:
        finished = [t for n, params in enumerate(configs, 1)
                    if (t := search.lookup(n, params)) is not None]
        if not finished or any(t.get("test") is not None for t in finished):
            print("nothing to warm: " + ("the study's test read is done" if finished
                                         else "no finished trial yet"), flush=True)
            return 0
        search.warm_replay(choose(finished))
        return 0
    numbers = range(1, len(configs) + 1)
    mine = [n for n in numbers if (n - 1) % shards == shard - 1]
    found = {n: search.trial(n, len(configs), configs[n - 1]) for n in mine}
    trials = [found[n] if n in found else search.lookup(n, configs[n - 1]) for n in numbers]
    pending = [n for n, trial in zip(numbers, trials, strict=True) if trial is None]
    if pending:
        print(f"shard {shard}/{shards} done (trials {mine}); trials {pending} are not in "
              f"{ledger.name} yet: the worker that finishes last chooses and tests", flush=True)
        return 0
    print(trials_table(study, args.dataset, grid, trials))
    with study_lock(ledger, study):
        return conclude(search, args, ledger, study, trials)


def conclude(search: Search, args: argparse.Namespace, ledger: Path, study: str,
             trials: list[dict]) -> int:
    """Choose on validation, then the one test read (or refit) and the replicate seeds.
    Runs under :func:`study_lock`; the ledger is read again there, so a test read another
    worker made meanwhile is found, not repeated."""
    trials = [read_ledger(ledger).get(t["config_hash"], t) for t in trials]
    chosen = choose(trials)
    print(f"chosen on validation: trial {chosen['trial']} {chosen['params']}", flush=True)
    if search.store is not None:
        search.store.mark_chosen(study, args.dataset, chosen["config_hash"])
    seeds = [int(v) for v in args.replicate_seeds.split(",") if v.strip()]
    if args.refit and not args.no_test:
        if not chosen.get("chosen"):
            append_ledger(ledger, {**chosen, "chosen": True, "chosen_at":
                                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        for seed in [None, *seeds]:
            search.refit(chosen, seed)
    elif not args.no_test:
        chosen = search.test_once(chosen)
        for seed in seeds:
            search.replicate(chosen, seed)
    return 0


@dataclass
class Search:
    """One study: trains (or finds in the ledger) each configuration, then tests the winner."""

    dataset: str
    variant: str
    study: str
    grid: dict[str, list]
    fixed: dict
    budget: int
    seed: int
    threads: int
    ledger: Path
    data: object
    store: object | None
    out_root: Path

    def settings(self, params: dict) -> TrainSettings:
        """A trial's settings: the study's fixed ones, its parameters, validation only."""
        return TrainSettings.from_dict(
            {**self.fixed, **params, "variant": self.variant, "evaluate_test": False})

    def lookup(self, number: int, params: dict) -> dict | None:
        """The ledger's record of one configuration (said), or None if not trained yet."""
        found = find_trial(read_ledger(self.ledger), self.settings(params))
        if found is not None:
            print(f"trial {number}: {params} already in {self.ledger.name}: "
                  f"valid recall@20 {found['valid']['recall@20']:.4f}", flush=True)
        return found

    def trial(self, number: int, total: int, params: dict) -> dict:
        """The ledger record of one configuration, training it unless the ledger has it."""
        found = self.lookup(number, params)
        if found is not None:
            return found
        settings = self.settings(params)
        key = settings.config_hash()
        print(f"trial {number}/{total}: {params}", flush=True)
        result = self._train(settings, self.out_root / key)
        record = {"trial": number, "params": params, "fixed": self.fixed, "config_hash": key,
                  **self._outcome(result),
                  "grid": self.grid, "budget": self.budget, "seed": self.seed}
        append_ledger(self.ledger, record)
        if self.store is not None:
            run_id = new_run_id(self.dataset, self.variant, key)
            self.store.record_run(run_row(run_id, self.dataset, result, source="tune"),
                                  metric_rows(result))
            self.store.record_trial({**record, "run_id": run_id})
        return record

    def warm_replay(self, leader: dict) -> None:
        """Train the replay :meth:`test_once` would train for ``leader`` when its checkpoint is
        gone, with ``evaluate_test=False`` (not part of the hash: ``test_once`` later resumes
        the finished replay and only ranks the test split)."""
        if (self.out_root / leader["config_hash"] / "best.safetensors").is_file():
            print(f"trial {leader['trial']} leads; its checkpoint is here", flush=True)
            return
        settings, out_dir = self._replay(leader, evaluate_test=False)
        print(f"trial {leader['trial']} leads ({leader['params']}, valid recall@20 "
              f"{leader['valid']['recall@20']:.4f}); replaying it, validation only "
              f"({settings.epochs} epochs)", flush=True)
        with training_lock(out_dir):
            # a replay that lands in the trial's own directory must still read as a replay
            marker = {"replay_of": leader["config_hash"]}
            (out_dir / WARM_REPLAY).write_text(json.dumps(marker))
            result = self._train(settings, out_dir)
            (out_dir / WARM_REPLAY).write_text(json.dumps(marker | {
                "seconds": result.total_seconds, "epochs_run": result.epochs_run}))
        print(f"warm replay: valid recall@20 {result.best_valid['recall@20']:.4f} at epoch "
              f"{result.best_epoch}", flush=True)

    def test_once(self, chosen: dict) -> dict:
        """The one test evaluation of the chosen trial, from its best checkpoint.

        When the checkpoint is gone (a new machine), the trial is replayed first
        (:func:`replay_settings`) and its validation score compared with the ledger's."""
        if chosen.get("test") is not None:
            print("test already read for the chosen configuration (ledger): "
                  f"recall@20 {chosen['test']['recall@20']:.4f}", flush=True)
            return chosen
        settings = TrainSettings.from_dict(chosen["settings"] | {"evaluate_test": True})
        out_dir = self.out_root / chosen["config_hash"]
        replayed = (not (out_dir / "best.safetensors").is_file()
                    or (out_dir / WARM_REPLAY).is_file())
        marker = None
        if replayed:
            settings, out_dir = self._replay(chosen, evaluate_test=True)
            marker = out_dir / WARM_REPLAY
            print("checkpoint of the chosen trial lost: "
                  + ("its warm replay (--warm-leader) is read or finished"
                     if marker.is_file() else "replaying it")
                  + f" ({settings.epochs} epochs, time cap {settings.max_seconds})", flush=True)
        with training_lock(out_dir):
            result = self._train(settings, out_dir)
        warm = json.loads(marker.read_text()) if marker is not None and marker.is_file() else None
        record = {**chosen, "test": result.test, "tested_at":
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "chosen": True,
                  "test_slices": slice_summary(result.slices["test"])}
        if replayed:
            record["replay"] = {"valid": result.best_valid, "best_epoch": result.best_epoch,
                                "epochs_run": result.epochs_run, "seconds": result.total_seconds}
            if warm is not None:  # trained earlier by --warm-leader: its own time, not the read's
                record["replay"] |= {"warm": True, "seconds": warm.get("seconds")}
            print(f"replay: valid recall@20 {result.best_valid['recall@20']:.4f} "
                  f"(ledger {chosen['valid']['recall@20']:.4f}), best epoch "
                  f"{result.best_epoch} (ledger {chosen['best_epoch']})", flush=True)
        append_ledger(self.ledger, record)
        self._record_run(chosen["config_hash"], result, source="tuned")
        t = result.test
        print(f"test (once, chosen configuration): recall@20 {t['recall@20']:.4f} "
              f"ndcg@20 {t['ndcg@20']:.4f} mrr@20 {t['mrr@20']:.4f}")
        return record

    def replicate(self, chosen: dict, seed: int) -> dict:
        """The chosen configuration trained again with another ``seed`` (its test read too:
        the configuration is already chosen, this only measures the seed spread)."""
        settings = replay_settings(chosen, seed=seed, evaluate_test=True, **self._execution())
        key = settings.config_hash()
        done = self._recorded(key, "replicate", f"seed {seed}")
        if done is not None:
            return done
        print(f"seed {seed}: the chosen configuration {chosen['params']}", flush=True)
        result = self._train(settings, self.out_root / key)
        record = {"replicate": True, "seed": seed, "chosen_hash": chosen["config_hash"],
                  "params": chosen["params"], "config_hash": key, **self._outcome(result),
                  "test": result.test}
        append_ledger(self.ledger, record)
        self._record_run(key, result, source="tuned")
        print(f"seed {seed}: test recall@20 {result.test['recall@20']:.4f} "
              f"ndcg@20 {result.test['ndcg@20']:.4f}", flush=True)
        return record

    def refit(self, chosen: dict, seed: int | None = None) -> dict:
        """The chosen settings trained on train+valid for exactly the chosen trial's best epoch
        count (:func:`model.data.with_valid_in_train`, ``keep_epoch=last``), then the test read
        once; ``seed``: the same refit with another seed (the spread of the number)."""
        changes = {"epochs": chosen["best_epoch"], "keep_epoch": "last", "max_seconds": None,
                   "evaluate_test": True, **self._execution()} | (
                       {} if seed is None else {"seed": seed})
        settings = TrainSettings.from_dict(chosen["settings"] | changes)
        key = settings.config_hash()
        done = self._recorded(key, "refit", f"refit {key}")
        if done is not None:
            return done
        print(f"refit of {chosen['params']} on train+valid: {settings.epochs} epochs"
              + ("" if seed is None else f", seed {seed}"), flush=True)
        data = with_valid_in_train(self.data)
        result = self._train(settings, self.out_root / key, data)
        record = {**self._outcome(result), "refit": True, "refit_of": chosen["config_hash"],
                  "params": chosen["params"], "config_hash": key, "valid": chosen["valid"],
                  "train_pairs": int(data.train_user.numel()), "test": result.test,
                  "tested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if seed is not None:
            record["seed"] = seed
        append_ledger(self.ledger, record)
        self._record_run(key, result, source="tuned")
        t = result.test
        print(f"test (once, refit of the chosen configuration): recall@20 {t['recall@20']:.4f} "
              f"ndcg@20 {t['ndcg@20']:.4f} mrr@20 {t['mrr@20']:.4f}", flush=True)
        return record

    def _recorded(self, key: str, kind: str, label: str) -> dict | None:
        """The ledger's ``kind`` record ("replicate", "refit") of ``key``, said, or None."""
        done = read_ledger(self.ledger).get(key)
        if done is None or not done.get(kind):
            return None
        print(f"{label}: already in {self.ledger.name}: test recall@20 "
              f"{done['test']['recall@20']:.4f}", flush=True)
        return done

    def _replay(self, record: dict, evaluate_test: bool) -> tuple[TrainSettings, Path]:
        """The settings and the checkpoint directory of a finished trial's replay."""
        settings = replay_settings(record, evaluate_test=evaluate_test, **self._execution())
        return settings, self.out_root / settings.config_hash()

    def _execution(self) -> dict:
        """This search's own :data:`EXECUTION_SETTINGS` (its ``--set``), which a replay, a seed
        or a refit of a trial recorded on another machine runs with."""
        return {k: self.fixed[k] for k in EXECUTION_SETTINGS if k in self.fixed}

    def _train(self, settings: TrainSettings, out_dir: Path, data=None):
        """Train (or resume) one configuration into ``out_dir``, logging to stdout."""
        return train(settings, self.data if data is None else data, out_dir, resume=True,
                     log=lambda m: print(m, flush=True))

    def _outcome(self, result) -> dict:
        """The ledger fields every training of the study records."""
        return {"study": self.study, "dataset": self.dataset, "variant": self.variant,
                "settings": result.settings, "valid": result.best_valid,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "stopped": result.stopped, "seconds": result.total_seconds,
                "seconds_per_epoch": result.seconds_per_epoch, "device": result.device,
                "threads": self.threads, "code_version": code_version(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | (
                    {"test_slices": slice_summary(result.slices["test"])}
                    if "test" in result.slices else {})

    def _record_run(self, key: str, result, source: str) -> None:
        if self.store is None:
            return
        run_id = new_run_id(self.dataset, self.variant, key)
        self.store.record_run(run_row(run_id, self.dataset, result, source=source),
                              metric_rows(result))
        self.store.rebuild_paper_tables()


def trials_table(study: str, dataset: str, grid: dict[str, list], trials: list[dict]) -> str:
    """The study's trials as a markdown table (validation metrics only)."""
    lines = [f"\n{study} on {dataset} (validation, full ranking)",
             "| trial | " + " | ".join(sorted(grid)) + " | valid recall@20 | ndcg@20 | "
             "best epoch | stopped | s/epoch |",
             "| --- |" + " --- |" * (len(grid) + 5)]
    for t in trials:
        cells = " | ".join(str(t["params"].get(n)) for n in sorted(grid))
        lines.append(f"| {t['trial']} | {cells} | {t['valid']['recall@20']:.4f} | "
                     f"{t['valid']['ndcg@20']:.4f} | {t['best_epoch']} | {t['stopped']} | "
                     f"{t['seconds_per_epoch']:.1f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
