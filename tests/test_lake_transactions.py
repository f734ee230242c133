"""Write–audit–publish in the lake: each failure a user would really hit, injected for real.

Covers the issue's list: empty input keeps the last good tables (1), a ``kill -9`` at any point
of a publish leaves the old or the new snapshot, never a mix, and the next writer cleans up (2),
a reader holding the warehouse does not fail a writer (3), a failed ingest keeps the provenance
of the tables that are published (4), two runs of one partition never interleave, and time
travel returns exactly what a reader saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.resources import LakeResource
from pipeline.definitions import defs
from tests.support.duckdb_reader import held_read_only
from warehouse import Lake, Warehouse
from warehouse.files import exclusive_lock
from warehouse.lake import AuditError

REPO = Path(__file__).resolve().parents[1]
DATASET = "ml-100k"


def _users(n: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": range(n), "user_key": [f"u{i}" for i in range(n)]})


def _items(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": range(n), "item_key": [f"i{i}" for i in range(n)],
                         "title": [f"Item {i}" for i in range(n)]})


def _interactions(n_users: int, n_items: int) -> pd.DataFrame:
    pairs = [(u, (u * 7 + k) % n_items) for u in range(n_users) for k in range(3)]
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"]).drop_duplicates()
    return frame.assign(rating=4.0, ts=1)


def _publish_dataset(lake: Lake, n_users: int, n_items: int = 10) -> None:
    with lake.transaction(DATASET, note="fixture") as tx:
        tx.write("users", _users(n_users))
        tx.write("items", _items(n_items))
        tx.write("interactions", _interactions(n_users, n_items))


# --------------------------------------------------------------------------- the audit


def test_an_empty_table_is_refused_and_the_previous_one_stays(tmp_path):
    lake = Lake(tmp_path)
    _publish_dataset(lake, n_users=20)
    before = lake.snapshot(DATASET)
    with (pytest.raises(AuditError, match=r"(?s)snapshot 1 stays published.*interactions: 0 rows"),
          lake.transaction(DATASET) as tx):
        tx.write("interactions", _interactions(20, 10).iloc[:0])
    assert lake.snapshot(DATASET).version == before.version
    assert len(lake.read_pandas(DATASET, "interactions")) == len(_interactions(20, 10))


def test_a_large_row_count_drop_is_refused_with_the_numbers(tmp_path):
    lake = Lake(tmp_path, max_row_drop=0.5)
    _publish_dataset(lake, n_users=40)
    with (pytest.raises(AuditError, match=r"users: 10 rows against 40 in snapshot 1 \(-75.0%"),
          lake.transaction(DATASET) as tx):
        tx.write("users", _users(10))
        tx.write("interactions", _interactions(10, 10))
    # the same change is accepted when the lake is told that such a drop is real
    with Lake(tmp_path, max_row_drop=0.9).transaction(DATASET) as tx:
        tx.write("users", _users(10))
        tx.write("interactions", _interactions(10, 10))
    assert len(lake.read_pandas(DATASET, "users")) == 10


def test_ids_must_be_dense_and_foreign_keys_must_resolve(tmp_path):
    lake = Lake(tmp_path)
    _publish_dataset(lake, n_users=5)
    gappy = _users(5).assign(user_id=[0, 1, 2, 3, 7])
    with pytest.raises(AuditError, match=r"users.user_id is not dense: 5 rows, 5 distinct values, "
                                         r"0 null, range 0..7 \(expected 0..4\)"):
        lake.write(DATASET, "users", gappy)
    stray = pd.concat([_interactions(5, 10), pd.DataFrame({"user_id": [9], "item_id": [0],
                                                            "rating": [1.0], "ts": [1]})])
    with pytest.raises(AuditError, match=r"interactions: 1 rows whose \(user_id\) is not in users"):
        lake.write(DATASET, "interactions", stray)
    with pytest.raises(AuditError, match=r"split: 1 rows whose \(user_id, item_id\) is not in interactions"):
        lake.write(DATASET, "split", pd.DataFrame({"user_id": [0, 4], "item_id": [0, 5],
                                                    "split": ["train", "test"]}))


def test_a_carried_table_the_new_tables_contradict_is_left_out_not_mixed(tmp_path):
    lake = Lake(tmp_path)
    _publish_dataset(lake, n_users=6)
    interactions = _interactions(6, 10)
    lake.write(DATASET, "split", interactions[["user_id", "item_id"]].assign(split="train"))
    lake.write(DATASET, "item_media", pd.DataFrame({"item_id": range(10), "description": "x"}))
    # a re-ingest in which user 5 is gone: the old split names a pair that no longer exists
    with lake.transaction(DATASET) as tx:
        tx.write("users", _users(5))
        tx.write("interactions", _interactions(5, 10))
    current = lake.snapshot(DATASET)
    assert "split" not in current.tables() and "split" in current.manifest["dropped"]
    assert "item_media" in current.tables()  # still consistent with the items: carried over
    assert "split" in lake.snapshot(DATASET, current.version - 1).tables()  # and nothing is lost


def test_time_travel_returns_exactly_the_tables_of_a_snapshot_and_pins_survive_pruning(tmp_path):
    lake = Lake(tmp_path, keep_snapshots=1)
    _publish_dataset(lake, n_users=8)
    first = lake.snapshot(DATASET)
    lake.pin(first, "run-1")
    seen = first.read_pandas("interactions")
    for n in (9, 10, 11):
        _publish_dataset(lake, n_users=n)
    assert lake.snapshot(DATASET).version == 4
    kept = [s["version"] for s in lake.snapshots(DATASET)]
    assert kept == [1, 3, 4]  # 2 was pruned; 1 is pinned by a run
    assert lake.snapshot(DATASET, 1).read_pandas("interactions").equals(seen)
    with pytest.raises(FileNotFoundError, match=r"snapshot 2 does not exist .*kept: \[1, 3, 4\]"):
        lake.snapshot(DATASET, 2)


def test_published_files_are_readable_by_others_and_views_follow_the_link(tmp_path):
    lake = Lake(tmp_path)
    _publish_dataset(lake, n_users=3)
    path = lake.snapshot(DATASET).path("users")
    assert path.stat().st_mode & 0o044 == 0o044  # group/other may read (umask 022 → 0644)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    warehouse.refresh_views()
    _publish_dataset(lake, n_users=4)
    assert warehouse.query("SELECT count(*) AS n FROM users").to_pylist() == [{"n": 4}]


# --------------------------------------------------------------------------- kill -9

_KILLER = textwrap.dedent("""
    import os, signal, sys
    import pandas as pd
    import pyarrow.parquet as pq
    from warehouse import Lake

    point, data_dir = sys.argv[1], sys.argv[2]
    real = {"write_table": pq.write_table, "rename": os.rename, "replace": os.replace}
    writes = []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def write_table(table, where, **kw):
        writes.append(where)
        if point == "second_table" and len(writes) == 2:
            real["write_table"](table.slice(0, 1), where, **kw)  # half a file, then death
            die()
        return real["write_table"](table, where, **kw)

    def rename(a, b, *args, **kw):
        if point == "before_rename" and ".staging-" in str(a):
            die()
        return real["rename"](a, b, *args, **kw)

    def replace(a, b, *args, **kw):
        if point == "before_link" and str(b).endswith("dataset=ml-100k"):
            die()
        result = real["replace"](a, b, *args, **kw)
        if point == "after_link" and str(b).endswith("dataset=ml-100k"):
            die()
        return result

    pq.write_table, os.rename, os.replace = write_table, rename, replace
    n = 7
    users = pd.DataFrame({"user_id": range(n), "user_key": [f"u{i}" for i in range(n)]})
    inter = pd.DataFrame({"user_id": list(range(n)), "item_id": [0] * n, "rating": 4.0, "ts": 1})
    with Lake(data_dir).transaction("ml-100k") as tx:
        tx.write("users", users)
        tx.write("interactions", inter)
