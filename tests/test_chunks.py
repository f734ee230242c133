"""Item-chunked media and features: stable chunks, a backfill over them on the multiprocess
executor, and a union that equals the unchunked tables."""

from __future__ import annotations

import hashlib

import dagster as dg
import pyarrow as pa
import pytest

from warehouse import Lake
from warehouse.chunks import ChunkStore, chunk_names, item_chunk

DATASET = "ml-100k"
MEDIA = {"offline": True, "datasets": {DATASET: {"poster_sources": [], "description_sources": ["title_genres"]}}}
FEATURES = {"image_model": "none", "text_model": "minilm"}


def test_chunks_are_a_stable_hash_of_the_key_and_cover_every_item():
    keys = [str(k) for k in range(1000)]
    chunks = item_chunk(keys, 8)
    assert list(item_chunk(["1", "2", "3"], 8)) == list(chunks[1:4])  # order independent
    # the first 8 bytes of SHA-1, big-endian, modulo n: the same on every machine and run
    by_hand = [int(hashlib.sha1(k.encode()).hexdigest()[:16], 16) % 8 for k in ("1", "2", "3")]
    assert list(item_chunk(["1", "2", "3"], 8)) == by_hand
    assert sorted(set(chunks)) == list(range(8)) and min((chunks == c).sum() for c in range(8)) > 90
    assert chunk_names(3) == ["00", "01", "02"] and chunk_names(120)[-1] == "119"


def test_the_union_refuses_missing_and_stale_chunks(tmp_path):
    store = ChunkStore(tmp_path)
    store.write("d", "item_media", 2, 0, pa.table({"item_id": [0, 2]}), covers=["a", "c"])
    with pytest.raises(FileNotFoundError, match="chunk 01 has not been materialized"):
        store.union("d", "item_media", 2, [["a", "c"], ["b"]])
    store.write("d", "item_media", 2, 1, pa.table({"item_id": [1]}), covers=["b"])
    assert store.union("d", "item_media", 2, [["c", "a"], ["b"]]).num_rows == 3
    with pytest.raises(FileNotFoundError, match="chunk 00 is stale"):  # a new item hashes to 0
        store.union("d", "item_media", 2, [["a", "c", "d"], ["b"]])


def _lake(data_dir):
    from model.synthetic_data import synthetic_tables

    lake = Lake(data_dir)
    tables = synthetic_tables(n_users=20, n_items=30, n_pairs=200, n_attributes=6, n_triples=40,
                              sequence_length=5, seed=1)
    entities = tables["entities"].to_pandas() if hasattr(tables["entities"], "to_pandas") else tables["entities"]
    tables["entities"] = entities.assign(name=entities["entity_key"])
    for name in ("users", "items", "split", "entities", "relations", "kg_triples"):
        lake.write(DATASET, name, tables[name])
    return lake


def media_chunks_job():
    from pipeline.definitions import defs

    return defs.resolve_job_def("media_chunks")


def test_a_backfill_over_the_chunks_on_the_multiprocess_executor_equals_the_unchunked_run(
        tmp_path, monkeypatch):
    from assets.features import clip_features
    from assets.media import item_media
    from assets.resources import EncoderResource, HttpResource, LakeResource, WarehouseResource

    chunked, plain = tmp_path / "chunked", tmp_path / "plain"
    _lake(chunked), _lake(plain)
    monkeypatch.setenv("KG4REC_DATA_DIR", str(chunked))  # the step processes' lake resource
    run_config = {"ops": {"item_media_chunk": {"config": MEDIA}, "clip_features_chunk": {"config": FEATURES}},
                  "execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
    with dg.instance_for_test() as instance:
        for chunk in chunk_names(2):  # the backfill: one run per dataset x item_chunk partition
            result = dg.execute_job(dg.reconstructable(media_chunks_job), instance, run_config=run_config,
                                    tags={"dagster/partition": f"{DATASET}|{chunk}"})
            assert result.success, chunk
            assert {e.step_key for e in result.all_events if e.is_step_success} == {
                "item_media_chunk", "clip_features_chunk"}
        first = ChunkStore(chunked).read(DATASET, "clip_features", 2, 0)
        # idempotent: the same chunk again gives the same rows (in process: the retry need not
        # pay for step processes again)
        again = media_chunks_job().execute_in_process(
            instance=instance, partition_key=f"{DATASET}|00",
            run_config={"ops": run_config["ops"]})
        assert again.success
        assert ChunkStore(chunked).read(DATASET, "clip_features", 2, 0).equals(first)

    def materialize(data_dir, from_chunks):
        resources = {"lake": LakeResource(data_dir=str(data_dir)), "http": HttpResource(),
                     "warehouse": WarehouseResource(data_dir=str(data_dir)), "encoder": EncoderResource()}
        for asset, config in ((item_media, MEDIA), (clip_features, FEATURES)):
            result = dg.materialize([asset], partition_key=DATASET, resources=resources, run_config={
                "ops": {asset.key.to_user_string(): {"config": {**config, "from_chunks": from_chunks}}}})
            assert result.success

    materialize(chunked, True)
    materialize(plain, False)
    for table in ("item_media", "clip_features"):
        union, whole = Lake(chunked).read(DATASET, table), Lake(plain).read(DATASET, table)
        columns = [c for c in whole.column_names if c != "poster_attempts"]
        assert union.select(columns).equals(whole.select(columns)), table


def test_the_chunk_job_runs_here_by_default_and_names_the_package_a_cluster_executor_needs():
    from pipeline.executors import chunk_executor

    assert chunk_executor({}) is dg.multi_or_in_process_executor  # Dagster's default
    with pytest.raises(ValueError, match="KG4REC_EXECUTOR='k9s': expected one of k8s, celery"):
        chunk_executor({"KG4REC_EXECUTOR": "k9s"})
    with pytest.raises(ImportError, match="needs the dagster-k8s package"):
        chunk_executor({"KG4REC_EXECUTOR": "k8s"})  # not installed on the project's machines
