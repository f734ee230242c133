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
from datasources.split import split_problems
from datasources.validate import check_id_table, check_pairs

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
    """Run config of the split check, under ``ops: split_split_leak_free_and_balanced: config:``.

    The check compares the published split with the ``ratios`` and ``size_rule`` the split was
    built with (:func:`split_built_with`), as its pre-publish audit does, so a run with
    non-default ratios or ``size_rule: recbole`` is checked against what it asked for. Only
    ``tolerance`` is the check's own; ``ratios``/``size_rule`` here override what the split was
    built with (to check a split against another target), and are best left unset."""

    tolerance: float = Field(default=0.01, description="Allowed share deviation (0.01 = 1 point).")
    ratios: list[float] | None = Field(
        default=None, description="Override of the split's ratios (default: those it was built with).")
    size_rule: str | None = Field(
        default=None, description="Override of the split's size_rule (default: the one it was built with).")


def split_built_with(context: dg.AssetCheckExecutionContext) -> tuple[list[float], str, str]:
    """The ``ratios`` and ``size_rule`` the published split was built with, and where they
    were read: the latest materialization of ``split`` in this partition — its metadata where
    it records them, else the ``ops: split: config`` of the run that wrote it (``SplitConfig``'s
    defaults for what that config leaves out). The audit refuses a split before publish, so the
    latest materialization is the published one. Without a recorded materialization (a lake
    written through another Dagster instance) ``SplitConfig``'s defaults, said in the log."""
    from assets.ingest import SplitConfig  # assets.ingest imports this module

    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("split"), asset_partitions=[context.partition_key]),
        limit=1).records
    if not records:
        built = SplitConfig()
        return list(built.ratios), built.size_rule, ("SplitConfig's defaults: this instance "
                                                     "recorded no materialization of split")
    record = records[0]
    metadata = record.asset_materialization.metadata if record.asset_materialization else {}
    if "ratios" in metadata and "size_rule" in metadata:
        return ([float(r) for r in metadata["ratios"].value], str(metadata["size_rule"].value),
                f"the metadata of split's materialization in run {record.run_id}")
    run = context.instance.get_run_by_id(record.run_id)
    ops = (run.run_config if run is not None else {}).get("ops") or {}
    given = (ops.get("split") or {}).get("config") or {}
    built = SplitConfig(**{k: v for k, v in given.items() if k in SplitConfig.model_fields})
    return list(built.ratios), built.size_rule, f"the run config of run {record.run_id}, which built split"


@dg.asset_check(asset="split", blocking=True,
                description="Leak-free (no pair in two parts) and the overall train/valid/test shares "
                "within `tolerance` (1 point) of what the ratios and size_rule the split was built with "
                "give these users (8:1:1 by default); a cold-item or predefined split is recognised by "
                "its layout. Run config key: split_split_leak_free_and_balanced (SplitCheckConfig).")
def split_leak_free_and_balanced(context: dg.AssetCheckExecutionContext, config: SplitCheckConfig,
                                 lake: LakeResource) -> dg.AssetCheckResult:
    ratios, size_rule, source = split_built_with(context)
    ratios = list(config.ratios) if config.ratios is not None else ratios
    size_rule = config.size_rule if config.size_rule is not None else size_rule
    context.log.info(f"split check: ratios {ratios}, size_rule {size_rule!r} (from {source}"
                     f"{'; overridden by the check config' if config.ratios or config.size_rule else ''})")
    problems, shares = split_problems(published(context, lake), ratios, config.tolerance, size_rule)
    return check_result(problems, **{f"share_{k}": v for k, v in shares.items()},
                        ratios=dg.MetadataValue.json(ratios), size_rule=size_rule,
                        built_with=source)


INGEST_CHECKS = [users_keys_unique, items_keys_unique, interactions_valid, split_leak_free_and_balanced]
