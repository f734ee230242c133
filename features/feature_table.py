"""What gets encoded, what can be reused, and the ``clip_features`` table.

* Items: the poster (modality ``image``, from ``item_media.poster_path``) and the description
  (modality ``text``). Attribute entities (genres, people, countries, ...): their names (``text``).
* Missing content gives **no row** — never a zero vector — and is counted per modality.
* A row is keyed by ``(entity_id, modality, content_hash, model, revision)``; the content hash is
  the sha256 of the image bytes or of the exact UTF-8 text. A re-run encodes only content whose
  key is not in the previous table (new or changed content, another model or revision, another
  dimension or normalisation) and copies the other vectors over.

Pure functions over pandas / pyarrow; the Dagster asset in ``assets/features.py`` is a thin
wrapper around :func:`plan_contents` and :func:`encode_features`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.interface import EncoderInfo, ImageEncoder, TextEncoder

IMAGE, TEXT = "image", "text"
MODALITIES = (IMAGE, TEXT)
ITEM_KIND = "item"
DEFAULT_DIM = 512  # the contract's FLOAT[512] (CLIP ViT-B/32)
KEY_COLUMNS = ["entity_id", "modality", "content_hash", "model", "revision"]


def table_schema(dim: int | None = DEFAULT_DIM) -> pa.Schema:
    """``vector`` is ``FixedSizeList<float32, dim>``; a variable list only when dims are mixed."""
    vector = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
    return pa.schema([
        pa.field("entity_id", pa.int32(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("revision", pa.string(), nullable=False),
        pa.field("dim", pa.int16(), nullable=False),
        pa.field("normalized", pa.bool_(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("vector", vector, nullable=False),
    ])


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Content:
    """One thing to encode: an image file or a text, with the hash that keys its vector."""

    entity_id: int
    modality: str
    content_hash: str
    payload: str  # the text itself, or the image file path
    source: str  # "poster", "description", "name"


@dataclass
class ContentPlan:
    contents: list[Content]
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    missing_by_source: dict[str, int] = field(default_factory=dict)

    def of(self, modality: str) -> list[Content]:
        return [c for c in self.contents if c.modality == modality]


def _present_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _resolve(path: Any, data_dir: Path | None) -> Path | None:
    text = _present_text(path)
    if text is None:
        return None
    candidate = Path(text)
    if not candidate.is_absolute() and data_dir is not None:
        candidate = data_dir / candidate
    return candidate if candidate.is_file() else None


def plan_contents(
    item_media: pd.DataFrame | None,
    entities: pd.DataFrame | None,
    *,
    images: bool = True,
    texts: bool = True,
    attribute_names: bool = True,
    data_dir: str | Path | None = None,
    hash_threads: int = 8,
) -> ContentPlan:
    """List every (entity, modality) that has content, with its content hash.

    ``item_media`` needs ``item_id``, ``poster_path`` (relative paths are under ``data_dir``) and
    ``description``; ``entities`` needs ``entity_id``, ``name`` and ``kind``. Poster files are
    hashed from their bytes (threads: hashing releases the GIL), not trusted from a column.
    """
    plan = ContentPlan(contents=[])
    root = Path(data_dir) if data_dir is not None else None

    def miss(modality: str, source: str, count: int) -> None:
        plan.missing[modality] += count
        plan.missing_by_source[source] = plan.missing_by_source.get(source, 0) + count

    if item_media is not None and images:
        paths = [_resolve(p, root) for p in item_media["poster_path"]]
        present = [(int(i), p) for i, p in zip(item_media["item_id"], paths, strict=True) if p]
        with ThreadPoolExecutor(max(1, hash_threads)) as pool:
            hashes = list(pool.map(file_hash, [p for _, p in present]))
        plan.contents += [Content(i, IMAGE, h, str(p), "poster")
                          for (i, p), h in zip(present, hashes, strict=True)]
        miss(IMAGE, "poster", len(paths) - len(present))
    if item_media is not None and texts:
        count = 0
        for item_id, value in zip(item_media["item_id"], item_media["description"], strict=True):
            text = _present_text(value)
            if text is None:
                count += 1
            else:
                plan.contents.append(Content(int(item_id), TEXT, text_hash(text), text, "description"))
        miss(TEXT, "description", count)
    if entities is not None and texts and attribute_names:
        attributes = entities[entities["kind"].astype(str) != ITEM_KIND]
        count = 0
        for entity_id, value in zip(attributes["entity_id"], attributes["name"], strict=True):
            text = _present_text(value)
            if text is None:
                count += 1
            else:
                plan.contents.append(Content(int(entity_id), TEXT, text_hash(text), text, "name"))
        miss(TEXT, "name", count)
    return plan


# --------------------------------------------------------------------------- reuse


def previous_vectors(previous: pa.Table | None, modality: str, info: EncoderInfo) -> dict[tuple[int, str], np.ndarray]:
    """``(entity_id, content_hash) → vector`` of earlier rows made by exactly this encoder."""
    if previous is None or previous.num_rows == 0:
        return {}
    needed = {"entity_id", "modality", "model", "revision", "dim", "normalized", "content_hash", "vector"}
    if not needed <= set(previous.column_names):
        return {}
    mask = pc.and_(
        pc.and_(pc.equal(previous["modality"], modality), pc.equal(previous["model"], info.model)),
        pc.and_(
            pc.and_(pc.equal(previous["revision"], info.revision), pc.equal(previous["dim"], info.dim)),
            pc.equal(previous["normalized"], info.normalized),
        ),
    )
    rows = previous.filter(mask)
    if rows.num_rows == 0:
        return {}
    values = pc.list_flatten(rows["vector"].combine_chunks()).to_numpy(zero_copy_only=False)
    vectors = values.astype(np.float32, copy=False).reshape(rows.num_rows, info.dim)
    keys = zip(rows["entity_id"].to_pylist(), rows["content_hash"].to_pylist(), strict=True)
    return {key: vectors[k] for k, key in enumerate(keys)}


# --------------------------------------------------------------------------- encoding


@dataclass
class ModalityStats:
    model: str = ""
    revision: str = ""
    dim: int = 0
    planned: int = 0
    encoded: int = 0
    reused: int = 0
    missing: int = 0
    failed: int = 0  # had content (a file) that could not be decoded
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FeatureResult:
    table: pa.Table
    stats: dict[str, ModalityStats]
    failed: list[Content] = field(default_factory=list)

    def flat_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for modality, s in self.stats.items():
            for key in ("model", "revision", "dim", "planned", "encoded", "reused", "missing", "failed"):
                out[f"{modality}/{key}"] = getattr(s, key)
            out[f"{modality}/seconds"] = round(s.seconds, 3)
            out[f"{modality}/per_second"] = round(s.per_second, 1)
        return out


def encode_features(
    plan: ContentPlan,
    image_encoder: ImageEncoder | None,
    text_encoder: TextEncoder | None,
    previous: pa.Table | None = None,
    log: Callable[[str], None] | None = None,
) -> FeatureResult:
    """Encode what the plan lists, reusing earlier vectors of the same content and encoder."""
    blocks: list[tuple[list[Content], np.ndarray, EncoderInfo, str]] = []
    stats: dict[str, ModalityStats] = {}
    failed: list[Content] = []
    for modality, encoder in ((IMAGE, image_encoder), (TEXT, text_encoder)):
        if encoder is None:
            continue
        info = encoder.info
        wanted = plan.of(modality)
        s = ModalityStats(model=info.model, revision=info.revision, dim=info.dim,
                          planned=len(wanted), missing=plan.missing.get(modality, 0))
        stats[modality] = s
        known = previous_vectors(previous, modality, info)
        reused = [c for c in wanted if (c.entity_id, c.content_hash) in known]
        todo = [c for c in wanted if (c.entity_id, c.content_hash) not in known]
        if reused:
            blocks.append((reused, np.stack([known[(c.entity_id, c.content_hash)] for c in reused]),
                           info, modality))
        s.reused = len(reused)
        if todo:
            if log:
                log(f"{modality}: encoding {len(todo):,} with {info.model} ({len(reused):,} reused)")
            started = time.perf_counter()
            if modality == IMAGE:
                vectors, ok = image_encoder.try_encode_images([c.payload for c in todo])
            else:
                vectors = text_encoder.encode_texts([c.payload for c in todo])
                ok = np.ones(len(todo), dtype=bool)
            s.seconds = time.perf_counter() - started
            failed += [c for c, good in zip(todo, ok, strict=True) if not good]
            kept = [c for c, good in zip(todo, ok, strict=True) if good]
            s.encoded, s.failed = len(kept), len(todo) - len(kept)
            if kept:
                blocks.append((kept, vectors[ok], info, modality))
        if log:
            log(f"{modality}: {s.encoded:,} encoded, {s.reused:,} reused, {s.missing:,} missing, "
                f"{s.failed:,} failed ({s.per_second:,.0f}/s)")
    return FeatureResult(build_table(blocks), stats, failed)


def build_table(blocks: Sequence[tuple[list[Content], np.ndarray, EncoderInfo, str]]) -> pa.Table:
    """One ``clip_features`` table from (contents, vectors, encoder, modality) blocks.

    Rows are sorted by (modality, entity_id, content_hash) so the file is stable across runs.
    """
    dims = {info.dim for _, _, info, _ in blocks}
    schema = table_schema(dims.pop() if len(dims) == 1 else (DEFAULT_DIM if not dims else None))
    if not blocks:
        return schema.empty_table()
    contents = [c for block in blocks for c in block[0]]
    infos = [info for block in blocks for info in [block[2]] * len(block[0])]
    frame = pd.DataFrame({
        "entity_id": np.fromiter((c.entity_id for c in contents), np.int64, len(contents)),
        "modality": [c.modality for c in contents],
        "content_hash": [c.content_hash for c in contents],
        "block_row": np.arange(len(contents)),
    })
    order = frame.sort_values(["modality", "entity_id", "content_hash"], kind="stable")["block_row"].to_numpy()
    vectors = [v for block in blocks for v in block[1]]
    dim_field = schema.field("vector").type
    flat = np.concatenate([np.asarray(vectors[i], dtype=np.float32).ravel() for i in order])
    if isinstance(dim_field, pa.FixedSizeListType):
        vector = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim_field.list_size)
    else:
        lengths = np.array([len(vectors[i]) for i in order], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        vector = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()))
    columns = {
        "entity_id": pa.array([contents[i].entity_id for i in order], pa.int32()),
        "modality": pa.array([contents[i].modality for i in order], pa.string()),
        "model": pa.array([infos[i].model for i in order], pa.string()),
        "revision": pa.array([infos[i].revision for i in order], pa.string()),
        "dim": pa.array([infos[i].dim for i in order], pa.int16()),
        "normalized": pa.array([infos[i].normalized for i in order], pa.bool_()),
        "content_hash": pa.array([contents[i].content_hash for i in order], pa.string()),
        "vector": vector,
    }
    return pa.Table.from_pydict(columns, schema=schema)


# --------------------------------------------------------------------------- validation


def validate_features(table: pa.Table, entity_ids: np.ndarray | None = None,
                      norm_tolerance: float = 1e-3) -> list[str]:
    """Problems that must block downstream stages (empty list = fine)."""
    problems: list[str] = []
    if table.num_rows == 0:
        return problems
    frame = table.select(["entity_id", "modality"]).to_pandas()
    duplicated = int(frame.duplicated().sum())
    if duplicated:
        problems.append(f"{duplicated} duplicate (entity_id, modality) rows")
    bad_modality = sorted(set(frame["modality"]) - set(MODALITIES))
    if bad_modality:
        problems.append(f"unknown modalities {bad_modality}")
    lengths = pc.list_value_length(table["vector"]).to_numpy(zero_copy_only=False)
    if not np.array_equal(lengths, table["dim"].to_numpy().astype(lengths.dtype)):
        problems.append("vector length differs from dim")
        return problems
    values = pc.list_flatten(table["vector"]).to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():
        problems.append("non-finite vector values")
        return problems
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    norms = np.sqrt(np.add.reduceat(values.astype(np.float64) ** 2, starts)) if len(values) else []
    normalized = table["normalized"].to_numpy(zero_copy_only=False)
    off = int((np.abs(np.asarray(norms)[normalized] - 1) > norm_tolerance).sum())
    if off:
        problems.append(f"{off} rows flagged normalized are not unit length")
    zero = int((np.asarray(norms) == 0).sum())
    if zero:
        problems.append(f"{zero} zero vectors (missing content must give no row)")
    if entity_ids is not None:
        unknown = int((~np.isin(frame["entity_id"].to_numpy(), entity_ids)).sum())
        if unknown:
            problems.append(f"{unknown} rows reference entity ids not in entities")
    return problems
