"""Stage 2 — knowledge graph: link items to Freebase-style entities and build the triples.

One multi-asset writes ``item_links``, ``entities``, ``relations``, ``kg_triples`` and the
Table-1 block ``kg_stats`` together (they share one id space, so they are built and written as a
unit). Sources are composable readers (``datasources.kg.sources``); the merge, id mapping and
cleaning are ``datasources.kg.build``. Optionally, triples are fetched from Wikidata by the
items' Freebase MIDs (P646) — the way to rebuild a paper-style Freebase KG now that Freebase
itself is gone.
"""

import json
import re

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.checks import published
from assets.config_schema import config_fields, to_settings
from assets.metadata import check_result, stats_markdown, table_metadata
from assets.partitions import Stage, dataset_section, datasets_validator
from assets.resources import HttpResource, LakeResource, WarehouseResource
from datasources.fetch import resolve_location
from datasources.kg.build import KGBuildOptions, build_kg, validate_kg
from datasources.kg.sources import DEFAULT_KG_SOURCES, KGSource, load_kg_sources

STAGE = Stage(group="kg", owners=("team:data",))
KG_TABLES = ("item_links", "entities", "relations", "kg_triples", "kg_stats")
#: The tables of one KG build whose ids refer to each other (kg_stats only summarises them).
BUILD_TABLES = frozenset(KG_TABLES[:4])


class KGSourceConfig(dg.Config):
    name: str = Field(description="Label of the source in the statistics (e.g. kb4rec, satori, omdb).")
    kind: str = Field(description="Reader kind, e.g. links.kb4rec, triples.mkr, meta.omdb (see datasources.kg.sources).")
    locations: list[str] = Field(default_factory=list, description="Files it reads: paths, file:// or http(s) URLs.")
    options: dict[str, str] = Field(default_factory=dict, description="Options of the *.table kinds: "
                                    "column names and key namespaces (datasources.kg.generic).")


class KGDatasetConfig(config_fields(KGBuildOptions, dg.Config)):
    """Per dataset partition: the sources, the cleaning of ``KGBuildOptions``, and Wikidata."""

    sources: list[KGSourceConfig] | None = Field(
        default=None, description="Sources to merge, in priority order; default: the registry's upstream files."
    )
    wikidata: bool = Field(default=False, description="Also fetch triples from Wikidata by the items' Freebase MIDs (online).")
    wikidata_domain: str = Field(default="film", description="Property set for Wikidata: 'film' or 'book'.")
    wikidata_endpoint: str = "https://query.wikidata.org/sparql"
    wikidata_batch_size: int = 200
    wikidata_min_interval_s: float = 1.0


class KGConfig(dg.Config):
    """Stage 2 — which KG sources each dataset merges and how the graph is cleaned."""

    datasets: dict[str, KGDatasetConfig] = Field(default_factory=dict)
    refresh: bool = Field(default=False, description="Download sources again even when cached.")
    _datasets_known = datasets_validator()


def _configured_sources(dataset: str, config: KGDatasetConfig) -> list[KGSource]:
    if config.sources is None:
        return list(DEFAULT_KG_SOURCES.get(dataset, ()))
    return [KGSource(s.name, s.kind, tuple(s.locations), dict(s.options)) for s in config.sources]


def leaked_interactions(entities: pd.DataFrame, relations: pd.DataFrame, user_keys: pd.Series) -> list[str]:
    """Signs that user–item interactions were encoded in the KG (which would leak valid/test).

    The KG holds items and their attributes only; interactions enter the model from the train
    split alone. A user as an entity, or an interaction-like relation, means a source file
    carried interactions (some KGAT-derived releases do).
    """
    problems = []
    keys = set(entities["entity_key"].astype(str))
    users = set(user_keys.astype(str))
    user_entities = keys & (users | {f"user:{u}" for u in users})
    if user_entities:
        problems.append(f"{len(user_entities)} users appear as KG entities (e.g. {sorted(user_entities)[0]!r})")
    interaction_like = relations["relation_key"].astype(str).str.contains(r"\binteract|user\b", flags=re.I, regex=True)
    if interaction_like.any():
        problems.append(f"interaction-like relations: {relations['relation_key'][interaction_like].tolist()[:5]}")
    return problems


