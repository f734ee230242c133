"""pipeline/run_config.py: one shared run-config file drives every stage job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.run_config import for_nodes, load_configs

ROOT = Path(__file__).resolve().parents[1]


def test_later_files_override_key_by_key(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("ops:\n  trained_model:\n    config: {variant: full, epochs: 5}\n")
    second.write_text("ops:\n  trained_model:\n    config: {epochs: 9}\n")
    merged = load_configs([str(first), str(second)])
    assert merged["ops"]["trained_model"]["config"] == {"variant": "full", "epochs": 9}


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        load_configs([str(bad)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a run config must be a mapping"):
        load_configs([str(listed)])


def test_the_offline_config_is_cut_to_each_stage_job():
    config = load_configs([str(ROOT / "configs" / "offline.yaml")])
    kg = for_nodes(config, {"knowledge_graph", "kg_triples_kg_ids_valid"})
    assert set(kg["ops"]) == {"knowledge_graph"}
    assert for_nodes(config, {"split"}) == {"execution": {"config": {"in_process": {}}}}  # kept


def test_cli_output_is_accepted_by_the_kg_job():
    out = subprocess.run([sys.executable, "-m", "pipeline.run_config", "--job", "kg",
                          str(ROOT / "configs" / "offline.yaml")],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    config = yaml.safe_load(out)
    assert set(config["ops"]) == {"knowledge_graph"}
    from pipeline.definitions import defs

    job = defs.resolve_job_def("kg")
    assert job.run_config_schema.config_type is not None
    from dagster._config import process_config

    result = process_config(job.run_config_schema.config_type, config)
    assert result.success, result.errors
    assert not process_config(job.run_config_schema.config_type,
                              load_configs([str(ROOT / "configs" / "offline.yaml")])).success


def test_an_asset_selection_gets_the_config_of_its_ops():
    from pipeline.run_config import job_nodes

    nodes = job_nodes(selection="*neighbor_sequences")
    assert {"source_files", "split", "knowledge_graph",
            "neighbor_sequences"} <= nodes
    config = for_nodes(load_configs([str(ROOT / "configs" / "offline.yaml")]), nodes)
    assert set(config["ops"]) == {"source_files", "knowledge_graph"}
