"""Stage 1 — ingest: download the dataset files, parse them, assign ids, split 8:1:1.

Assets (per dataset partition): ``source_files`` → ``users``, ``items``, ``interactions`` →
``split``. Each one reads its inputs from the lake, calls pure functions from ``datasources``,
writes Parquet atomically and reports metadata; the checks in ``assets.checks`` guard the tables.
"""


import hashlib
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from assets.checks import INGEST_AUDITS
from assets.metadata import stats_markdown, table_metadata
from assets.partitions import Stage, dataset_section, datasets_validator
from assets.resources import HttpResource, LakeResource, WarehouseResource
from datasources.assemble import dataset_statistics
from datasources.fetch import FOLDS_OPTION, ResolvedTable, load_dataset, resolve_variant
from datasources.registry import SourceVariant, TableSource, get_dataset
from datasources.split import (
    SPLIT_NAMES,
    STRATEGIES,
    split_cold_items,
    split_interactions,
    split_predefined,
    split_problems,
)

STAGE = Stage(group="ingest", owners=("team:data",))


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
    _datasets_known = datasets_validator()


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
        "never in train, the collaborative KG or the BFS sequences. 'predefined': the source's own "
        "published folds (the interactions table's 'folds' option, e.g. KGAT's train.txt/test.txt): "
        "test = the source's test fold; valid = its valid fold, or else carved per user from its "
        "train fold by the seeded rule with ratios[1]/(ratios[0]+ratios[1]) of it (1/9 for 8:1:1); "
        "ratios[2] is unused.",
    )
    cold_fraction: float = Field(default=0.1, description="Share of cold items (strategy cold_items).")


def configured_variant(dataset: str, config: DatasetSourceConfig) -> SourceVariant:
    """The registry's variant for ``dataset`` with the run config's table overrides applied."""
    variant = get_dataset(dataset).variant(config.variant)
    for role, override in config.tables.items():
        base = variant.tables.get(role)
        fmt = override.format or (base.format if base else None)
        if fmt is None:
            raise ValueError(f"{dataset}: table {role!r} is not in variant {variant.name!r}; give its format")
        locations = tuple(override.locations) or (base.locations if base else ())
        options = {**(dict(base.options) if base else {}), **override.options}
        if (FOLDS_OPTION not in override.options and base is not None
                and len(locations) != len(base.locations)):
            # the declared folds name the declared files, one each: other files (another count)
            # have no declared fold unless the override gives its own
            options.pop(FOLDS_OPTION, None)
        variant = variant.with_table(role, TableSource(fmt, locations, options))
    return variant


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance_table(variant: SourceVariant, resolved: dict[str, ResolvedTable],
                     keep_inactive: bool) -> pd.DataFrame:
    """One row per ingested file: where it came from, where it is, its size and sha256."""
    return pd.DataFrame([
        {
            "role": table.role,
            "format": table.format,
            "location": location,
            "path": str(path),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
            "options_json": json.dumps(table.options, sort_keys=True),
            "variant": variant.name,
            "key_space": variant.key_space,
            "keep_inactive": keep_inactive,
        }
        for table in resolved.values()
        for location, path in zip(table.locations, table.paths, strict=True)
    ])


def read_source_files(frame: pd.DataFrame) -> tuple[dict[str, ResolvedTable], str, bool]:
    """The resolved files, key space and keep_inactive flag recorded in ``source_files``."""
    resolved = {}
    for role, rows in frame.groupby("role", sort=False):
        resolved[role] = ResolvedTable(
            role=role,
            format=rows["format"].iloc[0],
            locations=tuple(rows["location"]),
            paths=tuple(Path(p) for p in rows["path"]),
            options=json.loads(rows["options_json"].iloc[0]),
        )
    return resolved, str(frame["key_space"].iloc[0]), bool(frame["keep_inactive"].iloc[0])


