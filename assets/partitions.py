"""Datasets are the partitions of every asset: one lake directory and one warehouse slice each.

:class:`Stage` is the wiring every asset of a stage shares — the dataset partitions, the
stage's group (one job per group, see ``pipeline.definitions``) and its owners — so an asset's
decorator says only what is particular to it.
"""

from dataclasses import dataclass

import dagster as dg

from datasources.registry import DATASET_NAMES

dataset_partitions = dg.StaticPartitionsDefinition(list(DATASET_NAMES))


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