@STAGE.multi_asset(
    specs=[
        STAGE.spec("item_links", deps=["items"], kinds={"parquet"}, description="Item → entity links (Freebase MIDs, Satori ids, ...) with the source that gave each."),
        STAGE.spec("entities", deps=["items"], kinds={"parquet"}, description="All KG entities, ITEMS FIRST (entity_id = item_id), then attributes: key, readable name, kind."),
        STAGE.spec("relations", deps=["items"], kinds={"parquet"}, description="Relation vocabulary with triple counts."),
        STAGE.spec("kg_triples", deps=["items"], kinds={"parquet"}, description="Deduplicated (head_id, relation_id, tail_id) triples over entity ids, with their source."),
        STAGE.spec("kg_stats", deps=["items"], kinds={"parquet"}, description="The paper's Table 1 for the KG: #entities, #relations, #triplets, share of items linked — overall and per source."),
    ],
    # any subset: the KG is built once; kg_stats alone, or the four KG tables together (see below)
    can_subset=True,
)
def knowledge_graph(context: dg.AssetExecutionContext, config: KGConfig, http: HttpResource,
                    lake: LakeResource, warehouse: WarehouseResource):
    dataset = context.partition_key
    settings = dataset_section(config.datasets, dataset, KGDatasetConfig())
    sources = _configured_sources(dataset, settings)
    store = lake.lake()
    items = store.read_pandas(dataset, "items")
    extract_root = lake.cache_dir("extracted")

    with http.client() as client:
        inputs = load_kg_sources(sources, lambda loc: resolve_location(loc, client, extract_root, config.refresh), items)
        if settings.wikidata:
            from datasources.kg.wikidata import BOOK_PROPERTIES, FILM_PROPERTIES, WikidataClient

            properties = BOOK_PROPERTIES if settings.wikidata_domain == "book" else FILM_PROPERTIES
            wikidata = WikidataClient(client, endpoint=settings.wikidata_endpoint, batch_size=settings.wikidata_batch_size,
                                      min_interval_s=settings.wikidata_min_interval_s, cache_dir=lake.cache_dir("wikidata"))
            inputs.triple_sources.append(("wikidata", wikidata.triples_for_mids(inputs.linked_mids(), properties)))

    options = to_settings(KGBuildOptions, settings)
    result = build_kg(items, inputs.links, inputs.triple_sources, inputs.merged_names(), inputs.merged_types(), options)
    table1 = result.table1()
    table1.insert(0, "dataset", dataset)
    tables = {
        "item_links": result.item_links,
        "entities": result.entities,
        "relations": result.relations,
        "kg_triples": result.kg_triples,
        "kg_stats": table1.drop(columns=["dataset"]),
    }
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    # The four KG tables are one build whose ids refer to each other, and the blocking audits
    # read them together: publishing part of them would pair new ids with an older build (or,
    # on a fresh lake, leave the audit nothing to read). So a selection that names any of them
    # publishes all four; only the selected ones are reported to Dagster.
    written = selected | BUILD_TABLES if BUILD_TABLES & selected else selected
    if written != selected:
        context.log.info(f"{dataset}: also publishing {', '.join(sorted(written - selected))} "
                         "with the selected KG tables (one build, audited together)")
    paths = lake.publish(context, {name: frame for name, frame in tables.items() if name in written},
                         checks=KG_AUDITS if BUILD_TABLES & selected else None)
    warehouse.ensure_views(context.log)

    overall = result.stats["overall"]
    context.log.info(f"{dataset} KG: {overall}")
    for name in ("item_links", "entities", "relations"):
        if name in selected:
            yield dg.MaterializeResult(asset_key=name, metadata=table_metadata(tables[name], paths[name]))
    if "kg_triples" in selected:
        yield dg.MaterializeResult(
            asset_key="kg_triples",
            metadata={
                **table_metadata(tables["kg_triples"], paths["kg_triples"]),
                "table_1": stats_markdown(overall, f"{dataset} — Table 1 (knowledge graph)"),
                "build_options": dg.MetadataValue.json(options.__dict__),
                "dropped": dg.MetadataValue.json(result.stats.get("dropped", {})),
                "links": dg.MetadataValue.json(result.stats.get("links", {})),
                "sources": dg.MetadataValue.json([s.__dict__ | {"locations": list(s.locations)} for s in sources]),
                **{f"stats/{k}": v for k, v in overall.items() if isinstance(v, int | float)},
            },
        )
    if "kg_stats" in selected:
        yield dg.MaterializeResult(
            asset_key="kg_stats",
            metadata={
                **table_metadata(tables["kg_stats"], paths["kg_stats"], sample_rows=20),
                "stats_json": dg.MetadataValue.json(json.loads(json.dumps(result.stats, default=str))),
            },
        )



def kg_ids_problems(tables) -> list[str]:
    from datasources.kg.build import KGResult

    result = KGResult(*(tables.read_pandas(t) for t in ("item_links", "entities", "relations", "kg_triples")))
    return validate_kg(result, tables.read("items", ["item_id"]).num_rows)


def kg_interaction_problems(tables) -> list[str]:
    return leaked_interactions(
        tables.read_pandas("entities", ["entity_key"]),
        tables.read_pandas("relations", ["relation_key"]),
        tables.read_pandas("users", ["user_key"])["user_key"],
    )


#: Run on the staged tables before they are published (assets.checks) and as asset checks.
KG_AUDITS = {"kg_ids_valid": kg_ids_problems, "kg_holds_no_interactions": kg_interaction_problems}


@dg.asset_check(asset="kg_triples", blocking=True,
                description="Every triple's ids exist in entities/relations; items-first ids; no duplicates or self-loops.")
def kg_ids_valid(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(kg_ids_problems(published(context, lake)))


@dg.asset_check(asset="kg_triples", blocking=True,
                description="No user–item interaction (so no valid/test pair) is encoded in the KG.")
def kg_holds_no_interactions(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_result(kg_interaction_problems(published(context, lake)))


KG_CHECKS = [kg_ids_valid, kg_holds_no_interactions]