@STAGE.multi_asset(
    name="source_files",
    specs=[
        STAGE.spec("source_files", kinds={"python", "parquet"}, description="Every file of the dataset's source variant, downloaded (or located, offline), checksum-verified and safely extracted: one provenance row per file. Published only together with the tables parsed from it."),
        STAGE.spec("users", deps=["source_files"], kinds={"parquet"}, description="One row per user: user_id (contiguous from 0), user_key (source id), demographics where the source has them."),
        STAGE.spec("items", deps=["source_files"], kinds={"parquet"}, description="One row per item: item_id (contiguous from 0), item_key (source id), title, year, genres."),
        STAGE.spec("interactions", deps=["source_files"], kinds={"parquet"}, description="One row per (user, item) pair: rating and timestamp when the source has them, label for binary feedback."),
    ],
    # any subset: the sources are parsed once and only the selected tables are written (ids are
    # a deterministic function of the source files, so a table written alone agrees with the rest)
    can_subset=True,
)
def dataset_tables(context: dg.AssetExecutionContext, config: IngestConfig, http: HttpResource,
                   lake: LakeResource, warehouse: WarehouseResource):
    """Locate the files, parse them, assign contiguous ids; publish the selected tables at once.

    The provenance (``source_files``) is published in the same lake transaction as the tables
    parsed from it, after their audit: a file that fails to parse, or parses to nothing, leaves
    the previous provenance and tables in place together."""
    dataset = context.partition_key
    store = lake.lake(context.log.info)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    if "source_files" in selected:
        dataset_config = dataset_section(config.datasets, dataset, DatasetSourceConfig())
        variant = configured_variant(dataset, dataset_config)
        context.log.info(f"{dataset}: source variant {variant.name!r}")
        with http.client() as client:
            resolved = resolve_variant(variant, client, lake.cache_dir("extracted"), refresh=config.refresh)
        provenance = provenance_table(variant, resolved, dataset_config.keep_inactive)
        key_space, keep_inactive = variant.key_space, dataset_config.keep_inactive
    else:
        provenance = store.read_pandas(dataset, "source_files")
        resolved, key_space, keep_inactive = read_source_files(provenance)
    assembled = load_dataset(resolved, key_space=key_space, keep_inactive=keep_inactive)
    tables = {"source_files": provenance, "users": assembled.users, "items": assembled.items,
              "interactions": assembled.interactions}
    paths = lake.publish(context, {name: frame for name, frame in tables.items() if name in selected},
                         checks={name: check for name, (table, check) in INGEST_AUDITS.items()
                                 if table in selected})
    warehouse.ensure_views(context.log)
    yield from _ingest_results(dataset, selected, tables, paths, assembled.report, context.log)


def _ingest_results(dataset, selected, tables, paths, ingest_report, log):
    stats = dataset_statistics(len(tables["users"]), len(tables["items"]), len(tables["interactions"]))
    log.info(f"{dataset}: {stats}")
    for warning in ingest_report.get("warnings", []):
        log.warning(f"{dataset}: {warning}")
    if "source_files" in selected:
        frame = tables["source_files"]
        yield dg.MaterializeResult(asset_key="source_files", metadata={
            **table_metadata(frame.drop(columns=["options_json"]), paths["source_files"], sample_rows=10),
            "variant": str(frame["variant"].iloc[0]),
            "total_bytes": int(frame["bytes"].sum()),
        })
    for name in ("users", "items"):
        if name in selected:
            yield dg.MaterializeResult(asset_key=name, metadata=table_metadata(tables[name], paths[name]))
    if "interactions" not in selected:
        return
    interactions = tables["interactions"]
    report = {k: v for k, v in ingest_report.items() if isinstance(v, int)}
    yield dg.MaterializeResult(
        asset_key="interactions",
        metadata={
            **table_metadata(interactions, paths["interactions"]),
            "table_1": stats_markdown(stats, f"{dataset} — Table 1 (interactions)"),
            "ingest_report": stats_markdown(report, "rows dropped / merged while ingesting"),
            "ingest_warnings": dg.MetadataValue.md(
                "\n".join(f"- {w}" for w in ingest_report.get("warnings", [])) or "none"),
            "has_rating": bool(interactions["rating"].notna().any()),
            "has_timestamp": bool(interactions["ts"].notna().any()),
            "has_folds": "fold" in interactions.columns,
            **({"pairs_in_two_folds": int(ingest_report.get("pairs_in_two_folds", 0)),
                **{f"n_fold_{name}": int((interactions["fold"] == name).sum()) for name in SPLIT_NAMES}}
               if "fold" in interactions.columns else {}),
            **{f"stats/{k}": v for k, v in stats.items()},
        },
    )


def positive_mask(interactions: pd.DataFrame, config: SplitConfig) -> np.ndarray:
    """Which interactions count as positive feedback (implicit by default: all of them)."""
    mask = np.ones(len(interactions), dtype=bool)
    if config.min_rating is not None:
        if interactions["rating"].isna().all():
            raise ValueError("min_rating is set but this dataset has no rating values")
        mask &= interactions["rating"].to_numpy(dtype=float, na_value=np.nan) >= config.min_rating
    if config.use_label:
        if interactions["label"].isna().all():
            raise ValueError("use_label is set but this dataset has no label column")
        mask &= interactions["label"].fillna(0).to_numpy() == 1
    return mask


