"""The Parquet lake (atomic writes) and the DuckDB warehouse views and CLI."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

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
    assert [p.name for p in path.parent.iterdir()] == ["users.parquet"]  # no temp file left behind


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


def test_cli_runs_sql_and_reports_errors(tmp_path, capsys):
    Lake(tmp_path).write("ml-1m", "items", pd.DataFrame({"item_id": [0], "item_key": ["1"], "title": ["Toy Story"]}))
    assert cli_main(["--data-dir", str(tmp_path), "SELECT dataset, title FROM items"]) == 0
    out = capsys.readouterr().out
    assert "ml-1m" in out and "Toy Story" in out
    assert cli_main(["--data-dir", str(tmp_path), "--format", "csv", "SELECT 1 AS x"]) == 0
    assert capsys.readouterr().out.strip() == "x\n1"
    assert cli_main(["--data-dir", str(tmp_path), "SELECT * FROM no_such_table"]) == 1
    assert "no_such_table" in capsys.readouterr().err
