"""Stage 1 end to end: real upstream formats served by a loopback server, through Dagster.

The registry's real upstream URLs are redirected to the loopback server with the mirror
setting (``KG4REC_MIRROR``), exactly as a user behind a firewall would use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg
import pytest
import yaml

from datasources.registry import GROUPLENS, KGAT_RAW
from pipeline.definitions import defs
from tests.support import fixtures
from warehouse import Lake, Warehouse

REPO = Path(__file__).resolve().parents[1]


def _mirror(monkeypatch, server) -> None:
    monkeypatch.setenv("KG4REC_MIRROR", f"{GROUPLENS}/={server.url('/grouplens/')};{KGAT_RAW}/={server.url('/kgat/')}")


def _serve_grouplens(server, name: str, files: dict[str, bytes], md5_of: bytes | None = None) -> bytes:
    payload = fixtures.make_zip(files)
    server.add(f"/grouplens/{name}", payload, content_type="application/zip")
    server.add(f"/grouplens/{name}.md5", fixtures.grouplens_md5(name, md5_of if md5_of is not None else payload))
    return payload


def _run(dataset: str, run_config: dict | None = None, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("ingest")
    return job.execute_in_process(
        partition_key=dataset,
        run_config=run_config or {},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def _user_error(result: dg.ExecuteInProcessResult, node: str):
    """The user-code exception behind a step failure (Dagster wraps it as the cause)."""
    error = result.failure_data_for_node(node).error
    return error.cause or error


def _checks_passed(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_ml100k_from_grouplens_zip_with_retry_and_cache(server, data_dir, monkeypatch):
    _mirror(monkeypatch, server)
    files = fixtures.ml100k_files(n_users=30, n_items=40)
    payload = fixtures.make_zip(files)
    server.add("/grouplens/ml-100k.zip", b"busy", status=503)  # a 5xx first: retried
    server.add("/grouplens/ml-100k.zip", payload, content_type="application/zip")
    server.add("/grouplens/ml-100k.zip.md5", fixtures.grouplens_md5("ml-100k.zip", payload))

    result = _run("ml-100k")
    assert result.success
    assert _checks_passed(result) == {
        "users_keys_unique": True, "items_keys_unique": True, "interactions_valid": True,
        "split_leak_free_and_balanced": True,
    }
    assert server.hits("/grouplens/ml-100k.zip") == 2
    lake = Lake(data_dir)
    interactions = lake.read_pandas("ml-100k", "interactions")
    expected_pairs = len(files["ml-100k/u.data"].splitlines())
    assert len(interactions) == expected_pairs
    assert interactions["rating"].between(1, 5).all() and interactions["ts"].notna().all()
    items = lake.read_pandas("ml-100k", "items")
    assert items.loc[0, "item_key"] == "1" and items.loc[0, "title"] == "Movie 1" and items.loc[0, "year"] == 1991

    # Metadata: row counts and the Table-1 block reach the Dagster event log.
    materializations = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("source_files")}
    assert materializations["interactions"]["dagster/row_count"].value == expected_pairs
    assert "Table 1" in materializations["interactions"]["table_1"].value

    # A second run finds verified copies in the cache: no download at all.
    server.clear_log()
    assert _run("ml-100k").success
    assert server.hits("/grouplens/ml-100k.zip") == 0

    rows = Warehouse(data_dir / "warehouse.duckdb", lake).query(
        "SELECT split, count(*) AS n FROM split WHERE dataset = 'ml-100k' GROUP BY ALL ORDER BY split").to_pylist()
    assert sum(r["n"] for r in rows) == expected_pairs and {r["split"] for r in rows} == {"train", "valid", "test"}


def test_ml1m_from_grouplens_zip(server, data_dir, monkeypatch):
    _mirror(monkeypatch, server)
    ratings = fixtures.ml1m_ratings(n_users=3)
    _serve_grouplens(server, "ml-1m.zip", fixtures.ml1m_files(ratings))
    assert _run("ml-1m").success
    lake = Lake(data_dir)
    items = lake.read_pandas("ml-1m", "items")
    # Movie 99 is in movies.dat but nobody rated it: dropped (and counted in the metadata).
    assert items["item_key"].tolist() == ["1", "2", "11", "25", "50"]
    assert items.set_index("item_key").loc["11", "title"] == "The American President"
    assert list(items.set_index("item_key").loc["1", "genres"]) == ["Animation", "Children's", "Comedy"]
    assert len(lake.read_pandas("ml-1m", "interactions")) == len(ratings)
    assert lake.read_pandas("ml-1m", "users")["gender"].tolist() == ["F", "M", "M"]


def test_amazon_book_from_kgat_raw_files(server, data_dir, monkeypatch):
    _mirror(monkeypatch, server)
    for name, payload in fixtures.kgat_files(n_users=12, n_items=9).items():
        server.add(f"/kgat/{name}", payload, content_type="text/plain")
    assert _run("amazon-book").success
    lake = Lake(data_dir)
    assert len(lake.read_pandas("amazon-book", "interactions")) == 12 * 5
    items = lake.read_pandas("amazon-book", "items")
    assert items["item_key"].iloc[0] == "1000000000" and items["freebase_mid"].iloc[1] == "m.01"


def _check_evaluation(result: dg.ExecuteInProcessResult, name: str):
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and e.event_specific_data.asset_check_key.name == name]
    return evaluation


def test_the_split_check_uses_what_the_split_was_built_with(server, data_dir, monkeypatch):
    """Non-default ratios and size_rule pass the audit before publish AND the asset check after
    (the check reads them from the run that built the split); a check config that contradicts
    the split fails, with the numbers in the step's failure."""
    _mirror(monkeypatch, server)
    _serve_grouplens(server, "ml-100k.zip", fixtures.ml100k_files(n_users=30, n_items=40))
    instance = dg.DagsterInstance.ephemeral()
    built = {"ops": {"split": {"config": {"ratios": [0.6, 0.2, 0.2], "size_rule": "recbole"}}}}
    result = defs.resolve_job_def("ingest").execute_in_process(
        partition_key="ml-100k", run_config=built, instance=instance)
    assert result.success
    evaluation = _check_evaluation(result, "split_leak_free_and_balanced")
    assert evaluation.passed
    assert evaluation.metadata["ratios"].value == [0.6, 0.2, 0.2]
    assert evaluation.metadata["size_rule"].value == "recbole"
    assert "metadata of split's materialization" in evaluation.metadata["built_with"].value
    assert abs(evaluation.metadata["share_train"].value - 0.6) < 0.05

    # the check alone, in a later run with no split config: the published split's own settings
    alone = defs.resolve_job_def("ingest").execute_in_process(
        partition_key="ml-100k", op_selection=["split_split_leak_free_and_balanced"], instance=instance)
    evaluation = _check_evaluation(alone, "split_leak_free_and_balanced")
    assert alone.success and evaluation.passed
    assert {e.step_key for e in alone.all_events if e.event_type_value == "STEP_START"} == {
        "split_split_leak_free_and_balanced"}
    assert result.run_id in evaluation.metadata["built_with"].value

    # a check config that contradicts the split: a failed check whose numbers the failure shows
    contradicted = {"ops": {**built["ops"], "split_split_leak_free_and_balanced": {
        "config": {"ratios": [0.8, 0.1, 0.1], "size_rule": "unbiased"}}}}
    result = defs.resolve_job_def("ingest").execute_in_process(
        partition_key="ml-100k", run_config=contradicted, instance=instance, raise_on_error=False)
    assert not result.success
    assert not _check_evaluation(result, "split_leak_free_and_balanced").passed
    shown = result.failure_data_for_node("split_split_leak_free_and_balanced").error.to_string()
    assert "Failure: blocking check split: split_leak_free_and_balanced failed" in shown
    assert "train share 0.6" in shown and "from 0.8" in shown