def predefined_folds_missing(dataset: str) -> ValueError:
    return ValueError(
        f"{dataset}: split strategy 'predefined' needs the source's own train/test assignment, but "
        f"the interactions of {dataset!r} declare no fold. Declare it on the interactions table of "
        f"the dataset file (configs/datasets/{dataset}.yaml, variant tables.interactions) or in the "
        f"run config's source_files tables override: options: {{{FOLDS_OPTION}: \"train,test\"}}, one "
        "fold (train, valid or test) per location, in order; then materialize interactions again. "
        "Or use strategy 'random'.")


@STAGE.asset(
    kinds={"parquet"},
    deps=["interactions"],
    description="Per-user random 8:1:1 train/valid/test split of the positive interactions (the paper's "
    "protocol), seeded and deterministic across runs and machines (RecBole's size rule for small users); "
    "or a strict item cold start split, or the source's own published folds (strategy predefined).",
)
def split(context: dg.AssetExecutionContext, config: SplitConfig, lake: LakeResource,
          warehouse: WarehouseResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    if config.strategy not in STRATEGIES:
        raise ValueError(f"split strategy must be one of {STRATEGIES}, got {config.strategy!r}")
    columns = ["user_id", "item_id", "rating", "label"]
    snapshot = lake.lake().snapshot(dataset)  # one snapshot: the folds belong to these rows
    try:
        interactions = snapshot.read_pandas("interactions", [*columns, "fold"])
    except pa.ArrowInvalid:  # no fold column: the source declared no fold
        interactions = snapshot.read_pandas("interactions", columns).assign(fold=None)
    folds = interactions["fold"]
    if config.strategy == "predefined" and not folds.notna().any():
        raise predefined_folds_missing(dataset)
    mask = positive_mask(interactions, config)
    positives = interactions[mask]
    users, items = positives["user_id"].to_numpy(), positives["item_id"].to_numpy()
    if config.strategy == "cold_items":
        parts = split_cold_items(users, items, config.ratios, config.seed, config.cold_fraction)
    elif config.strategy == "predefined":
        try:
            parts = split_predefined(users, items, folds.to_numpy()[mask], config.ratios, config.seed,
                                     config.size_rule)
        except ValueError as exc:
            raise ValueError(f"{dataset}: split strategy 'predefined': {exc}") from exc
    else:
        parts = split_interactions(users, items, config.ratios, config.seed, config.size_rule)
    frame = pd.DataFrame(
        {
            "user_id": positives["user_id"].to_numpy(),
            "item_id": positives["item_id"].to_numpy(),
            "split": pd.Categorical.from_codes(parts, categories=list(SPLIT_NAMES)).astype(str),
        }
    )
    # the blocking check, before publish, with this split's own ratios (a predefined split is
    # recognised by its test pairs being exactly the declared test fold: split_problems)
    audit = {"split_leak_free_and_balanced": lambda tx: split_problems(
        tx, config.ratios, size_rule=config.size_rule)[0]}
    path = lake.publish(context, {"split": frame}, checks=audit)["split"]
    warehouse.ensure_views(context.log)
    counts = frame["split"].value_counts().reindex(list(SPLIT_NAMES), fill_value=0)
    ratios = {f"share_{k}": float(v / max(len(frame), 1)) for k, v in counts.items()}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(frame, path),
            **{f"n_{k}": int(v) for k, v in counts.items()},
            **ratios,
            "positives_of_interactions": float(len(frame) / max(len(interactions), 1)),
            "split_ratios": stats_markdown({**{f"n_{k}": int(v) for k, v in counts.items()}, **ratios}, "split"),
            "seed": config.seed,
            "strategy": config.strategy,
            # what the split's blocking check compares the shares with (assets.checks)
            "ratios": dg.MetadataValue.json(list(config.ratios)),
            "size_rule": config.size_rule,
            **({"n_cold_items": int(frame.loc[frame["split"] != "train", "item_id"].nunique())}
               if config.strategy == "cold_items" else {}),
            **(_predefined_metadata(folds.to_numpy()[mask], parts, config.ratios)
               if config.strategy == "predefined" else {}),
        }
    )


def _predefined_metadata(folds: np.ndarray, parts: np.ndarray, ratios: list[float]) -> dict:
    """What a predefined split took from the source and what it carved."""
    train_fold = folds == "train"
    published_valid = bool((folds == "valid").any())
    return {
        **{f"n_fold_{name}": int((folds == name).sum()) for name in SPLIT_NAMES},
        "valid_from": "the source's valid fold" if published_valid else
        f"carved per user from the train fold, ratio {ratios[1]:g}/({ratios[0]:g}+{ratios[1]:g})",
        "valid_share_of_train_fold": float((parts[train_fold] == 1).mean()) if train_fold.any() else 0.0,
    }
