"""Run configuration, one ``dg.Config`` per stage. Run-config YAML examples live in ``configs/``.

Configs are written so that ONE file works for every dataset partition: per-dataset settings are
maps keyed by the partition name, and the running partition picks its entry.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class TableOverride(dg.Config):
    """Read one table role from somewhere else than the registry says."""

    locations: list[str] = Field(
        default_factory=list,
        description="Local paths, file:// or http(s) URLs (archive members as '<zip>!/<member>'), "
        "read in order and concatenated. Relative paths are relative to the working directory.",
    )
    format: str | None = Field(default=None, description="Parser name; default: the registry's.")
    options: dict[str, str] = Field(default_factory=dict, description="Parser options (e.g. TSV columns).")


class DatasetSourceConfig(dg.Config):
    variant: str | None = Field(default=None, description="Source variant in the registry; default: the dataset's default.")
    tables: dict[str, TableOverride] = Field(
        default_factory=dict, description="Per table role (interactions, items, users): where to read it instead."
    )
    keep_inactive: bool = Field(default=False, description="Keep catalogue items/users without interactions.")


class IngestConfig(dg.Config):
    """Stage 1 — where each dataset's files come from."""

    datasets: dict[str, DatasetSourceConfig] = Field(
        default_factory=dict, description="Settings per dataset partition (ml-100k, ml-1m, amazon-book)."
    )
    refresh: bool = Field(default=False, description="Download again even when a verified cached copy exists.")


class SplitConfig(dg.Config):
    """The train/valid/test split (the paper's 8:1:1 per user)."""

    ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 2020
    size_rule: str = Field(
        default="unbiased",
        description="'unbiased' (stochastic rounding: dataset-wide shares match the ratios) or "
        "'recbole' (RecBole's split_by_ratio rule, for like-for-like comparisons with RecBole).",
    )
    min_rating: float | None = Field(
        default=None, description="Only ratings >= this count as positives (default: implicit, all count)."
    )
    use_label: bool = Field(default=False, description="Only rows with label == 1 count as positives.")
    strategy: str = Field(
        default="random",
        description="'random': the paper's per-user 8:1:1 split. 'cold_items': strict item cold start — "
        "a seeded cold_fraction of the items has all its pairs in valid/test (ratio valid:test), "
        "never in train, the collaborative KG or the BFS sequences.",
    )
    cold_fraction: float = Field(default=0.1, description="Share of cold items (strategy cold_items).")