def _kgat_with_folds(tmp_path: Path, n_users: int = 30, n_items: int = 40) -> tuple[dict, set, set]:
    """KGAT-format train.txt/test.txt (plus the lists) in tmp: 10 train and 3 test pairs per
    user, and one pair (user 0, item 0) in both files. Returns the run config's tables and the
    train/test pairs as (user index, item index)."""
    train, test = {}, {}
    for u in range(n_users):
        items = [(u * 7 + k) % n_items for k in range(13)]
        train[u], test[u] = items[:10], items[10:]
    test[0] = [*test[0], train[0][0]]  # published in both folds
    files = fixtures.kgat_files(n_users=n_users, n_items=n_items)
    files["train.txt"] = "".join(f"{u} {' '.join(map(str, i))}\n" for u, i in train.items()).encode()
    files["test.txt"] = "".join(f"{u} {' '.join(map(str, i))}\n" for u, i in test.items()).encode()
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    tables = {
        # two locations, as declared: they inherit the dataset file's folds "train,test"
        "interactions": {"locations": [str(tmp_path / "train.txt"), str(tmp_path / "test.txt")]},
        "items": {"locations": [str(tmp_path / "item_list.txt")]},
        "users": {"locations": [str(tmp_path / "user_list.txt")]},
    }
    pairs = lambda fold: {(u, i) for u, items in fold.items() for i in items}  # noqa: E731
    return tables, pairs(train), pairs(test)


