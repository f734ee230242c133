"""Datasets are the partitions of every asset: one lake directory and one warehouse slice each.

:class:`Stage` is the wiring every asset of a stage shares — the dataset partitions, the
stage's group (one job per group, see ``pipeline.definitions``) and its owners — so an asset's
decorator says only what is particular to it.
"""

import difflib
from dataclasses import dataclass

import dagster as dg
from pydantic import field_validator

from datasources.registry import DATASET_NAMES

dataset_partitions = dg.StaticPartitionsDefinition(list(DATASET_NAMES))


def _known_dataset_keys(cls, datasets: dict) -> dict:
    """A run config's per-dataset section must name a partition: ``ml100k:`` would otherwise be
    ignored without a word and the run would quietly use the defaults (the online source)."""
    for key in datasets:
        if key not in DATASET_NAMES:
            close = difflib.get_close_matches(key, DATASET_NAMES, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"datasets: {key!r} is not a dataset partition{hint}; "
                             f"the partitions are {', '.join(DATASET_NAMES)}")
    return datasets


def dataset_section(datasets: dict, partition: str, default):
    """The run config's section for this run's partition.

    A ``datasets`` mapping that names other partitions but not this one is an error, not a
    fallback to the defaults: ``datasets: {mydata: ...}`` with a run for ``ml-100k`` would
    otherwise quietly ingest ml-100k from its online source."""
    if partition in datasets:
        return datasets[partition]
    if datasets:
        raise ValueError(f"this run is for partition {partition!r}, but the run config's "
                         f"datasets section only has {', '.join(sorted(datasets))}: add a "
                         f"{partition!r} entry (an empty one keeps the defaults) or run the "
                         "partition the config is for")
    return default


def datasets_validator():
    """The validator a stage config with a ``datasets`` field declares (one line per config)."""
    return field_validator("datasets")(_known_dataset_keys)


@dataclass(frozen=True)
class Stage:
    group: str
    owners: tuple[str, ...]

    def asset(self, **kwargs):
        """``@dg.asset`` of this stage, partitioned by dataset."""
        return dg.asset(partitions_def=dataset_partitions, group_name=self.group,
                        owners=list(self.owners), **kwargs)

    def multi_asset(self, **kwargs):
        """``@dg.multi_asset`` of this stage's :meth:`spec` s, partitioned by dataset."""
        return dg.multi_asset(partitions_def=dataset_partitions, **kwargs)

    def spec(self, key: str, **kwargs) -> dg.AssetSpec:
        """One table of a multi-asset; skippable: a subset run yields only what is selected."""
        return dg.AssetSpec(key, group_name=self.group, owners=list(self.owners), skippable=True,
                            **kwargs)
