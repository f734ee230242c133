"""Datasets are the partitions of every asset: one lake directory and one warehouse slice each."""

import dagster as dg

from datasources.registry import DATASET_NAMES

dataset_partitions = dg.StaticPartitionsDefinition(list(DATASET_NAMES))
