"""End to end as a UI user: ``dagster dev`` on loopback, materialize the whole graph over GraphQL.

Starts ``dagster dev`` with a temporary ``DAGSTER_HOME`` and data directory, serves a tiny
fixture dataset in the upstream formats from a loopback server (the mirror setting redirects the
real URLs to it), sends the same ``launchRun`` mutation the UI's Materialize button sends for
every asset of one partition, waits for the run, checks the warehouse, and stops only the
process group it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from datasources.kg.sources import RECBOLE_EXAMPLE
from datasources.registry import GROUPLENS
from tests.support import fixtures
from warehouse import Lake, Warehouse

REPO = Path(__file__).resolve().parents[1]

ASSET_NODES = "{ assetNodes { assetKey { path } groupName } }"
LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""
FAILURE_EVENTS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{base}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _serve_fixture_dataset(server) -> None:
    payload = fixtures.make_zip(fixtures.ml100k_files(n_users=25, n_items=12))
    server.add("/gl/ml-100k.zip", payload)
    server.add("/gl/ml-100k.zip.md5", fixtures.grouplens_md5("ml-100k.zip", payload))
    server.add("/rb/ml-100k.link", b"item_id:token\tentity_id:token\n1\tm.01\n2\tm.02\n3\tm.03\n")
    server.add("/rb/ml-100k.kg", (
        b"head_id:token\trelation_id:token\ttail_id:token\n"
        b"m.01\tfilm.film.directed_by\tm.d1\nm.02\tfilm.film.directed_by\tm.d1\nm.03\tfilm.film.genre\tm.g1\n"
    ))


@pytest.mark.slow
def test_materialize_whole_graph_from_the_ui_over_graphql(server, tmp_path):
    _serve_fixture_dataset(server)
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KG4REC_DATA_DIR": str(data),
        "KG4REC_MIRROR": f"{GROUPLENS}/={server.url('/gl/')};{RECBOLE_EXAMPLE}/={server.url('/rb/')}",
    }
    log = open(tmp_path / "dagster_dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-m", "pipeline", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not come up in 120 s"
            time.sleep(1)

        nodes = _graphql(base, ASSET_NODES)["assetNodes"]
        # every asset of the dataset partitions: the item-chunk assets (dataset x item_chunk) run
        # as their own backfill (tests/test_chunks.py)
        selection = [{"path": node["assetKey"]["path"]} for node in nodes if node["groupName"] != "chunks"]
        assert {"item_media_chunk", "clip_features_chunk"} <= {n["assetKey"]["path"][0] for n in nodes}
        assert {"source_files", "split", "kg_triples", "neighbor_sequences"} <= {s["path"][0] for s in selection}
        params = {
            "selector": {
                "repositoryLocationName": "pipeline",
                "repositoryName": "__repository__",
                "pipelineName": "__ASSET_JOB",
                "assetSelection": selection,
            },
            "mode": "default",
            "runConfigData": fixtures.offline_run_config(),
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "ml-100k"}]},
        }
        launched = _graphql(base, LAUNCH_RUN, {"executionParams": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", json.dumps(launched)[:3000]
        run_id = launched["run"]["runId"]

        deadline = time.monotonic() + 600
        status = "QUEUED"
        while status not in {"SUCCESS", "FAILURE", "CANCELED"}:
            assert time.monotonic() < deadline, f"run still {status} after 600 s"
            time.sleep(2)
            status = _graphql(base, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status != "SUCCESS":
            events = _graphql(base, FAILURE_EVENTS, {"runId": run_id})["logsForRun"].get("events", [])
            pytest.fail(f"run {status}: " + "\n".join(e.get("message", "") for e in events if "fail" in e.get("message", "").lower())[-4000:])

        lake = Lake(data)
        warehouse = Warehouse(data / "warehouse.duckdb", lake)
        rows = warehouse.query("SELECT split, count(*) AS n FROM split WHERE dataset = 'ml-100k' GROUP BY ALL").to_pylist()
        assert {r["split"] for r in rows} == {"train", "valid", "test"}
        assert warehouse.query("SELECT count(*) AS n FROM kg_triples WHERE source = 'freebase'").to_pylist()[0]["n"] == 3
        n_items = warehouse.query("SELECT count(*) AS n FROM items").to_pylist()[0]["n"]
        assert warehouse.query("SELECT count(DISTINCT item_id) AS n FROM neighbor_sequences").to_pylist()[0]["n"] == n_items
    finally:
        # Stop only what this test started: SIGINT to dagster dev (it shuts its children down),
        # then its own process group if anything is left.
        _stop_process_group(proc)
        log.close()


def _stop_process_group(proc: subprocess.Popen) -> None:
    """SIGINT (dagster dev's own clean shutdown), then SIGTERM, then SIGKILL to its group only.

    Under load dagster dev can take a while to stop its code server and daemon; the group holds
    only the processes this test started (``start_new_session=True``).
    """
    for sig, grace in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            if sig == signal.SIGINT:
                proc.send_signal(sig)
            else:
                os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
    # Children that outlived their parent are still in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
