"""One training run as a command: ``python -m model.job --config run.json [--error-file err.txt]``.

Why this exists: training is the one step that wants other hardware (a GPU, several under
``torchrun``), runs for hours and can crash the process it runs in. The Dagster asset
(``assets.training.trained_model``) therefore launches it here, out of the orchestrating
process, through Dagster Pipes: the log lines stream to the run, the results come back as asset
materializations, cancelling the run stops this process, and a crash fails the step with this
process's message. The same command runs without Dagster (a shell, a scheduler, a GPU pod) and
records the run exactly as the asset does. No ``dagster`` import here (tests/test_layering.py):
only the zero-dependency ``dagster_pipes`` package, and only when Dagster launched us.

``run.json``::

    {"dataset": "ml-100k", "data_dir": "data", "lake_version": null,   # null: the published one
     "settings": {...every model.config.TrainSettings field, unknown ones are refused...},
     "resume": true, "out_dir": null,   # null: <data_dir>/models/<dataset>/<variant>/<hash>
     "report_assets": ["trained_model", "training_runs", "metrics"],   # Pipes only
     "warehouse": null,   # or {"path": ".../warehouse.duckdb", "data_dir": "..."}
     "source": "job",     # training_runs.source
     "timeout_s": null}   # under torchrun: seconds before a silent rank fails the run

It reads the lake snapshot, trains (``model.train.train``), pins the snapshot, records the run
and its metrics in the warehouse and writes ``<out_dir>/result.json`` (:func:`summarize`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from model.config import TrainSettings

RESULT_FILE = "result.json"
ASSET_KEYS = ("trained_model", "training_runs", "metrics")
METRIC_COLUMNS = ["split", "metric", "k", "value", "epoch", "slice"]
REQUIRED = ("dataset", "data_dir", "settings")
OPTIONAL = {"lake_version": None, "resume": True, "out_dir": None, "report_assets": [],
            "warehouse": None, "source": "job", "timeout_s": None}

Log = Callable[[str], None]


@dataclass(frozen=True)
class JobConfig:
    """A parsed ``run.json``; :meth:`from_dict` refuses what it does not know."""

    dataset: str
    data_dir: str
    settings: TrainSettings
    lake_version: int | None = None
    resume: bool = True
    out_dir: str | None = None
    report_assets: tuple[str, ...] = ()
    warehouse: dict[str, str] | None = None
    source: str = "job"
    timeout_s: float | None = None  # torchrun: the process-group timeout (model.distributed)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobConfig:
        missing = [k for k in REQUIRED if k not in values]
        unknown = sorted(set(values) - set(REQUIRED) - set(OPTIONAL))
        if missing or unknown:
            raise ValueError(f"job config: missing {missing}, unknown {unknown}")
        names = {f.name for f in fields(TrainSettings)}
        bad = sorted(set(values["settings"]) - names)
        if bad:
            raise ValueError(f"job config: unknown settings {bad}")
        wrong = sorted(set(values.get("report_assets") or ()) - set(ASSET_KEYS))
        if wrong:
            raise ValueError(f"job config: report_assets {wrong} not in {list(ASSET_KEYS)}")
        return cls(**{**OPTIONAL, **values, "settings": TrainSettings(**values["settings"]),
                      "report_assets": tuple(values.get("report_assets") or ())})

    @classmethod
    def load(cls, path: str | Path) -> JobConfig:
        return cls.from_dict(json.loads(Path(path).read_text("utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "settings": self.settings.to_dict(), "report_assets": list(self.report_assets)}

    def output_dir(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        settings = self.settings
        return (Path(self.data_dir) / "models" / self.dataset / settings.variant
                / settings.config_hash())


def world() -> tuple[int, int]:
    """(rank, world size): torchrun sets RANK and WORLD_SIZE; one process otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def train_model(job: JobConfig, data, log: Log):
    """The training call: one process, or every rank of a ``torchrun`` launch (DDP,
    ``model.distributed``; rank 0 writes the checkpoints, and run_job and main record and
    report on rank 0 only)."""
    from model.distributed import distributed_from_env
    from model.train import train

    dist = distributed_from_env(job.settings.device, job.timeout_s)
    try:
        if dist is not None and dist.is_main:
            log(f"{dist.world_size} ranks, backend {dist.backend}, device {dist.device}, "
                f"timeout {dist.timeout_s:g} s")
        return train(job.settings, data, job.output_dir(), resume=job.resume, log=log, dist=dist,
                     on_epoch_end=stall_hook(world()[0]))
    finally:
        if dist is not None:
            dist.close()


#: Test hook of the failure tests (tests/test_ddp.py): JSON ``{"rank": r, "epoch": e,
#: "pid_file": path}`` — after epoch e's checkpoint, rank r writes its pid to ``pid_file`` and
#: stops responding, so a test can kill it (a dead rank) or leave it (a hung rank: the
#: process-group timeout). Unset, nothing happens.
TEST_STALL_ENV = "KG4REC_TEST_STALL"


def stall_hook(rank: int) -> Callable[[dict[str, Any]], None] | None:
    """The :data:`TEST_STALL_ENV` hook as an ``on_epoch_end`` (None when unset)."""
    spec = os.environ.get(TEST_STALL_ENV)
    if not spec:
        return None
    stall = json.loads(spec)

    def on_epoch_end(record: dict[str, Any]) -> None:
        if rank == stall["rank"] and record["epoch"] == stall["epoch"]:
            tmp = Path(f"{stall['pid_file']}.tmp")
            tmp.write_text(str(os.getpid()))
            tmp.replace(stall["pid_file"])  # whole, for the test polling it
            while True:  # stop responding; the test kills us or the others time out
                time.sleep(1)

    return on_epoch_end


