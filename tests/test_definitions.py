"""The one Definitions object: groups, partitions, checks, jobs, and selections users type."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline.definitions import defs

#: selection → assets it must materialize (the upstream closure where a "*" asks for it)
SELECTIONS = {
    "*split": {"source_files", "interactions", "split"},
    "*neighbor_sequences": {"source_files", "users", "items", "interactions", "split",
                            "entities", "kg_triples", "neighbor_sequences"},
    "group:kg": {"item_links", "entities", "relations", "kg_triples", "kg_stats"},
    "neighbor_sequences": {"neighbor_sequences"},
}


def test_every_asset_has_a_group_a_partition_and_an_owner():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in {"ingest", "kg", "media", "features", "neighbors", "training", "chunks"}, key
        assert node.partitions_def is not None, key
        assert node.owners, key


def test_blocking_checks_guard_the_stage_boundaries():
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert {"split", "kg_triples", "neighbor_sequences", "clip_features"} <= checked


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
def test_selections_resolve_to_runnable_jobs(selection):
    """Subsettable multi-assets: a selection cutting through one builds a job (it raised
    DagsterInvalidSubsetError before), and selects exactly the expected assets."""
    job = dg.define_asset_job("selection_probe", selection=selection)
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(
        "selection_probe")
    keys = {key.to_user_string() for key in resolved.asset_layer.executable_asset_keys}
    assert SELECTIONS[selection] <= keys
    if not selection.startswith(("*", "group:")):
        assert keys == SELECTIONS[selection]


def test_downstream_selection_of_features_reaches_training():
    job = dg.define_asset_job("downstream_probe", selection="clip_features+")
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(
        "downstream_probe")
    keys = {key.to_user_string() for key in resolved.asset_layer.executable_asset_keys}
    assert {"clip_features", "trained_model"} <= keys


def test_there_is_a_job_per_stage():
    names = {job.name for job in defs.jobs}
    assert {"main", "ingest", "kg", "media", "features", "neighbors", "training"} <= names


def test_jobs_run_their_steps_in_process_unless_the_run_config_says_otherwise():
    """Also under a user's run config that names only ``ops`` (as the README's own-dataset
    walkthrough does): a job's default run config would be replaced whole by it."""
    from tests.support.fixtures import offline_run_config

    def executor(job, run_config):
        [(name, config)] = dg.validate_run_config(job, run_config)["execution"].items()
        return name, next(iter(config))

    jobs = [defs.resolve_job_def(name)
            for name in ("main", "ingest", "kg", "media", "features", "neighbors", "training")]
    jobs.append(defs.resolve_implicit_global_asset_job_def())  # the UI's "Materialize"
    for job in jobs:
        assert executor(job, {}) == ("in_process_or_multiprocess", "in_process"), job.name
        assert executor(job, {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}
                        ) == ("in_process_or_multiprocess", "multiprocess"), job.name
    main = defs.resolve_job_def("main")
    assert executor(main, offline_run_config()) == ("in_process_or_multiprocess", "in_process")


def test_the_sequences_alone_are_published_with_their_graph_and_audited(tmp_path):
    """`--select neighbor_sequences`: Dagster materializes the sequences only, but the lake gets
    the graph they were walked on in the same snapshot (their leak audit reads it)."""
    from assets.neighbors import neighbor_sequences, sequences_well_formed
    from assets.resources import LakeResource, WarehouseResource
    from model.synthetic_data import synthetic_tables
    from warehouse import Lake

    lake = Lake(tmp_path)
    for name, table in synthetic_tables(n_users=20, n_items=30, n_pairs=200, n_attributes=6,
                                        n_triples=40, sequence_length=5, seed=1).items():
        if name not in ("neighbor_sequences", "collaborative_kg"):
            lake.write("ml-100k", name, table)
    assert not lake.exists("ml-100k", "collaborative_kg")
    result = dg.materialize(
        [neighbor_sequences, sequences_well_formed], selection=["neighbor_sequences"],
        partition_key="ml-100k",
        resources={"lake": LakeResource(data_dir=str(tmp_path)),
                   "warehouse": WarehouseResource(data_dir=str(tmp_path))})
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"neighbor_sequences"}
    assert lake.exists("ml-100k", "neighbor_sequences") and lake.exists("ml-100k", "collaborative_kg")
    [check] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert check.passed