def test_amazon_book_predefined_split_keeps_the_kgat_test_file(data_dir, tmp_path):
    tables, train_pairs, test_pairs = _kgat_with_folds(tmp_path)
    run_config = {"ops": {"source_files": {"config": {"datasets": {"amazon-book": {"tables": tables}}}},
                          "split": {"config": {"strategy": "predefined", "seed": 11}}}}
    result = _run("amazon-book", run_config)
    assert result.success
    assert all(_checks_passed(result).values()) and "split_leak_free_and_balanced" in _checks_passed(result)

    lake = Lake(data_dir)
    interactions = lake.read_pandas("amazon-book", "interactions")
    assert len(interactions) == len(train_pairs | test_pairs) == 30 * 13
    # KGAT indices are our ids (both lists ordered by remap id)
    fold_of = {(u, i): f for u, i, f in interactions[["user_id", "item_id", "fold"]].itertuples(index=False)}
    assert {p for p, f in fold_of.items() if f == "test"} == test_pairs
    assert fold_of[(0, 0)] == "test"  # the pair in both files stays in test, counted:
    meta = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("source_files")}
    assert meta["interactions"]["pairs_in_two_folds"].value == 1
    assert meta["interactions"]["n_fold_test"].value == len(test_pairs)

    split = lake.read_pandas("amazon-book", "split")
    part_of = {(u, i): s for u, i, s in split[["user_id", "item_id", "split"]].itertuples(index=False)}
    assert {p for p, s in part_of.items() if s == "test"} == test_pairs
    valid = {p for p, s in part_of.items() if s == "valid"}
    assert valid and valid <= train_pairs - test_pairs
    split_meta = result.asset_materializations_for_node("split")[0].metadata
    assert split_meta["strategy"].value == "predefined"
    assert split_meta["n_test"].value == len(test_pairs) and split_meta["n_fold_test"].value == len(test_pairs)
    assert 0.05 < split_meta["valid_share_of_train_fold"].value < 0.2

    # the fold column reaches the warehouse views
    rows = Warehouse(data_dir / "warehouse.duckdb", lake).query(
        "SELECT fold, count(*) AS n FROM interactions WHERE dataset = 'amazon-book' GROUP BY ALL").to_pylist()
    assert {r["fold"]: r["n"] for r in rows} == {"train": len(train_pairs - test_pairs), "test": len(test_pairs)}

    # the same run again: the split is seeded, so identical
    assert _run("amazon-book", run_config).success
    assert lake.read_pandas("amazon-book", "split").equals(split)


def test_predefined_split_without_declared_folds_says_what_to_declare(data_dir, tmp_path):
    tables, _, _ = _kgat_with_folds(tmp_path)
    tables["interactions"]["options"] = {"folds": ""}  # clear the dataset file's folds
    run_config = {"ops": {"source_files": {"config": {"datasets": {"amazon-book": {"tables": tables}}}},
                          "split": {"config": {"strategy": "predefined"}}}}
    result = _run("amazon-book", run_config, raise_on_error=False)
    assert not result.success
    assert "fold" not in Lake(data_dir).read_pandas("amazon-book", "interactions").columns
    message = _user_error(result, "split").message
    assert "amazon-book" in message and "declare no fold" in message and 'folds: "train,test"' in message


def test_checksum_mismatch_fails_and_writes_nothing(server, data_dir, monkeypatch):
    _mirror(monkeypatch, server)
    _serve_grouplens(server, "ml-100k.zip", fixtures.ml100k_files(), md5_of=b"something else")
    result = _run("ml-100k", raise_on_error=False)
    assert not result.success
    failure = _user_error(result, "source_files")
    assert "ChecksumMismatchError" in failure.cls_name and "md5 mismatch" in failure.message
    assert not (data_dir / "lake").exists() or not any((data_dir / "lake").rglob("*.parquet"))


