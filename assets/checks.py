"""Blocking asset checks for the ingest tables: bad data here would poison every later stage."""


import dagster as dg
from pydantic import Field

from assets.metadata import check_result
from assets.resources import LakeResource
from datasources.validate import check_id_table, check_pairs, check_split


@dg.asset_check(asset="users", blocking=True, description="user_id contiguous and unique; user_key unique; no nulls.")
def users_keys_unique(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    frame = lake.lake().read_pandas(context.partition_key, "users")
    return check_result(check_id_table(frame, "user_id", "user_key"), rows=len(frame))


@dg.asset_check(asset="items", blocking=True, description="item_id contiguous and unique; item_key unique; no nulls.")
def items_keys_unique(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    frame = lake.lake().read_pandas(context.partition_key, "items")
    return check_result(check_id_table(frame, "item_id", "item_key"), rows=len(frame))


@dg.asset_check(asset="interactions", blocking=True, description="No null ids, ids in range, (user, item) unique.")
def interactions_valid(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    store, dataset = lake.lake(), context.partition_key
    n_users = store.read(dataset, "users", ["user_id"]).num_rows
    n_items = store.read(dataset, "items", ["item_id"]).num_rows
    frame = store.read_pandas(dataset, "interactions", ["user_id", "item_id"])
    return check_result(check_pairs(frame, n_users, n_items), rows=len(frame))


class SplitCheckConfig(dg.Config):
    ratios: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    tolerance: float = 0.01


@dg.asset_check(asset="split", blocking=True,
                description="Leak-free (no pair in two parts) and within 1 point of 8:1:1 overall.")
def split_leak_free_and_balanced(context: dg.AssetCheckExecutionContext, config: SplitCheckConfig,
                                 lake: LakeResource) -> dg.AssetCheckResult:
    frame = lake.lake().read_pandas(context.partition_key, "split")
    problems, shares = check_split(frame, config.ratios, config.tolerance)
    return check_result(problems, **{f"share_{k}": v for k, v in shares.items()})


INGEST_CHECKS = [users_keys_unique, items_keys_unique, interactions_valid, split_leak_free_and_balanced]
