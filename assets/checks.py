"""Blocking checks: each one is a function of a table reader, run twice.

* **before publish** (the audit of write–audit–publish): the asset hands its checks to
  ``LakeResource.publish``, which runs them on the staged tables (``LakeTransaction``); a
  problem stops the publish, so bad data never replaces the last good snapshot;
* **after publish**, as Dagster asset checks on the published snapshot: what the UI shows, and
  what keeps downstream steps from running on a failure.

A check function takes anything with ``read(table, columns)`` / ``read_pandas(table, columns)``
(``warehouse.lake.Snapshot`` and ``LakeTransaction`` both do) and returns its problems.
"""

from collections.abc import Callable

import dagster as dg
from pydantic import Field

from assets.metadata import check_result
from assets.resources import LakeResource
from datasources.validate import check_id_table, check_pairs, check_split

Check = Callable[[object], list[str]]


def users_problems(tables) -> list[str]:
    return check_id_table(tables.read_pandas("users"), "user_id", "user_key")


def items_problems(tables) -> list[str]:
    return check_id_table(tables.read_pandas("items"), "item_id", "item_key")


def interactions_problems(tables) -> list[str]:
    return check_pairs(tables.read_pandas("interactions", ["user_id", "item_id"]),
                       tables.read("users", ["user_id"]).num_rows,
                       tables.read("items", ["item_id"]).num_rows)


#: The ingest tables' checks, by the name of their Dagster asset check.
INGEST_AUDITS: dict[str, tuple[str, Check]] = {
    "users_keys_unique": ("users", users_problems),
    "items_keys_unique": ("items", items_problems),
    "interactions_valid": ("interactions", interactions_problems),
}


def published(context: dg.AssetCheckExecutionContext, lake: LakeResource):
    """The published snapshot of the check's partition."""
    return lake.lake().snapshot(context.partition_key)


@dg.asset_check(asset="users", blocking=True, description="user_id contiguous and unique; user_key unique; no nulls.")
def users_keys_unique(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(users_problems(published(context, lake)))


@dg.asset_check(asset="items", blocking=True, description="item_id contiguous and unique; item_key unique; no nulls.")
def items_keys_unique(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(items_problems(published(context, lake)))


@dg.asset_check(asset="interactions", blocking=True, description="No null ids, ids in range, (user, item) unique.")
def interactions_valid(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(interactions_problems(published(context, lake)))


class SplitCheckConfig(dg.Config):
    """Run config key ``split_split_leak_free_and_balanced``: what the split must look like.
    The shares are compared with what ``size_rule`` gives the users' pair counts (users with
    one or two positives cannot be split 8:1:1), within ``tolerance``."""

    ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    tolerance: float = Field(default=0.01, description="Allowed share deviation (0.01 = 1 point).")
    size_rule: str = Field(default="unbiased", description="The split's size_rule (SplitConfig).")


@dg.asset_check(asset="split", blocking=True,
                description="Leak-free (no pair in two parts) and within 1 point of 8:1:1 overall.")
def split_leak_free_and_balanced(context: dg.AssetCheckExecutionContext, config: SplitCheckConfig,
                                 lake: LakeResource) -> dg.AssetCheckResult:
    frame = published(context, lake).read_pandas("split")
    problems, shares = check_split(frame, config.ratios, config.tolerance, config.size_rule)
    return check_result(problems, **{f"share_{k}": v for k, v in shares.items()})


INGEST_CHECKS = [users_keys_unique, items_keys_unique, interactions_valid, split_leak_free_and_balanced]