def say(line: str) -> None:
    print(line, flush=True)


def run_job(job: JobConfig, log: Log = say) -> dict[str, Any]:
    """Read the snapshot, train, record the run (rank 0), write and return the summary."""
    from model.data import build_data, read_snapshot_tables
    from model.report import metric_rows, new_run_id, run_row
    from warehouse import Lake

    lake = Lake(job.data_dir)
    snapshot = lake.snapshot(job.dataset, job.lake_version)
    data = build_data(read_snapshot_tables(snapshot))
    log(f"{job.dataset}/{job.settings.variant}: {data.summary()}")
    result = train_model(job, data, log)
    if world()[0] != 0:
        return {}
    run_id = new_run_id(job.dataset, job.settings.variant, result.config_hash)
    run = run_row(run_id, job.dataset, result, source=job.source) | {
        "lake_version": snapshot.version}
    rows = metric_rows(result)
    lake.pin(snapshot, run_id)  # the data of every run stays readable (time travel)
    record(job, run, rows, log)
    summary = summarize(job, run, rows, result, data.summary())
    from warehouse.files import atomic_write_json

    atomic_write_json(job.output_dir() / RESULT_FILE, summary, indent=1, default=_json_default)
    return summary


def record(job: JobConfig, run: dict, rows, log: Log) -> None:
    """Append the run and its metric rows to the warehouse and create any missing views."""
    from warehouse import Lake, Warehouse
    from warehouse.runs import RunStore

    where = job.warehouse or {}
    root = Path(where.get("data_dir") or job.data_dir)
    warehouse = Warehouse(where.get("path") or root / "warehouse.duckdb", Lake(root))
    RunStore(warehouse).record_run(run, rows)
    _, problem = warehouse.ensure_views()
    if problem:
        log(problem)


def summarize(job: JobConfig, run: dict, rows, result, data_summary: dict) -> dict[str, Any]:
    """Everything the parent needs for its metadata and figures (``result.json``)."""
    import pandas as pd

    records = [{k: (None if pd.isna(v) else v) for k, v in row.items()}
               for row in rows[METRIC_COLUMNS].to_dict("records")]
    return {"run_id": run["run_id"], "dataset": job.dataset, "variant": job.settings.variant,
            "lake_version": run["lake_version"], "code_version": run["code_version"],
            "checkpoint": result.checkpoint_path, "out_dir": str(job.output_dir()),
            "data": data_summary, "run": run, "metric_rows": records,
            "train": result.to_dict()}


def asset_metadata(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """JSON-able metadata per asset key: the numbers of the run (the parent adds figures)."""
    train = summary["train"]
    test = {k: float(v) for k, v in train["test"].items() if k != "users"}
    model = {"run_id": summary["run_id"], "variant": summary["variant"],
             "lake_version": summary["lake_version"],
             **{k: train[k] for k in ("best_epoch", "epochs_run", "stopped",
                                      "seconds_per_epoch", "eval_seconds", "total_seconds",
                                      "device", "config_hash", "n_parameters",
                                      "resumed_from_epoch")},
             "code_version": summary["code_version"], "checkpoint": summary["checkpoint"],
             **{f"test/{k}": v for k, v in test.items()}}
    return {"trained_model": model, "training_runs": {"run_id": summary["run_id"]},
            "metrics": {"run_id": summary["run_id"]}}


#: Metadata values that are file paths (typed so, in Dagster).
PATH_KEYS = ("checkpoint",)


def report(pipes, summary: dict[str, Any], keys: Sequence[str]) -> None:
    """One materialization per selected asset key, through Dagster Pipes."""
    metadata = asset_metadata(summary)
    for key in keys:
        values = {name: ({"raw_value": value, "type": "path"} if name in PATH_KEYS else value)
                  for name, value in metadata[key].items()}
        pipes.report_asset_materialization(asset_key=key, metadata=values)


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def pipes_launched() -> bool:
    from dagster_pipes import PipesEnvVarParamsLoader

    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


def orphan_guard(log: Log) -> Log:
    """``log`` that also stops the job once the process that launched it is gone (the Dagster
    run worker killed with -9 cannot forward the cancellation); called at least every epoch."""
    parent = os.getppid()

    def guarded(line: str) -> None:
        log(line)
        if os.getppid() != parent:
            raise SystemExit(f"the launching process {parent} is gone: stopping the job")

    return guarded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.job", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="run.json (see the module docstring)")
    parser.add_argument("--error-file", help="where to write the error message on failure")
    args = parser.parse_args(argv)
    try:
        if world()[0] == 0 and pipes_launched():
            return _main_with_pipes(args.config)
        summary = run_job(JobConfig.load(args.config))
        print(json.dumps({k: summary[k] for k in ("run_id", "checkpoint", "out_dir")}
                         if summary else {}))  # the last line of stdout
        return 0
    except Exception as error:  # the parent shows this message in the step's failure
        if args.error_file:
            Path(args.error_file).write_text(f"{type(error).__name__}: {error}", "utf-8")
        raise


def _main_with_pipes(config_path: str) -> int:
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:  # an exception is reported to Dagster, then re-raised
        job = JobConfig.load(config_path)
        summary = run_job(job, log=orphan_guard(pipes.log.info))
        report(pipes, summary, job.report_assets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