def test_corrupt_zip_fails_with_a_clear_error(server, data_dir, monkeypatch):
    _mirror(monkeypatch, server)
    garbage = b"<html>503 Service Unavailable</html>"
    server.add("/grouplens/ml-100k.zip", garbage)
    server.add("/grouplens/ml-100k.zip.md5", fixtures.grouplens_md5("ml-100k.zip", garbage))
    result = _run("ml-100k", raise_on_error=False)
    assert "not a valid zip archive" in _user_error(result, "source_files").message


def test_zip_member_escaping_the_target_is_refused(server, data_dir, monkeypatch, tmp_path):
    _mirror(monkeypatch, server)
    files = fixtures.ml100k_files()
    files["../../evil.txt"] = b"owned"
    _serve_grouplens(server, "ml-100k.zip", files)
    result = _run("ml-100k", raise_on_error=False)
    error = _user_error(result, "source_files")
    assert "UnsafeArchiveError" in error.cls_name and "evil.txt" in error.message
    assert not list(tmp_path.rglob("evil.txt"))


def test_malformed_line_fails_naming_file_line_and_keeps_previous_tables(server, data_dir, monkeypatch, tmp_path):
    _mirror(monkeypatch, server)
    _serve_grouplens(server, "ml-100k.zip", fixtures.ml100k_files())
    assert _run("ml-100k").success
    lake = Lake(data_dir)
    before = lake.read_pandas("ml-100k", "interactions")

    bad = tmp_path / "u.data"
    bad.write_text("1\t1\t5\t881250949\n2\t1\t4\n")
    override = {"ops": {"source_files": {"config": {"datasets": {"ml-100k": {
        "tables": {"interactions": {"locations": [str(bad)]}}}}}}}}
    result = _run("ml-100k", override, raise_on_error=False)
    assert not result.success
    error = _user_error(result, "source_files")
    assert "MalformedInputError" in error.cls_name and f"{bad}:2:" in error.message
    assert lake.read_pandas("ml-100k", "interactions").equals(before)


def test_bring_your_own_tsv_through_dagster_job_execute(tmp_path):
    """The CLI path users run (``dagster job execute``), with a plain TSV and a run-config file."""
    inter = tmp_path / "my_interactions.tsv"
    inter.write_text("uid\tiid\tscore\n" + "".join(f"u{u}\ti{(u * 3 + k) % 17}\t{k % 5 + 1}\n" for u in range(25) for k in range(12)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "ops": {
            "source_files": {"config": {"datasets": {"ml-100k": {"variant": "tsv", "tables": {"interactions": {
                "locations": [str(inter)], "options": {"user_col": "uid", "item_col": "iid", "rating_col": "score"}}}}}}},
            "split": {"config": {"min_rating": 2.0}},
        },
    }))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "KG4REC_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "pipeline", "-j", "ingest",
         "--tags", json.dumps({"dagster/partition": "ml-100k"}), "-c", str(config)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lake = Lake(tmp_path / "data")
    assert len(lake.read_pandas("ml-100k", "interactions")) == 25 * 12 - _duplicates(inter)
    split = lake.read_pandas("ml-100k", "split")
    interactions = lake.read_pandas("ml-100k", "interactions")
    assert len(split) == int((interactions["rating"] >= 2.0).sum())  # min_rating honoured
    # Run history persists in DAGSTER_HOME (the UI shows it).
    assert any(home.rglob("*.db"))


def _duplicates(path: Path) -> int:
    rows = [tuple(line.split("\t")[:2]) for line in path.read_text().splitlines()[1:]]
    return len(rows) - len(set(rows))


def test_zip_fixture_is_really_a_zip():
    assert zipfile.is_zipfile(__import__("io").BytesIO(fixtures.make_zip({"a": b"b"})))


@pytest.mark.parametrize("dataset", ["ml-100k", "ml-1m", "amazon-book"])
def test_every_partition_has_a_default_variant_with_real_upstream_urls(dataset):
    from datasources.registry import get_dataset, split_archive_location

    variant = get_dataset(dataset).variant()
    for table in variant.tables.values():
        for location in table.locations:
            assert split_archive_location(location)[0].startswith("https://")
