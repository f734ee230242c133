"""Stages 3–4 in item chunks: posters, texts and their vectors as ``dataset × item_chunk``.

For a catalogue many times ML-1M, ``item_media`` (network-bound) and ``clip_features``
(encoder-bound) are the long steps, and both are independent per item. These two assets do the
same work for one chunk of items each (``warehouse.chunks``: a stable hash of the item key, the
number of chunks from ``$KG4REC_ITEM_CHUNKS``, default 8, read when the code location loads):

* ``item_media_chunk`` — the media chain for the chunk's items → one chunk file;
* ``clip_features_chunk`` — the encoders over that chunk's media and its entities (items by their
  item's chunk, attribute entities by the hash of their key) → one chunk file.

Each chunk is independent, idempotent (atomic writes; the image store is content-addressed and
the fetch cache and the feature reuse make a re-run cheap) and retryable, so a backfill over the
chunks can run on the multiprocess executor here, or — the same definitions, unchanged — on
``k8s_job_executor`` / ``celery_executor`` (deploy/). The dataset-level ``item_media`` and
``clip_features`` then publish the union (their ``from_chunks`` config), audited like any table,
and everything downstream reads the lake as before.
"""


import os
import warnings

import dagster as dg
import numpy as np

from assets.features import TABLE, EncoderResource, FeaturesConfig, encode_contents
from assets.media import MediaConfig, collect_media
from assets.partitions import dataset_partitions
from assets.resources import HttpResource, LakeResource
from datasources.media import media_table
from warehouse.chunks import DEFAULT_CHUNKS, ChunkStore, chunk_names, entity_chunks, item_chunk

CHUNKS_ENV = "KG4REC_ITEM_CHUNKS"
N_CHUNKS = int(os.environ.get(CHUNKS_ENV, DEFAULT_CHUNKS))
item_chunks = dg.StaticPartitionsDefinition(chunk_names(N_CHUNKS))
dataset_item_chunks = dg.MultiPartitionsDefinition({"dataset": dataset_partitions, "item_chunk": item_chunks})
#: a chunk reads its whole dataset's upstream tables; a dataset-level asset reads all its chunks
with warnings.catch_warnings():  # a beta class: said once here, not on every CLI command
    warnings.simplefilter("ignore", dg.BetaWarning)
    BY_DATASET = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="dataset")
GROUP, OWNERS = "chunks", ["team:data"]


def chunk_of(context: dg.AssetExecutionContext) -> tuple[str, int]:
    keys = dataset_item_chunks.get_partition_key_from_str(str(context.partition_key)).keys_by_dimension
    return keys["dataset"], chunk_names(N_CHUNKS).index(keys["item_chunk"])


@dg.asset(
    partitions_def=dataset_item_chunks, group_name=GROUP, owners=OWNERS, kinds={"python", "parquet"},
    deps=[dg.AssetDep("items", partition_mapping=BY_DATASET)],
    description="item_media for one chunk of items (a stable hash of item_key); "
    "item_media with from_chunks publishes the union.",
)
def item_media_chunk(context: dg.AssetExecutionContext, config: MediaConfig, http: HttpResource,
                     lake: LakeResource) -> dg.MaterializeResult:
    dataset, chunk = chunk_of(context)
    items = lake.lake().read_pandas(dataset, "items")
    mine = items[item_chunk(items["item_key"].astype(str), N_CHUNKS) == chunk]
    table = media_table(collect_media(context, config, http, lake, dataset, mine).frame)
    path = ChunkStore(lake.root).write(dataset, "item_media", N_CHUNKS, chunk, table,
                                       covers=mine["item_key"].astype(str))
    posters = int(np.sum(np.asarray(table.column("poster_status").to_pylist()) == "ok"))
    return dg.MaterializeResult(metadata={"dagster/row_count": table.num_rows, "path": dg.MetadataValue.path(str(path)),
                                          "items": len(mine), "posters_ok": posters})


@dg.asset(
    partitions_def=dataset_item_chunks, group_name=GROUP, owners=OWNERS, kinds={"pytorch", "parquet"},
    deps=[item_media_chunk, dg.AssetDep("entities", partition_mapping=BY_DATASET)],
    description="clip_features for one chunk: its items' posters and texts, and the attribute "
    "entities that hash to it; clip_features with from_chunks publishes the union.",
)
def clip_features_chunk(context: dg.AssetExecutionContext, config: FeaturesConfig,
                        encoder: EncoderResource, lake: LakeResource) -> dg.MaterializeResult:
    dataset, chunk = chunk_of(context)
    store, chunks = lake.lake(), ChunkStore(lake.root)
    entities = store.read_pandas(dataset, "entities", ["entity_id", "entity_key", "name", "kind"])
    items = store.read_pandas(dataset, "items", ["item_id", "item_key"])
    mine = entities[entity_chunks(entities, items, N_CHUNKS) == chunk]
    media = chunks.read(dataset, "item_media", N_CHUNKS, chunk).select(
        ["item_id", "poster_path", "description"]).to_pandas()
    previous_path = chunks.path(dataset, TABLE, N_CHUNKS, chunk)
    previous = chunks.read(dataset, TABLE, N_CHUNKS, chunk) if previous_path.is_file() and not config.reencode else None
    result, _ = encode_contents(context, config, encoder, lake, media, mine, previous)
    path = chunks.write(dataset, TABLE, N_CHUNKS, chunk, result.table, covers=mine["entity_id"].astype(str))
    return dg.MaterializeResult(metadata={"dagster/row_count": result.table.num_rows,
                                          "path": dg.MetadataValue.path(str(path)),
                                          "entities": len(mine), **{k: v for k, v in result.flat_stats().items()
                                                                    if isinstance(v, int | float)}})


def chunks_union(lake: LakeResource, dataset: str, table: str, log):
    """The union of ``table``'s chunks for ``dataset``, each checked to have been computed for
    exactly the items (or entities) that hash to it now; sorted like the unchunked table."""
    store = lake.lake()
    items = store.read_pandas(dataset, "items", ["item_id", "item_key"])
    if table == "item_media":
        keys, chunks = items["item_key"].astype(str), item_chunk(items["item_key"].astype(str), N_CHUNKS)
        order = ["item_id"]
    else:
        entities = store.read_pandas(dataset, "entities", ["entity_id", "entity_key"])
        keys, chunks = entities["entity_id"].astype(str), entity_chunks(entities, items, N_CHUNKS)
        order = ["entity_id", "modality"]
    expected = [keys[chunks == c].tolist() for c in range(N_CHUNKS)]
    union = ChunkStore(lake.root).union(dataset, table, N_CHUNKS, expected)
    log(f"{dataset}: {table} from {N_CHUNKS} chunks, {union.num_rows} rows")
    return union.sort_by([(name, "ascending") for name in order])


CHUNK_ASSETS = [item_media_chunk, clip_features_chunk]
