"""Item chunks: the per-chunk outputs of the media and feature stages, and their union.

A catalogue ten or a hundred times ML-1M makes the media fetch and the feature encoding the two
long steps of the pipeline, and both are independent per item. So they can run as
``dataset × item_chunk`` partitions (``assets/chunks.py``): a chunk is every item whose stable
hash of ``item_key`` falls in it (:func:`item_chunk`: SHA-1, not Python's salted ``hash``, so
the assignment is the same on every machine and every run), and each chunk writes one Parquet
file here::

    <data_dir>/chunks/<dataset>/<table>/of-<n>/chunk-<c>.parquet

Writes are atomic (temp file + rename), so a chunk is either its old or its new version, and
re-running one is idempotent. The union is read by the dataset-level asset (``item_media`` /
``clip_features`` with ``from_chunks``), which checks that every chunk is there and was computed
for exactly the items that hash to it *now* (a re-ingest that added items makes a chunk stale, and
that is an error naming the chunk, not a silently incomplete table), then publishes it through
the lake's audited transaction like any other table. Chunks are staging, not the lake: readers
never see them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.files import atomic_path

DEFAULT_CHUNKS = 8


def item_chunk(keys: Iterable[str], n_chunks: int) -> np.ndarray:
    """The chunk (0..n_chunks-1) of each key: the first 8 bytes of its SHA-1, modulo n_chunks."""
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1, not {n_chunks}")
    return np.fromiter((int.from_bytes(hashlib.sha1(str(k).encode()).digest()[:8], "big") % n_chunks
                        for k in keys), dtype=np.int64)


def entity_chunks(entities: pd.DataFrame, items: pd.DataFrame, n_chunks: int) -> np.ndarray:
    """The chunk of each entity: an item goes with its item (its media are in that chunk), an
    attribute entity by the hash of its key."""
    chunks = item_chunk(entities["entity_key"].astype(str), n_chunks)
    by_item = dict(zip(items["item_id"], item_chunk(items["item_key"].astype(str), n_chunks), strict=True))
    is_item = entities["entity_id"].isin(by_item).to_numpy()
    chunks[is_item] = entities.loc[is_item, "entity_id"].map(by_item).to_numpy()
    return chunks


def chunk_names(n_chunks: int) -> list[str]:
    """Partition keys of the chunks: ``00``, ``01``, ... (sortable)."""
    width = max(2, len(str(n_chunks - 1)))
    return [f"{c:0{width}d}" for c in range(n_chunks)]


def covers_digest(keys: Iterable) -> str:
    """What a chunk was computed for: a digest of its sorted input keys."""
    text = "\n".join(sorted(str(k) for k in keys))
    return hashlib.sha256(text.encode()).hexdigest()


_COVERS = b"kg4rec.covers"


class ChunkStore:
    """The chunk files of one data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "chunks"

    def path(self, dataset: str, table: str, n_chunks: int, chunk: int) -> Path:
        return self.root / dataset / table / f"of-{n_chunks}" / f"chunk-{chunk}.parquet"

    def write(self, dataset: str, table: str, n_chunks: int, chunk: int, data: pa.Table,
              covers: Iterable) -> Path:
        """Write one chunk, recording which input keys it covers (its items or entities: a
        chunk may legitimately have fewer rows, e.g. no feature row for an item without text)."""
        target = self.path(dataset, table, n_chunks, chunk)
        metadata = {**(data.schema.metadata or {}), _COVERS: covers_digest(covers).encode()}
        with atomic_path(target) as tmp:
            pq.write_table(data.replace_schema_metadata(metadata), tmp, compression="zstd")
        return target

    def read(self, dataset: str, table: str, n_chunks: int, chunk: int) -> pa.Table:
        return pq.read_table(self.path(dataset, table, n_chunks, chunk)).replace_schema_metadata(None)

    def union(self, dataset: str, table: str, n_chunks: int, expected: Sequence[Iterable]) -> pa.Table:
        """Every chunk of ``table`` as one table, each checked to cover exactly ``expected[c]``
        (the keys chunk ``c`` must cover now). Missing or stale chunks raise, naming each."""
        parts, problems = [], []
        names = chunk_names(n_chunks)
        for chunk in range(n_chunks):
            path = self.path(dataset, table, n_chunks, chunk)
            if not path.is_file():
                problems.append(f"chunk {names[chunk]} has not been materialized")
                continue
            part = pq.read_table(path)
            if (part.schema.metadata or {}).get(_COVERS) != covers_digest(expected[chunk]).encode():
                problems.append(f"chunk {names[chunk]} is stale (computed for other items than "
                                "hash to it now): materialize it again")
                continue
            parts.append(part.replace_schema_metadata(None))
        if problems:
            raise FileNotFoundError(f"{dataset}: {table} from {n_chunks} chunks: " + "; ".join(problems))
        return pa.concat_tables(parts, promote_options="default")
