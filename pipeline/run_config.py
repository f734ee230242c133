"""One run-config file for every job: keep the parts that the chosen job runs.

Dagster refuses run config for ops a job does not contain, so the shared
``configs/offline.yaml`` (which configures every stage) could only drive the ``main`` job.
This merges the given YAML files (later files override earlier ones, key by key) and drops the
``ops`` entries that are not in the job, so that ``make run JOB=kg CONFIG=configs/offline.yaml``
works like ``JOB=main``::

    python -m pipeline.run_config --job kg configs/offline.yaml [more.yaml ...] > run.yaml
    python -m pipeline.run_config --select '*neighbor_sequences' configs/offline.yaml > sel.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``; nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_configs(paths: list[str]) -> dict:
    merged: dict = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a run config must be a mapping, got {type(loaded).__name__}")
        merged = deep_merge(merged, loaded)
    return merged


def for_nodes(config: dict, nodes: set[str]) -> dict:
    """The config with only the ``ops`` entries of the given op names."""
    ops = {name: value for name, value in (config.get("ops") or {}).items() if name in nodes}
    return {**{k: v for k, v in config.items() if k != "ops"}, **({"ops": ops} if ops else {})}


def job_nodes(job_name: str | None = None, selection: str | None = None) -> set[str]:
    """Op names of a job, or of the job an asset selection (``*neighbor_sequences``) makes."""
    import dagster as dg

    from pipeline.definitions import defs  # the code location: only here, it is slow to import

    if selection is not None:
        probe = dg.define_asset_job("__run_config_selection", selection=selection)
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[probe]))
        job_name = probe.name
    return {node.name for node in defs.resolve_job_def(job_name).graph.nodes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--job", help="a job of the code location (main, kg, ...)")
    target.add_argument("--select", help="an asset selection, as `dagster asset materialize "
                        "--select` takes it")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    try:
        config = load_configs(args.files)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump(for_nodes(config, job_nodes(args.job, args.select)), sys.stdout,
                   sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
