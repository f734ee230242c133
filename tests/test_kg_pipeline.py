"""Stage 2 through Dagster: ingest + KG from the registry's upstream URLs, served on loopback."""

from __future__ import annotations

import dagster as dg

from datasources.kg.sources import RECBOLE_EXAMPLE
from datasources.registry import GROUPLENS
from pipeline.definitions import defs
from tests.support import fixtures
from warehouse import Lake, Warehouse


def test_ml100k_kg_from_recbole_urls(server, data_dir, monkeypatch):
    monkeypatch.setenv("KG4REC_MIRROR", f"{GROUPLENS}/={server.url('/gl/')};{RECBOLE_EXAMPLE}/={server.url('/rb/')}")
    files = fixtures.ml100k_files(n_users=20, n_items=6)
    payload = fixtures.make_zip(files)
    server.add("/gl/ml-100k.zip", payload)
    server.add("/gl/ml-100k.zip.md5", fixtures.grouplens_md5("ml-100k.zip", payload))
    server.add("/rb/ml-100k.link", b"item_id:token\tentity_id:token\n1\tm.01\n2\tm.02\n3\tm.03\n999\tm.09\n")
    server.add("/rb/ml-100k.kg", (
        b"head_id:token\trelation_id:token\ttail_id:token\n"
        b"m.01\tfilm.film.directed_by\tm.d1\nm.02\tfilm.film.directed_by\tm.d1\n"
        b"m.03\tfilm.film.genre\tm.g1\nm.01\tfilm.film.directed_by\tm.d1\n"
    ))

    result = defs.resolve_job_def("main").execute_in_process(
        partition_key="ml-100k", run_config=fixtures.offline_run_config(), instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["kg_ids_valid"] and checks["kg_holds_no_interactions"]
    assert checks["sequences_well_formed"]

    lake = Lake(data_dir)
    entities = lake.read_pandas("ml-100k", "entities")
    n_items = len(lake.read_pandas("ml-100k", "items"))
    assert (entities["entity_id"][:n_items] == range(n_items)).all() and (entities["kind"][:n_items] == "item").all()
    triples = lake.read_pandas("ml-100k", "kg_triples")
    freebase = triples[triples["source"] == "freebase"]
    assert len(freebase) == 3  # the duplicate directed_by triple is removed (and counted)
    # Movies 1 and 2 share their director entity m.d1.
    director = entities.set_index("entity_key").loc["m.d1", "entity_id"]
    assert sorted(freebase[freebase["tail_id"] == director]["head_id"]) == [0, 1]

    warehouse = Warehouse(data_dir / "warehouse.duckdb", lake)
    stats = warehouse.query("SELECT source, n_triples FROM kg_stats WHERE dataset = 'ml-100k' ORDER BY source").to_pylist()
    assert {"source": "freebase", "n_triples": 3} in stats
    # Stage 5 ran on the same graph: every item's sequence starts with itself, users come from
    # train pairs only, and Movie 1's first-hop neighbours include its director entity.
    sequences = lake.read_pandas("ml-100k", "neighbor_sequences")
    assert (sequences[sequences["pos"] == 0]["node_id"] == sequences[sequences["pos"] == 0]["item_id"]).all()
    movie1 = sequences[(sequences["item_id"] == 0) & (sequences["hop"] == 1)]
    assert director in set(movie1["node_id"])
    split = lake.read_pandas("ml-100k", "split")
    n_entities = len(entities)
    users_of_movie1 = set(movie1.loc[movie1["node_type"] == "user", "node_id"] - n_entities)
    train_users = set(split[(split["item_id"] == 0) & (split["split"] == "train")]["user_id"])
    assert users_of_movie1 <= train_users

    # Every SQL example of the README runs against the warehouse the pipeline built.
    for sql in readme_sql_blocks():
        warehouse.query(sql)

    # The link to unknown item 999 is counted, not silently dropped.
    links = next(m for m in result.asset_materializations_for_node("knowledge_graph") if m.asset_key.path == ["kg_triples"])
    assert "999" in str(links.metadata["links"].value)


def test_an_upstream_selection_of_the_sequences_runs_on_a_fresh_lake(server, data_dir, monkeypatch):
    """`dagster asset materialize --select '*neighbor_sequences'` on an empty data directory.

    The selection cuts through two multi-assets (the KG without item_links/relations, the
    neighbours without collaborative_kg), yet their blocking audits read those tables: each
    publishes the tables of its one build together (it failed with "no table 'item_links'
    staged or published" before), and Dagster hears only of the selected ones."""
    monkeypatch.setenv("KG4REC_MIRROR", f"{GROUPLENS}/={server.url('/gl/')};{RECBOLE_EXAMPLE}/={server.url('/rb/')}")
    payload = fixtures.make_zip(fixtures.ml100k_files(n_users=20, n_items=6))
    server.add("/gl/ml-100k.zip", payload)
    server.add("/gl/ml-100k.zip.md5", fixtures.grouplens_md5("ml-100k.zip", payload))
    server.add("/rb/ml-100k.link", b"item_id:token\tentity_id:token\n1\tm.01\n2\tm.02\n")
    server.add("/rb/ml-100k.kg", b"head_id:token\trelation_id:token\ttail_id:token\n"
               b"m.01\tfilm.film.directed_by\tm.d1\nm.02\tfilm.film.directed_by\tm.d1\n")
    job = dg.define_asset_job("sequences_and_upstream", selection="*neighbor_sequences")
    result = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name).execute_in_process(
        partition_key="ml-100k", instance=dg.DagsterInstance.ephemeral())

    assert result.success
    reported = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"kg_triples", "entities", "neighbor_sequences"} <= reported
    assert not reported & {"item_links", "relations", "collaborative_kg"}
    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["kg_ids_valid"] and checks["sequences_well_formed"]
    lake = Lake(data_dir)
    for table in ("item_links", "relations", "kg_triples", "collaborative_kg", "neighbor_sequences"):
        assert lake.exists("ml-100k", table), table
    # one build: the links the KG was built from sit beside its triples
    assert set(lake.read_pandas("ml-100k", "item_links")["entity_key"]) == {"m.01", "m.02"}


def readme_sql_blocks() -> list[str]:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.strip() for b in re.findall(r"```sql\n(.*?)```", readme, flags=re.S)]
    statements = [s.strip() for b in blocks for s in b.split(";") if s.strip() and not s.strip().startswith("--")]
    assert statements, "the README has no SQL examples"
    return statements


def test_kg_check_flags_users_encoded_as_entities():
    import pandas as pd

    from assets.kg import leaked_interactions

    entities = pd.DataFrame({"entity_key": ["m.01", "user:42", "m.02"]})
    relations = pd.DataFrame({"relation_key": ["film.film.genre", "interact"]})
    problems = leaked_interactions(entities, relations, pd.Series(["42", "7"]))
    assert len(problems) == 2 and "user:42" in problems[0] and "interact" in problems[1]
    assert leaked_interactions(entities.iloc[[0, 2]], relations.iloc[[0]], pd.Series(["42"])) == []
