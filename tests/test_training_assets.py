"""Stage 6 through Dagster: every variant trains on a tiny lake, then the downstream assets."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from assets.figures import paper_table_markdown
from assets.resources import LakeResource, WarehouseResource
from assets.training import (
    TRAINING_ASSETS,
    modality_preferences,
    paper_tables,
    recommendations,
    trained_model,
)
from model.config import VARIANTS
from model.synthetic_data import synthetic_tables
from tests.support.bench import load_bench
from warehouse import Lake, Warehouse
from warehouse.runs import RunStore

DATASET = "ml-100k"
TINY = {"epochs": 2, "batch_size": 256, "embed_dim": 16, "relation_dim": 8,
        "layer_sizes": [16, 8], "n_heads": 2, "n_blocks": 1, "ffn_dim": 16, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_variant_through_the_assets(tmp_path):
    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=30, n_items=40, n_pairs=450, n_attributes=8,
                                        n_triples=60, sequence_length=6, seed=2).items():
        lake.write(DATASET, name, table)
    resources = {"lake": LakeResource(data_dir=str(tmp_path)),
                 "warehouse": WarehouseResource(data_dir=str(tmp_path)),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    instance = dg.DagsterInstance.ephemeral()
    for variant in VARIANTS:
        # in the step's process (one config away from the default, the Pipes-launched job of
        # tests/test_pipes_training.py): 9 job processes would only add their start-up time
        config = {"variant": variant, "launch": "in_process", **TINY}
        result = dg.materialize(
            [trained_model], partition_key=DATASET, resources=resources, instance=instance,
            run_config={"ops": {"trained_model": {"config": config}}})
        assert result.success, variant
        meta = {m.asset_key.to_user_string(): m.metadata
                for m in result.asset_materializations_for_node("trained_model")}
        assert set(meta) == {"trained_model", "training_runs", "metrics"}
        model_meta = meta["trained_model"]
        assert model_meta["variant"].value == variant
        # the metadata shows what the warehouse holds for this run (test, best epoch)
        run_id = model_meta["run_id"].value
        stored = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake)).final_metrics(run_id)
        stored = stored[(stored["split"] == "test") & (stored["metric"] == "recall")
                        & (stored["k"] == 20)]["value"]
        assert model_meta["test/recall@20"].value == pytest.approx(float(stored.iloc[0]))
        assert "data:image/png;base64" in model_meta["curves"].value
        assert "| items:tail |" in meta["metrics"]["slices"].value
        assert "data:image/png;base64" in meta["metrics"]["slices_chart"].value
        assert model_meta["device"].value == "cpu"

    result = dg.materialize([recommendations, modality_preferences, paper_tables],
                            partition_key=DATASET, resources=resources, instance=instance,
                            selection=[a.key for a in (recommendations, modality_preferences)]
                            + [paper_tables.key])
    assert result.success
    store = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake))
    runs = store.latest_runs()
    assert sorted(runs["variant"]) == sorted(VARIANTS)
    warehouse = store.warehouse
    n_recs = warehouse.query("SELECT count(*) AS n, max(rank) AS k, count(DISTINCT run_id) "
                             "AS runs FROM recommendations").to_pylist()[0]
    assert n_recs["k"] == 20 and n_recs["runs"] == 1 and n_recs["n"] <= 30 * 20
    # recommendations never repeat a seen pair
    seen = warehouse.query("""
        SELECT count(*) AS n FROM recommendations r
        JOIN read_parquet(?) s ON s.user_id = r.user_id AND s.item_id = r.item_id
    """, [str(lake.path(DATASET, "split"))]).to_pylist()[0]["n"]
    assert seen == 0
    prefs = warehouse.query("SELECT * FROM modality_preferences").to_pandas()
    assert len(prefs) == 30 and prefs["run_id"].nunique() == 1
    both = prefs.dropna()
    assert ((both["visual_weight"] + both["text_weight"]).round(6) == 1).all()
    tables = store.paper_tables()
    assert set(tables["paper_table"]) == {"Table 2", "Table 3", "Table 4"}
    table3 = tables[tables["paper_table"] == "Table 3"].set_index("row_label")
    assert pd.isna(table3.loc["w/o t&v", "improvement_recall"])
    # full ran with our propagation: without modalities it is exactly LightGCN
    assert table3.loc["w/o t&v", "variant"] == "lightgcn"
    table2 = tables[tables["paper_table"] == "Table 2"].set_index("row_label")
    assert table2.loc["KGAT", "variant"] == "kgat"
    expected = table3.loc["Multi-KG4Rec", "recall"] / table3.loc["w/o t&v", "recall"] - 1
    assert table3.loc["Multi-KG4Rec", "improvement_recall"] == pytest.approx(expected)
    markdown = paper_table_markdown(tables, "Table 2")
    assert "Multi-KG4Rec" in markdown and "LightGCN" in markdown
    metrics = warehouse.query(
        "SELECT count(*) FILTER (WHERE epoch IS NULL AND slice = 'all') AS final, "
        "count(DISTINCT slice) AS slices, "
        "count(*) FILTER (WHERE epoch IS NOT NULL) AS curve FROM metrics").to_pylist()[0]
    assert metrics["final"] == len(VARIANTS) * 2 * 5 * 2  # test+valid × 5 metrics × 2 ks
    assert metrics["slices"] == 7  # all, items:head/tail, users:q1..q4
    run_id = store.latest_run(DATASET, "full")["run_id"]
    slices = store.slice_metrics(run_id).set_index("slice")
    assert list(slices.index) == ["all", "items:head", "items:tail", "users:q1", "users:q2",
                                  "users:q3", "users:q4"]
    final = store.final_metrics(run_id)
    assert slices.loc["all", "recall"] == pytest.approx(float(final[
        (final["split"] == "test") & (final["metric"] == "recall") & (final["k"] == 20)]["value"].iloc[0]))
    assert metrics["curve"] > 0
    assert len(TRAINING_ASSETS) == 4


def _bench_variants():
    return load_bench("variants")


def test_bench_variants_says_clearly_when_the_lake_is_missing(tmp_path, capsys):
    assert _bench_variants().main(["--dataset", DATASET, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lake tables are missing" in err and "make run DATASET=ml-100k" in err


def test_bench_variants_trains_and_records(tmp_path, capsys):
    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=20, n_items=25, n_pairs=200, n_attributes=5,
                                        n_triples=30, sequence_length=5, seed=4).items():
        if name != "clip_features":  # full then runs on its ID graph alone, and says so
            lake.write(DATASET, name, table)
    args = ["--dataset", DATASET, "--data-dir", str(tmp_path), "--variants", "kgat", "full"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}".replace(" ", "")]
    assert _bench_variants().main(args) == 0
    out = capsys.readouterr().out
    assert "clip_features not in the lake" in out and "| full |" in out
    store = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake))
    assert set(store.latest_runs()["variant"]) == {"kgat", "full"}
    assert len(store.paper_tables()) > 0


def test_a_training_run_can_re_read_exactly_the_data_it_trained_on(tmp_path):
    """Time travel: the run records the snapshot it read (training_runs.lake_version); after
    later publishes — more of them than the lake keeps — that snapshot still returns exactly
    the tables of the training, while the published ones have moved on."""
    from model.data import read_lake_tables

    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=30, n_items=40, n_pairs=450, n_attributes=8,
                                        n_triples=60, sequence_length=6, seed=2).items():
        lake.write(DATASET, name, table)
    trained_on = read_lake_tables(tmp_path, DATASET)
    resources = {"lake": LakeResource(data_dir=str(tmp_path), keep_snapshots=1),
                 "warehouse": WarehouseResource(data_dir=str(tmp_path)),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    # the default launch: the training job through Dagster Pipes
    result = dg.materialize([trained_model], partition_key=DATASET, resources=resources,
                            run_config={"ops": {"trained_model": {"config": {"variant": "lightgcn", **TINY}}}})
    assert result.success
    run = RunStore(Warehouse(tmp_path / "warehouse.duckdb", lake)).latest_run(DATASET)

    # three later re-splits are published (a different seed each), keep_snapshots=1
    split = trained_on["split"].to_pandas()
    for seed in range(3):
        resplit = split.sample(frac=1.0, random_state=seed)
        resplit["split"] = split["split"].sample(frac=1.0, random_state=seed + 10).to_numpy()
        pruning = Lake(tmp_path, keep_snapshots=1)
        with pruning.transaction(DATASET) as tx:
            tx.write("split", resplit.reset_index(drop=True))
    assert not read_lake_tables(tmp_path, DATASET)["split"].equals(trained_on["split"])

    replay = read_lake_tables(tmp_path, DATASET, run["lake_version"])
    for name, table in trained_on.items():
        if table is not None:
            assert replay[name].equals(table), name