""")


@pytest.mark.parametrize("point,published", [("second_table", False), ("before_rename", False),
                                              ("before_link", False), ("after_link", True)])
def test_kill_9_mid_publish_leaves_old_or_new_never_a_mix(tmp_path, point, published):
    lake = Lake(tmp_path)
    with lake.transaction(DATASET) as tx:  # the old version: 5 users, one interaction each
        tx.write("users", _users(5))
        tx.write("items", _items(1))
        tx.write("interactions", pd.DataFrame({"user_id": range(5), "item_id": 0, "rating": 4.0, "ts": 1}))
    proc = subprocess.run([sys.executable, "-c", _KILLER, point, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    users = lake.read_pandas(DATASET, "users")
    interactions = lake.read_pandas(DATASET, "interactions")
    assert len(users) == len(interactions) == (7 if published else 5)  # one version, both tables
    # the next writer removes what the killed one left and publishes normally
    with lake.transaction(DATASET) as tx:
        tx.write("item_media", pd.DataFrame({"item_id": [0], "description": ["d"]}))
    assert not list(lake.snapshots_dir(DATASET).glob(".staging-*"))
    assert not list(lake.root.glob(".dataset=*.link"))
    assert len(lake.read_pandas(DATASET, "users")) == len(users)


# --------------------------------------------------------------------------- through Dagster


def _run(job: str, run_config: dict, raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=DATASET, run_config=run_config, instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error)


def _tsv_config(path: Path, lake_overrides: dict | None = None) -> dict:
    config = {"ops": {"source_files": {"config": {"datasets": {DATASET: {"variant": "tsv", "tables": {
        "interactions": {"locations": [str(path)], "options": {"user_col": "uid", "item_col": "iid"}}}}}}}}}
    if lake_overrides:
        config["resources"] = {"lake": {"config": lake_overrides}}
    return config


def _write_tsv(path: Path, n_users: int) -> Path:
    path.write_text("uid\tiid\n" + "".join(f"u{u}\ti{(u * 3 + k) % 17}\n"
                                          for u in range(n_users) for k in range(10)))
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    directory = tmp_path / "data"
    monkeypatch.setenv("KG4REC_DATA_DIR", str(directory))
    return directory


def test_header_only_input_fails_and_keeps_tables_and_provenance(tmp_path, data_dir):
    good = _write_tsv(tmp_path / "good.tsv", n_users=30)
    assert _run("ingest", _tsv_config(good)).success
    lake = Lake(data_dir)
    before = {t: lake.read_pandas(DATASET, t) for t in ("users", "interactions", "split", "source_files")}

    empty = tmp_path / "empty.tsv"
    empty.write_text("uid\tiid\n")
    result = _run("ingest", _tsv_config(empty))
    assert not result.success
    error = result.failure_data_for_node("source_files").error
    message = (error.cause or error).message
    assert "failed their audit" in message and "users: 0 rows" in message and "interactions: 0 rows" in message
    for table, frame in before.items():
        assert lake.read_pandas(DATASET, table).equals(frame), table
    assert lake.read_pandas(DATASET, "source_files")["path"].tolist() == [str(good)]


def test_an_open_reader_of_the_warehouse_does_not_fail_a_materialization(tmp_path, data_dir):
    good = _write_tsv(tmp_path / "good.tsv", n_users=30)
    warehouse = data_dir / "warehouse.duckdb"
    data_dir.mkdir(parents=True)
    Warehouse(warehouse, Lake(data_dir)).execute("SELECT 1")  # the database file exists
    with held_read_only(warehouse):
        started = time.monotonic()
        result = _run("ingest", _tsv_config(good))
        assert result.success
        assert time.monotonic() - started < 60
    assert len(Lake(data_dir).read_pandas(DATASET, "split")) == 300
    # the writer could not create the views (the reader held the file) and went on without them;
    # the next writer (or the CLI) creates them
    store = Warehouse(warehouse, Lake(data_dir))
    assert "split" in store.missing_views()
    assert "split" in store.ensure_views()[0]
    assert store.query("SELECT count(*) AS n FROM split").to_pylist() == [{"n": 300}]


def test_a_second_run_of_the_same_partition_waits_for_the_first(tmp_path, data_dir):
    good = _write_tsv(tmp_path / "good.tsv", n_users=30)
    assert _run("ingest", _tsv_config(good)).success
    lock = Lake(data_dir).snapshots_dir(DATASET) / ".run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from warehouse.files import exclusive_lock\n"
         "with exclusive_lock(Path(sys.argv[1]), holder='run other-run'):\n"
         "    print('held', flush=True); time.sleep(float(sys.argv[2]))", str(lock), "120"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _run("ingest", _tsv_config(good, {"lock_timeout_s": 1.0}))
        assert not result.success
        failure = str(result.all_events[-1].message) + "".join(
            str(e.event_specific_data) for e in result.all_events if e.is_failure)
        assert "still held by run other-run" in failure
    finally:
        holder.kill()
        holder.wait()
    # held briefly: the second run waits, then runs
    release = threading.Event()

    def hold() -> None:
        with exclusive_lock(lock, holder="run brief"):
            release.wait(1.5)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert _run("ingest", _tsv_config(good)).success
    assert time.monotonic() - started >= 1.0
    thread.join()
    assert os.path.exists(lock)


# --------------------------------------------------------------------------- run results


def _run_row(run_id: str) -> dict:
    return {"run_id": run_id, "dataset": DATASET, "variant": "bprmf", "source": "dagster",
            "seconds": 1.0, "lake_version": 3}


def _metric_rows() -> pd.DataFrame:
    return pd.DataFrame({"split": ["test"], "metric": ["recall"], "k": [20], "value": [0.25],
                         "epoch": [None], "slice": ["all"]})


def test_a_run_is_recorded_while_a_user_holds_the_warehouse_open_for_writing(tmp_path):
    from warehouse.runs import RunStore

    lake = Lake(tmp_path)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    warehouse.execute("SELECT 1")
    user = subprocess.Popen(  # `duckdb data/warehouse.duckdb` opens read-write by default
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('open', flush=True); time.sleep(120)", str(warehouse.path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout.readline().strip() == "open"
        store = RunStore(warehouse)
        started = time.monotonic()
        store.record_run(_run_row("r1"), _metric_rows())
        assert time.monotonic() - started < 30
        assert store.latest_run(DATASET)["lake_version"] == 3
        assert store.final_metrics("r1")["value"].tolist() == [0.25]
    finally:
        user.kill()
        user.wait()
    assert "training_runs" in warehouse.ensure_views()[0]
    assert warehouse.query("SELECT run_id FROM latest_runs").to_pylist() == [{"run_id": "r1"}]


def test_run_tables_of_an_older_warehouse_become_files_with_their_rows(tmp_path):
    import duckdb

    from warehouse.runs import RunStore

    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE training_runs (run_id VARCHAR, dataset VARCHAR, variant VARCHAR, "
                "source VARCHAR, finished_at TIMESTAMP DEFAULT current_timestamp)")
    con.execute(f"INSERT INTO training_runs (run_id, dataset, variant, source) VALUES "
                f"('old', '{DATASET}', 'lightgcn', 'dagster')")
    con.execute("CREATE TABLE tuning_trials (study VARCHAR, dataset VARCHAR, variant VARCHAR, "
                "trial INTEGER, config_hash VARCHAR, chosen BOOLEAN)")
    con.execute(f"INSERT INTO tuning_trials VALUES ('s', '{DATASET}', 'lightgcn', 1, 'a', false), "
                f"('s', '{DATASET}', 'lightgcn', 2, 'b', true)")
    con.close()
    warehouse = Warehouse(path, Lake(tmp_path))
    warehouse.refresh_views()
    store = RunStore(warehouse)
    assert store.latest_run(DATASET)["run_id"] == "old"
    rows = warehouse.query("SELECT config_hash, chosen FROM tuning_trials ORDER BY trial").to_pylist()
    assert rows == [{"config_hash": "a", "chosen": False}, {"config_hash": "b", "chosen": True}]
    store.record_run(_run_row("new"), _metric_rows())
    assert sorted(warehouse.query("SELECT run_id FROM training_runs").column("run_id").to_pylist()) == ["new", "old"]


# --------------------------------------------------------------------------- the smaller items


def test_a_repeated_item_link_is_counted():
    from datasources.kg.linking import resolve_links

    links = pd.DataFrame({"item_key": ["1", "1", "2"], "entity_key": ["m.01", "m.01", "m.02"]})
    again = pd.DataFrame({"item_key": ["2"], "entity_key": ["m.02"]})
    resolved = resolve_links(pd.Index(["1", "2"]), [("kb4rec", links), ("second", again)])
    assert len(resolved.table) == 2
    assert resolved.stats["kb4rec"]["n_links_duplicate"] == 1
    assert resolved.stats["second"]["n_links_duplicate"] == 1


@pytest.mark.parametrize("config_class", ["assets.ingest:IngestConfig", "assets.kg:KGConfig",
                                          "assets.media:MediaConfig"])
def test_a_misspelled_dataset_key_is_refused_with_a_suggestion(config_class):
    import importlib

    module, name = config_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ValueError, match=r"'ml100k' is not a dataset partition \(did you mean 'ml-100k'\?\)"):
        cls(datasets={"ml100k": {}})


def test_a_utf8_bom_in_a_tsv_header_is_tolerated(tmp_path):
    from datasources.formats import parse_table

    path = tmp_path / "excel.tsv"
    path.write_bytes("\ufeffuid\tiid\n1\t2\n3\t4\n".encode())
    frame = parse_table("tsv", "interactions", path, {"user_col": "uid", "item_col": "iid"})
    assert frame["user_key"].tolist() == ["1", "3"]


def test_a_truncated_gzip_names_its_file(tmp_path):
    import gzip

    from datasources.errors import MalformedInputError
    from datasources.formats import parse_table

    data = gzip.compress(("uid\tiid\n" + "".join(f"{u}\t{u % 7}\n" for u in range(20000))).encode())
    path = tmp_path / "pairs.tsv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedInputError, match=rf"{path}.*truncated or corrupt gzip stream"):
        parse_table("tsv", "interactions", path, {"user_col": "uid", "item_col": "iid"})


def test_non_numeric_ids_among_numeric_ones_are_said(tmp_path, data_dir):
    path = tmp_path / "typo.tsv"
    path.write_text("uid\tiid\n" + "".join(f"{u}\t{(u * 3 + k) % 17}\n" for u in range(30)
                                          for k in range(10)) + "l7\t3\n")  # 'l7': a typo of 17
    result = _run("ingest", _tsv_config(path))
    assert result.success
    [meta] = [m.metadata for m in result.asset_materializations_for_node("source_files")
              if m.asset_key.to_user_string() == "interactions"]
    assert "1 of 31 user keys are not numbers ('l7')" in meta["ingest_warnings"].value


def test_a_run_killed_mid_materialization_is_marked_failed_by_the_next_run(tmp_path, data_dir,
                                                                           monkeypatch):
    import json

    import yaml

    good = _write_tsv(tmp_path / "good.tsv", n_users=30)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_tsv_config(good)))
    lake = Lake(data_dir)
    tx_lock = lake.snapshots_dir(DATASET) / ".lock"
    env = {**os.environ, "DAGSTER_HOME": str(home), "KG4REC_DATA_DIR": str(data_dir)}
    with exclusive_lock(tx_lock, holder="the test"):  # the run will wait here, holding its run lock
        victim = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "pipeline",
             "-j", "ingest", "--tags", json.dumps({"dagster/partition": DATASET}), "-c", str(config)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        run_lock = lake.snapshots_dir(DATASET) / ".run.lock"
        deadline = time.monotonic() + 120
        while not (run_lock.is_file() and run_lock.read_text().startswith("run ")):
            assert time.monotonic() < deadline and victim.poll() is None, "the run never started"
            time.sleep(0.2)
        victim_run = run_lock.read_text().split()[1]  # "run <id> (pid <run worker>)"
        time.sleep(0.5)
        # the CLI and the run worker it started, at once (the OOM killer, a closed terminal):
        # nobody is left to record the end of the run
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    assert instance.get_run_by_id(victim_run).status == dg.DagsterRunStatus.STARTED  # left for dead
    result = defs.resolve_job_def("ingest").execute_in_process(
        partition_key=DATASET, run_config=_tsv_config(good), instance=instance)
    assert result.success
    dead = instance.get_run_by_id(victim_run)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert not list(lake.snapshots_dir(DATASET).glob(".staging-*"))


def test_an_assets_blocking_check_runs_on_the_staged_tables_before_they_are_published(tmp_path):
    from assets.checks import users_problems
    from assets.partitions import dataset_partitions
    from datasources.validate import check_split

    lake = Lake(tmp_path)
    _publish_dataset(lake, n_users=4)
    seen = []

    @dg.asset(partitions_def=dataset_partitions)
    def users(context, lake: LakeResource) -> None:
        twice = _users(4).assign(user_key=["a", "a", "b", "c"])  # a duplicated source key
        lake.publish(context, {"users": twice},
                     checks={"users_keys_unique": lambda tx: seen.append(tx) or users_problems(tx)})

    result = dg.materialize([users], partition_key=DATASET, raise_on_error=False,
                            resources={"lake": LakeResource(data_dir=str(tmp_path))})
    assert not result.success
    assert "users_keys_unique" in str(result.failure_data_for_node("users").error.cause)
    assert seen and seen[0].path("users").parent.name.startswith(".staging-")  # the staged copy
    assert lake.read_pandas(DATASET, "users")["user_key"].tolist() == ["u0", "u1", "u2", "u3"]
    # and an empty split is never "within tolerance"
    assert check_split(pd.DataFrame({"user_id": [], "item_id": [], "split": []}), [0.8, 0.1, 0.1])[0] == [
        "the split is empty: no positive interaction to split"]


def test_a_run_config_for_other_partitions_only_is_an_error_not_a_fallback(tmp_path, data_dir):
    good = _write_tsv(tmp_path / "good.tsv", n_users=30)
    config = _tsv_config(good)
    config["ops"]["source_files"]["config"]["datasets"] = {
        "ml-1m": config["ops"]["source_files"]["config"]["datasets"][DATASET]}
    result = _run("ingest", config)
    assert not result.success
    error = result.failure_data_for_node("source_files").error
    assert "this run is for partition 'ml-100k', but the run config's datasets section only has ml-1m" in (
        (error.cause or error).message)


def test_a_preset_run_is_its_own_latest_run_and_the_paper_tables_keep_the_variants_own(tmp_path):
    """A `preset: paper` run of `full` is another model: it must not replace full's own row in
    latest_runs, nor in the paper tables, whichever finished last."""
    import json

    from warehouse.runs import RunStore

    store = RunStore(Warehouse(tmp_path / "warehouse.duckdb", Lake(tmp_path)))
    runs = [("ours", None, 0.30, "2026-01-01"), ("paper", "paper", 0.20, "2026-01-02"),
            ("older-ours", None, 0.10, "2025-12-01"), ("garbled", None, 0.05, "2024-01-01")]
    for run_id, preset, recall, finished in runs:
        config = json.dumps({"variant": "full", "graph": "ckg" if preset else "interactions",
                             "preset": preset})
        store.record_run(
            {**_run_row(run_id), "variant": "full", "source": "tuned",
             # a run row with a broken config (hand-written) must not break every view
             "config_json": "{not json" if run_id == "garbled" else config,
             "finished_at": pd.Timestamp(finished)},
            _metric_rows().assign(value=recall))
    store.record_run({**_run_row("lightgcn"), "variant": "lightgcn"}, _metric_rows())
    latest = store.latest_runs()
    rows = latest.fillna({"preset": "-"})[["variant", "preset", "run_id"]].values.tolist()
    assert rows == [["full", "-", "ours"], ["full", "paper", "paper"], ["lightgcn", "-", "lightgcn"]]
    tables = store.rebuild_paper_tables()
    full_rows = tables[tables["variant"] == "full"]
    assert set(full_rows["run_id"]) == {"ours"} and set(full_rows["recall"]) == {0.30}
    # full ran with our propagation, so "w/o t&v" is LightGCN (read from full's own run, not
    # from the paper preset's, whose graph is the collaborative KG: it would be KGAT)
    table3 = tables[tables["paper_table"] == "Table 3"].set_index("row_label")
    assert table3.loc["w/o t&v", "variant"] == "lightgcn"
