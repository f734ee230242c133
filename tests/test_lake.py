"""The Parquet lake (atomic writes) and the DuckDB warehouse views and CLI."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.duckdb_reader import held_read_only
from warehouse import Lake, Warehouse
from warehouse.cli import main as cli_main


def test_write_is_atomic_and_a_crash_keeps_the_previous_file(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    good = pd.DataFrame({"user_id": [0, 1], "user_key": ["a", "b"]})
    path = lake.write("ml-1m", "users", good)
    assert path == tmp_path / "lake" / "dataset=ml-1m" / "users.parquet"

    real_write = pq.write_table

    def crash_midway(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)  # some bytes reach the temp file ...
        raise OSError("disk full")  # ... then the process dies

    monkeypatch.setattr(pq, "write_table", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        lake.write("ml-1m", "users", pd.DataFrame({"user_id": [9], "user_key": ["z"]}))
    monkeypatch.undo()
    assert lake.read_pandas("ml-1m", "users").equals(good)
    assert sorted(p.name for p in path.parent.iterdir()) == ["_manifest.json", "users.parquet"]
    assert not list(lake.snapshots_dir("ml-1m").glob(".staging-*"))  # nothing left behind


def test_missing_table_says_what_to_materialize(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the 'items' asset for partition 'ml-100k'"):
        Lake(tmp_path).read("ml-100k", "items")


def test_views_have_a_dataset_column_and_follow_new_files(tmp_path):
    lake = Lake(tmp_path)
    lake.write("ml-1m", "users", pd.DataFrame({"user_id": [0, 1], "user_key": ["1", "2"]}))
    lake.write("ml-100k", "users", pd.DataFrame({"user_id": [0], "user_key": ["7"]}))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    assert warehouse.refresh_views() == ["users"]
    rows = warehouse.query("SELECT dataset, count(*) AS n FROM users GROUP BY ALL ORDER BY dataset").to_pylist()
    assert rows == [{"dataset": "ml-100k", "n": 1}, {"dataset": "ml-1m", "n": 2}]
    lake.write("ml-100k", "users", pd.DataFrame({"user_id": [0, 1, 2], "user_key": ["7", "8", "9"]}))
    assert warehouse.query("SELECT count(*) AS n FROM users WHERE dataset = 'ml-100k'").to_pylist() == [{"n": 3}]


def _write_dataset(lake: Lake, dataset: str, interactions: pd.DataFrame) -> None:
    with lake.transaction(dataset) as tx:
        tx.write("users", pd.DataFrame({"user_id": [0, 1], "user_key": ["a", "b"]}))
        tx.write("items", pd.DataFrame({"item_id": [0, 1, 2], "item_key": ["x", "y", "z"]}))
        tx.write("interactions", interactions)


def test_dataset_stats_counts_positive_interactions_only(tmp_path):
    """Rows with label 0 are sampled negatives, not interactions: Table 1 counts label NULL
    or 1; a dataset without a label column counts every row."""
    lake = Lake(tmp_path)
    _write_dataset(lake, "ctr", pd.DataFrame({
        "user_id": [0, 0, 0, 1, 1, 1], "item_id": [0, 1, 2, 0, 1, 2],
        "label": pd.array([1, 0, 0, 1, None, 0], dtype="Int8")}))
    _write_dataset(lake, "implicit", pd.DataFrame({"user_id": [0, 1, 1], "item_id": [0, 1, 2]}))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    warehouse.refresh_views()
    rows = {r["dataset"]: r for r in warehouse.query("SELECT * FROM dataset_stats").to_pylist()}
    assert rows["ctr"]["n_interactions"] == 3 and rows["ctr"]["n_negative_rows"] == 3
    assert rows["ctr"]["density"] == pytest.approx(3 / 6)
    assert rows["implicit"]["n_interactions"] == 3 and rows["implicit"]["n_negative_rows"] == 0

    # no partition has a label column at all: every row is an interaction
    only_implicit = Lake(tmp_path / "other")
    _write_dataset(only_implicit, "implicit", pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1]}))
    other = Warehouse(tmp_path / "other.duckdb", only_implicit)
    other.refresh_views()
    [row] = other.query("SELECT * FROM dataset_stats").to_pylist()
    assert row["n_interactions"] == 2 and row["sparsity"] == pytest.approx(1 - 2 / 6)


def test_cli_runs_sql_and_reports_errors(tmp_path, capsys):
    Lake(tmp_path).write("ml-1m", "items", pd.DataFrame({"item_id": [0], "item_key": ["1"], "title": ["Toy Story"]}))
    assert cli_main(["--data-dir", str(tmp_path), "SELECT dataset, title FROM items"]) == 0
    out = capsys.readouterr().out
    assert "ml-1m" in out and "Toy Story" in out
    assert cli_main(["--data-dir", str(tmp_path), "--format", "csv", "SELECT 1 AS x"]) == 0
    assert capsys.readouterr().out.strip() == "x\n1"
    assert cli_main(["--data-dir", str(tmp_path), "SELECT * FROM no_such_table"]) == 1
    assert "no_such_table" in capsys.readouterr().err


def test_a_hostile_lake_file_name_gets_no_view_and_injects_nothing(tmp_path):
    lake = Lake(tmp_path)
    lake.write("ml-1m", "users", pd.DataFrame({"user_id": [0], "user_key": ["1"]}))
    hostile = ('z" AS SELECT 1; CREATE OR REPLACE VIEW users AS SELECT 42 AS pwned; '
               'CREATE VIEW "y')
    pq.write_table(pa.table({"x": [1]}), lake.dataset_dir("ml-1m") / f"{hostile}.parquet")
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    assert warehouse.refresh_views() == ["users"]
    assert warehouse.ignored_files() == [hostile]
    assert warehouse.query("SELECT * FROM users").column_names == ["user_id", "user_key", "dataset"]


@pytest.mark.parametrize("statement, refused", [
    ("COPY (SELECT 1) TO '{tmp}/out.csv'", "statement 1 is COPY"),
    ("SELECT 1; DROP VIEW users", "statement 2 is DROP"),
    ("ATTACH '{tmp}/other.duckdb' AS other (READ_WRITE)", "statement 1 is ATTACH"),
    ("SET enable_external_access = true", "statement 1 is SET"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_text('{tmp}/outside.txt')", "file system operations are disabled"),
])
def test_the_cli_runs_reads_only_and_only_inside_the_lake(tmp_path, capsys, statement, refused):
    Lake(tmp_path).write("ml-1m", "users", pd.DataFrame({"user_id": [0], "user_key": ["1"]}))
    (tmp_path / "outside.txt").write_text("secret")
    sql = statement.format(tmp=tmp_path.as_posix())
    assert cli_main(["--data-dir", str(tmp_path), sql]) == 1
    assert refused in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()
    # reads of the lake, through the views or directly, still work
    assert cli_main(["--data-dir", str(tmp_path), "SELECT count(*) AS n FROM users"]) == 0
    direct = f"SELECT * FROM '{Lake(tmp_path).path('ml-1m', 'users').as_posix()}'"
    assert cli_main(["--data-dir", str(tmp_path), "--format", "csv", direct]) == 0
    assert "user_key" in capsys.readouterr().out


def test_the_cli_takes_no_write_lock_when_the_views_exist(tmp_path, monkeypatch):
    import warehouse.cli

    lake = Lake(tmp_path)
    lake.write("ml-1m", "users", pd.DataFrame({"user_id": [0], "user_key": ["1"]}))
    warehouse_ = Warehouse(tmp_path / "warehouse.duckdb", lake, lock_timeout_s=0.5)
    warehouse_.refresh_views()
    assert warehouse_.missing_views() == []
    monkeypatch.setattr(warehouse.cli, "open_warehouse", lambda data_dir=None: warehouse_)
    # another process keeps the file open read-only (a notebook, the DuckDB CLI, make ui)
    with held_read_only(warehouse_.path):
        assert cli_main(["SELECT count(*) AS n FROM users"]) == 0  # reads share the file
        with pytest.raises(duckdb.IOException, match="lock"):
            warehouse_.refresh_views()  # what every query used to do first
    lake.write("ml-1m", "items", pd.DataFrame({"item_id": [0], "item_key": ["1"]}))
    assert warehouse_.missing_views() == ["items"]  # a new table: the CLI adds its view
    assert cli_main(["SELECT count(*) AS n FROM items"]) == 0


def test_a_copied_data_directory_gets_views_over_its_own_lake(tmp_path):
    import shutil

    original = tmp_path / "a"
    Lake(original).write("ml-1m", "users", pd.DataFrame({"user_id": [0], "user_key": ["1"]}))
    Warehouse(original / "warehouse.duckdb", Lake(original)).refresh_views()
    copy = tmp_path / "b"
    shutil.copytree(original, copy, symlinks=True)
    Lake(copy).write("ml-1m", "users", pd.DataFrame({"user_id": [0, 1], "user_key": ["1", "2"]}))
    warehouse = Warehouse(copy / "warehouse.duckdb", Lake(copy))
    assert warehouse.missing_views() == ["users"]  # the copied view reads the original lake
    assert cli_main(["--data-dir", str(copy), "--format", "csv", "SELECT count(*) AS n FROM users"]) == 0


def test_a_view_whose_definition_changed_is_recreated(tmp_path):
    lake = Lake(tmp_path)
    lake.write("ml-1m", "users", pd.DataFrame({"user_id": [0, 1], "user_key": ["1", "2"]}))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", lake)
    assert warehouse.ensure_views() == (["users"], None)
    assert warehouse.missing_views() == []
    # a warehouse written by an older release: same name, other definition, no fingerprint
    with warehouse.connect() as con:
        con.execute("CREATE OR REPLACE VIEW users AS SELECT 1 AS user_id")
    assert warehouse.missing_views() == ["users"]
    assert warehouse.ensure_views() == (["users"], None)
    assert warehouse.query("SELECT count(*) AS n FROM users")["n"].to_pylist() == [2]
    assert warehouse.ensure_views() == ([], None)  # recreated once, then left alone


def test_a_query_answers_when_a_stale_view_cannot_be_rewritten(tmp_path, monkeypatch, capsys):
    import warehouse.cli

    lake = Lake(tmp_path)
    lake.write("ml-1m", "users", pd.DataFrame({"user_id": [0, 1], "user_key": ["1", "2"]}))
    warehouse_ = Warehouse(tmp_path / "warehouse.duckdb", lake, lock_timeout_s=0.5)
    warehouse_.refresh_views()
    with warehouse_.connect() as con:  # as an older release left it: no fingerprint
        con.execute("COMMENT ON VIEW users IS NULL")
    assert warehouse_.missing_views() == ["users"]
    monkeypatch.setattr(warehouse.cli, "open_warehouse", lambda data_dir=None: warehouse_)
    with held_read_only(warehouse_.path):
        assert cli_main(["--format", "csv", "SELECT count(*) AS n FROM users"]) == 0
        out, err = capsys.readouterr()
        assert out.split() == ["n", "2"] and "warning: views not refreshed" in err
    assert cli_main(["SELECT count(*) AS n FROM users"]) == 0  # free again: rewritten
    assert warehouse_.missing_views() == []
