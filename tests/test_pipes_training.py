"""Training out of the Dagster process: ``python -m model.job`` through Dagster Pipes (the
default of ``trained_model``), alone from a shell, and the in-process path one config away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.resources import LakeResource, WarehouseResource
from assets.training import REPO_ROOT, trained_model
from model.synthetic_data import synthetic_tables
from warehouse import Lake, Warehouse
from warehouse.runs import RunStore

DATASET = "ml-100k"
TINY = {"epochs": 2, "batch_size": 256, "embed_dim": 16, "relation_dim": 8,
        "layer_sizes": [16, 8], "device": "cpu"}
#: trained_model's metadata, whichever way it trained: the job's values and the parent's figures
MODEL_KEYS = {"run_id", "variant", "lake_version", "best_epoch", "epochs_run", "stopped",
              "seconds_per_epoch", "eval_seconds", "total_seconds", "device", "config_hash",
              "code_version", "n_parameters", "resumed_from_epoch", "checkpoint", "test_metrics",
              "curves", "data", "notes"}


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    """The job's process inherits the environment: one torch thread on the shared CPU."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny_lake(root: Path, skip: tuple[str, ...] = ()) -> Lake:
    lake = Lake(root)
    for name, table in synthetic_tables(n_users=20, n_items=25, n_pairs=200, n_attributes=5,
                                        n_triples=30, sequence_length=5, seed=4).items():
        if name not in skip:
            lake.write(DATASET, name, table)
    return lake


def materialize(root: Path, instance=None, **config):
    resources = {"lake": LakeResource(data_dir=str(root)),
                 "warehouse": WarehouseResource(data_dir=str(root)),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    return dg.materialize([trained_model], partition_key=DATASET, resources=resources,
                          instance=instance or dg.DagsterInstance.ephemeral(),
                          raise_on_error=False,
                          run_config={"ops": {"trained_model": {"config": {**TINY, **config}}}})


def messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def metadata_by_asset(result) -> dict[str, dict]:
    return {m.asset_key.to_user_string(): m.metadata
            for m in result.asset_materializations_for_node("trained_model")}


def test_the_job_trains_through_pipes_and_reports_back(tmp_path):
    lake = tiny_lake(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(tmp_path, instance, variant="lightgcn")
    assert result.success
    meta = metadata_by_asset(result)
    assert set(meta) == {"trained_model", "training_runs", "metrics"}
    logs = messages(instance, result.run_id)
    assert "[pipes] external process successfully opened dagster pipes." in logs
    assert any(m.startswith("lightgcn epoch 2: loss") for m in logs)  # the child's own line

    model = meta["trained_model"]
    assert set(model) >= MODEL_KEYS
    run = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake)).latest_run(DATASET)
    assert model["run_id"].value == run["run_id"] == meta["training_runs"]["run_id"].value
    assert model["lake_version"].value == run["lake_version"] == lake.current(DATASET).version
    assert isinstance(model["checkpoint"], dg.PathMetadataValue)
    assert Path(model["checkpoint"].value).is_file()
    assert model["checkpoint"].value == run["checkpoint_path"]
    assert 0.0 <= model["test/recall@20"].value <= 1.0 and model["epochs_run"].value == 2
    assert "data:image/png;base64" in model["curves"].value  # built in the parent
    assert "| items:tail |" in meta["metrics"]["slices"].value
    assert "data:image/png;base64" in meta["metrics"]["slices_chart"].value
    assert meta["training_runs"]["dagster/row_count"].value == 1
    assert meta["metrics"]["dagster/row_count"].value > 0


def test_a_failing_job_fails_the_step_with_the_jobs_message(tmp_path):
    tiny_lake(tmp_path, skip=("split",))  # the job cannot read the lake
    result = materialize(tmp_path, variant="lightgcn")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error.message
    assert "training job failed: FileNotFoundError" in error
    assert "materialize the 'split' asset" in error


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    return subprocess.run([sys.executable, "-m", "model.job", "--config", str(config), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_job_runs_without_dagster_and_records_the_run(tmp_path):
    lake = tiny_lake(tmp_path)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"dataset": DATASET, "data_dir": str(tmp_path),
                                  "settings": {"variant": "bprmf", **TINY}}))
    done = run_cli(config)
    assert done.returncode == 0, done.stderr
    assert "bprmf epoch 2: loss" in done.stdout
    printed = json.loads(done.stdout.splitlines()[-1])
    run = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake)).latest_run(DATASET)
    assert run["run_id"] == printed["run_id"] and run["source"] == "job"
    assert run["lake_version"] == lake.current(DATASET).version
    summary = json.loads((Path(printed["out_dir"]) / "result.json").read_text())
    assert summary["run_id"] == run["run_id"] and len(summary["train"]["history"]) == 2

    config.write_text(json.dumps({"dataset": DATASET, "data_dir": str(tmp_path),
                                  "settings": {"variant": "bprmf", "epoks": 2}}))
    refused = run_cli(config, "--error-file", str(tmp_path / "error.txt"))
    assert refused.returncode != 0 and "unknown settings ['epoks']" in refused.stderr
    assert "unknown settings ['epoks']" in (tmp_path / "error.txt").read_text()


def test_in_process_is_one_config_away(tmp_path):
    tiny_lake(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(tmp_path, instance, variant="bprmf", launch="in_process")
    assert result.success
    meta = metadata_by_asset(result)
    assert set(meta) == {"trained_model", "training_runs", "metrics"}
    assert set(meta["trained_model"]) >= MODEL_KEYS
    assert isinstance(meta["trained_model"]["checkpoint"], dg.PathMetadataValue)
    logs = messages(instance, result.run_id)
    assert not any(m.startswith("[pipes]") for m in logs)
    assert any(m.startswith("bprmf epoch 2: loss") for m in logs)


CANCELLED_RUN = textwrap.dedent("""
    import sys
    import dagster as dg
    from assets.resources import LakeResource, WarehouseResource
    from assets.training import trained_model
    root = sys.argv[1]
    config = {"variant": "bprmf", "epochs": 100000, "patience": 100000, "eval_every": 100000,
              "batch_size": 256, "embed_dim": 8, "device": "cpu"}
    dg.materialize([trained_model], partition_key="ml-100k", raise_on_error=False,
                   resources={"lake": LakeResource(data_dir=root),
                              "warehouse": WarehouseResource(data_dir=root),
                              "pipes_subprocess_client": dg.PipesSubprocessClient()},
                   run_config={"ops": {"trained_model": {"config": config}}})
""")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_cancelling_the_run_stops_the_job(tmp_path):
    """An interrupt of the Dagster process (what cancelling a run delivers) reaches the job:
    PipesSubprocessClient forwards SIGINT to it and waits for it to exit."""
    tiny_lake(tmp_path)
    log = (tmp_path / "dagster.log").open("w")
    parent = subprocess.Popen([sys.executable, "-c", CANCELLED_RUN, str(tmp_path)],
                              cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    job = None
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "models").rglob("last.safetensors")):  # in its epochs
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.2)
        [job] = children(parent.pid)
        parent.send_signal(signal.SIGINT)  # to the Dagster process only, not its group
        parent.wait(timeout=40)
        # the client sent SIGINT on and waited for the job before the step gave up
        assert "execution interrupted, sending SIGINT to subprocess" in (
            tmp_path / "dagster.log").read_text()
        assert not Path(f"/proc/{job}").exists()
    finally:
        for pid in (parent.pid, job):
            if pid is not None and Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        log.close()
