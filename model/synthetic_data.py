"""Synthetic datasets in the lake's table layout (tests and speed benchmarks).

The interactions come from a low-rank preference model, the KG links items to attribute
entities of their latent cluster, and the features are noisy linear images of the item
factors, so that every signal the models use is learnable (a model can beat random).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from model.graph import NODE_TYPE_NAMES, collaborative_kg_from_tables
from model.sequences import bfs_neighbor_sequences


def _split_per_user(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8:1:1 per user (users with < 3 pairs keep everything in train)."""
    part = np.empty(users.size, dtype=object)
    order = np.lexsort((rng.random(users.size), users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_test = np.where(n >= 3, np.maximum(1, np.round(n * 0.1)), 0)
    n_valid = n_test
    label = np.where(rank < n - n_test - n_valid, "train",
                     np.where(rank < n - n_test, "valid", "test"))
    part[order] = label
    return part


def synthetic_tables(
    n_users: int = 60,
    n_items: int = 80,
    n_pairs: int = 1200,
    n_attributes: int = 20,
    n_relations: int = 3,
    n_triples: int = 200,
    modalities: tuple[str, ...] = ("image", "text"),
    feature_dims: dict[str, int] | None = None,
    feature_coverage: float = 0.9,
    sequence_length: int = 8,
    rank: int = 8,
    seed: int = 0,
    with_sequences: bool = True,
) -> dict[str, pd.DataFrame | pa.Table]:
    """Every table the model reads, as the pipeline would write them (ids contiguous)."""
    rng = np.random.default_rng(seed)
    dims = {"image": 32, "text": 24} | (feature_dims or {})
    # the draws happen in this order (factors, pairs, KG, features): same seed, same tables
    user_f = rng.normal(size=(n_users, rank))
    item_f = rng.normal(size=(n_items, rank))
    split = _synthetic_split(user_f, item_f, n_pairs, rng)
    n_entities = n_items + n_attributes
    tables: dict[str, pd.DataFrame | pa.Table] = {
        "users": pd.DataFrame({"user_id": np.arange(n_users), "user_key": [f"u{u}" for u in
                                                                        range(n_users)]}),
        "items": pd.DataFrame({"item_id": np.arange(n_items),
                               "item_key": [f"i{i}" for i in range(n_items)],
                               "title": [f"Item {i}" for i in range(n_items)]}),
        "split": split,
        "entities": pd.DataFrame({
            "entity_id": np.arange(n_entities),
            "entity_key": [f"i{i}" for i in range(n_items)] + [f"a{a}" for a in
                                                                 range(n_attributes)],
            "kind": ["item"] * n_items + ["attribute"] * n_attributes}),
        "relations": pd.DataFrame({"relation_id": np.arange(n_relations),
                                   "relation_key": [f"r{r}" for r in range(n_relations)]}),
        "kg_triples": _synthetic_kg(item_f, n_attributes, n_relations, n_triples, rng),
    }
    attr_f = rng.normal(size=(n_attributes, rank))
    features = _synthetic_features(np.concatenate([item_f, attr_f]), modalities, dims,
                                   feature_coverage, rng)
    if features is not None:
        tables["clip_features"] = features
    if with_sequences:
        tables["neighbor_sequences"] = neighbor_sequences_of(tables, sequence_length)
    return tables


def _synthetic_split(user_f: np.ndarray, item_f: np.ndarray, n_pairs: int,
                     rng: np.random.Generator) -> pd.DataFrame:
    """Pairs drawn from the low-rank logits (every user gets at least 3), split per user."""
    n_users, n_items = len(user_f), len(item_f)
    logits = user_f @ item_f.T + rng.gumbel(size=(n_users, n_items)) * 2.0
    # each user gets at least 3 pairs; the rest by the strongest logits overall
    n_pairs = min(n_pairs, n_users * n_items)
    flat = np.argsort(-logits, axis=None)[:n_pairs]
    users, items = np.unravel_index(flat, logits.shape)
    top3 = np.argsort(-logits, axis=1)[:, :3]
    users = np.concatenate([users, np.repeat(np.arange(n_users), 3)])
    items = np.concatenate([items, top3.reshape(-1)])
    pairs = np.unique(users * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    return pd.DataFrame({"user_id": users.astype(np.int64), "item_id": items.astype(np.int64),
                         "split": _split_per_user(users, rng)})


def _synthetic_kg(item_f: np.ndarray, n_attributes: int, n_relations: int, n_triples: int,
                  rng: np.random.Generator) -> pd.DataFrame:
    """Item → attribute triples; 80 % follow the item's strongest latent factor."""
    n_items, rank = item_f.shape
    n_entities = n_items + n_attributes
    cluster = np.argmax(item_f[:, : max(1, min(rank, n_attributes))], axis=1) % max(n_attributes, 1)
    heads, rels, tails = [], [], []
    if n_attributes and n_triples:
        head = rng.integers(0, n_items, n_triples)
        same = rng.random(n_triples) < 0.8
        tail = np.where(same, cluster[head], rng.integers(0, n_attributes, n_triples)) + n_items
        rel = rng.integers(0, n_relations, n_triples)
        keys = np.unique((head * n_relations + rel) * n_entities + tail)
        heads = keys // n_entities // n_relations
        rels = keys // n_entities % n_relations
        tails = keys % n_entities
    return pd.DataFrame({"head_id": np.asarray(heads, dtype=np.int64),
                         "relation_id": np.asarray(rels, dtype=np.int64),
                         "tail_id": np.asarray(tails, dtype=np.int64), "source": "synthetic"})


def _synthetic_features(entity_f: np.ndarray, modalities: tuple[str, ...],
                        dims: dict[str, int], coverage: float,
                        rng: np.random.Generator) -> pa.Table | None:
    """A ``clip_features`` table: noisy projections of the latent factors, ``coverage`` kept."""
    n_entities, rank = entity_f.shape
    columns: dict[str, list] = {"entity_id": [], "modality": [], "model": [], "dim": [],
                                "vector": []}
    for modality in modalities:
        dim = dims[modality]
        proj = rng.normal(size=(rank, dim)) / np.sqrt(rank)
        vec = (entity_f @ proj + 0.3 * rng.normal(size=(n_entities, dim))).astype(np.float32)
        keep = np.flatnonzero(rng.random(n_entities) < coverage)
        columns["entity_id"] += keep.tolist()
        columns["modality"] += [modality] * keep.size
        columns["model"] += [f"synthetic-{modality}"] * keep.size
        columns["dim"] += [dim] * keep.size
        columns["vector"] += list(vec[keep])
    if not columns["entity_id"]:
        return None
    # one FixedSizeList column per table needs one dim: different dims → list<float32>
    same_dim = len({dims[m] for m in modalities}) == 1
    vtype = pa.list_(pa.float32(), dims[modalities[0]]) if same_dim else pa.list_(pa.float32())
    return pa.table({
        "entity_id": pa.array(columns["entity_id"], pa.int64()),
        "modality": pa.array(columns["modality"], pa.string()),
        "model": pa.array(columns["model"], pa.string()),
        "dim": pa.array(columns["dim"], pa.int32()),
        "vector": pa.array([v.tolist() for v in columns["vector"]], vtype),
    })


def neighbor_sequences_of(tables: dict[str, pd.DataFrame], n: int) -> pd.DataFrame:
    """The ``neighbor_sequences`` table the neighbours stage would build from these tables
    (train pairs + KG triples), with the same functions."""
    graph = collaborative_kg_from_tables(tables)
    seq = bfs_neighbor_sequences(graph, n=n).to_table().to_pandas()
    if seq["node_type"].dtype != object:
        seq["node_type"] = np.asarray(NODE_TYPE_NAMES, dtype=object)[seq["node_type"]]
    return seq
