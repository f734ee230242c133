"""Lake tables → tensors: everything the recommenders, the trainer and the evaluator read.

Pure pandas/pyarrow/torch (no Dagster, no DuckDB), so the model can be used and tested alone
and the GPU benchmark can run from Parquet files only.

Inputs (one dataset partition; see ``shared/ARCHITECTURE.md``)
--------------------------------------------------------------
* ``users``, ``items``: contiguous ids from 0 (only their row counts are used).
* ``split``: (user_id, item_id, split ∈ train/valid/test).
* ``entities``: entity_id with ITEMS FIRST (entity_id == item_id for items); optional.
* ``relations``, ``kg_triples`` (head_id, relation_id, tail_id): optional, may be empty or cover
  only some items -- an item without triples keeps its ID embedding and all its interactions.
* ``clip_features`` (entity_id, modality ∈ {image, text}, vector FixedSizeList<float32, dim>):
  optional; a modality may be absent entirely. A missing row is a *masked* modality for that
  entity (``has[e] == False``), never a zero vector pretending to be data.
* ``neighbor_sequences`` (item_id, pos, node_id, node_type, hop): optional; padding positions are
  absent rows. When the table is missing it is recomputed from TRAIN pairs with
  :mod:`model.sequences` (same definition as the pipeline's stage).

Node ids of the collaborative KG (fixed project-wide): ``0..n_entities-1`` are entities (items
first), ``n_entities + user_id`` are users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from warehouse.lake import Lake, Snapshot

#: clip_features.modality value → the model's modality name.
MODALITY_NAMES: dict[str, str] = {"image": "visual", "text": "text"}
MODALITIES: tuple[str, str] = ("visual", "text")

#: Lake tables the model reads; the first four are required.
REQUIRED_TABLES = ("users", "items", "split")
OPTIONAL_TABLES = ("entities", "relations", "kg_triples", "clip_features", "neighbor_sequences")

#: node_type codes used in the sequence tensors (same order as model.graph.NODE_TYPE_NAMES).
NODE_TYPE_CODES = {"item": 0, "entity": 1, "user": 2}
PAD = -1


@dataclass
class ModalityFeatures:
    """Pre-computed features of one modality for the entities that have it.

    ``vectors[k]`` belongs to entity ``entity_ids[k]``; ``has`` (n_entities,) says which
    entities have the modality and ``row`` (n_entities,) maps an entity to its row (-1: none).
    """

    entity_ids: torch.Tensor  # int64 (n_have,)
    vectors: torch.Tensor  # float32 (n_have, dim)
    has: torch.Tensor  # bool (n_entities,)
    row: torch.Tensor  # int64 (n_entities,)
    model: str = ""

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def to(self, device: torch.device | str) -> ModalityFeatures:
        return ModalityFeatures(self.entity_ids.to(device), self.vectors.to(device),
                                self.has.to(device), self.row.to(device), self.model)


@dataclass
class RecData:
    """One dataset split, as tensors (all on one device; :meth:`to` moves everything).

    Pairs are parallel int64 vectors. KG triples use entity ids and the lake's relation ids
    (``0..n_relations-1``); :func:`collaborative_edges` adds the interaction and inverse
    relations for propagation.
    """

    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    train_user: torch.Tensor
    train_item: torch.Tensor
    valid_user: torch.Tensor
    valid_item: torch.Tensor
    test_user: torch.Tensor
    test_item: torch.Tensor
    kg_head: torch.Tensor
    kg_relation: torch.Tensor
    kg_tail: torch.Tensor
    features: dict[str, ModalityFeatures] = field(default_factory=dict)
    seq_node: torch.Tensor | None = None  # int64 (n_items, L), PAD where absent
    seq_type: torch.Tensor | None = None  # int64 (n_items, L), PAD where absent
    seq_hop: torch.Tensor | None = None  # int64 (n_items, L), PAD where absent
    notes: list[str] = field(default_factory=list)
    # bool (n_items,): the only items evaluation ranks (None: all). A cold-start protocol sets
    # it to the new items, so validation (early stopping) and test rank those alone.
    candidate_items: torch.Tensor | None = None

    @property
    def n_nodes(self) -> int:
        return self.n_entities + self.n_users

    @property
    def device(self) -> torch.device:
        return self.train_user.device

    def to(self, device: torch.device | str) -> RecData:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device)
            elif f.name == "features":
                moved[f.name] = {k: v.to(device) for k, v in value.items()}
        return replace(self, **moved)

    def summary(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {
            "n_users": self.n_users, "n_items": self.n_items, "n_entities": self.n_entities,
            "n_relations": self.n_relations, "n_train": int(self.train_user.numel()),
            "n_valid": int(self.valid_user.numel()), "n_test": int(self.test_user.numel()),
            "n_kg_triples": int(self.kg_head.numel()),
            "modalities": ",".join(sorted(self.features)) or "none",
        }
        for name, feats in self.features.items():
            out[f"{name}_entities"] = int(feats.has.sum())
            out[f"{name}_dim"] = feats.dim
        if self.seq_node is not None:
            out["seq_len"] = int(self.seq_node.shape[1])
        return out


def _long(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _check_range(name: str, values: np.ndarray, upper: int) -> None:
    if values.size and (values.min() < 0 or values.max() >= upper):
        raise ValueError(f"{name} out of range [0, {upper}): min={values.min()}, max={values.max()}")


def feature_tensors(clip_features: pd.DataFrame | pa.Table | None, n_entities: int
                    ) -> dict[str, ModalityFeatures]:
    """``clip_features`` rows → one :class:`ModalityFeatures` per modality present.

    Duplicate (entity, modality) rows keep the first. Rows outside ``[0, n_entities)`` are an
    error (they would silently describe a different entity).
    """
    if clip_features is None:
        return {}
    table = clip_features if isinstance(clip_features, pa.Table) else pa.Table.from_pandas(
        clip_features, preserve_index=False)
    if table.num_rows == 0:
        return {}
    entity = table.column("entity_id").to_numpy().astype(np.int64)
    modality = np.asarray(table.column("modality").to_pylist(), dtype=object)
    vectors_col = table.column("vector").combine_chunks()
    models = (np.asarray(table.column("model").to_pylist(), dtype=object)
              if "model" in table.column_names else np.full(len(entity), "", dtype=object))
    _check_range("clip_features.entity_id", entity, n_entities)
    out: dict[str, ModalityFeatures] = {}
    for raw_name, name in MODALITY_NAMES.items():
        sel = np.flatnonzero(modality == raw_name)
        if sel.size == 0:
            continue
        ids, first = np.unique(entity[sel], return_index=True)
        rows = sel[first]
        vec = _stack_vectors(vectors_col.take(pa.array(rows)), raw_name)
        if not np.isfinite(vec).all():
            raise ValueError(f"clip_features: non-finite values in modality {raw_name!r}")
        has = np.zeros(n_entities, dtype=bool)
        has[ids] = True
        row = np.full(n_entities, -1, dtype=np.int64)
        row[ids] = np.arange(ids.size)
        out[name] = ModalityFeatures(_long(ids), torch.from_numpy(np.array(vec, copy=True)),
                                     torch.from_numpy(has), torch.from_numpy(row),
                                     str(models[rows[0]]))
    unknown = set(modality.tolist()) - set(MODALITY_NAMES)
    if unknown:
        raise ValueError(f"clip_features: unknown modality values {sorted(unknown)}")
    return out


def _stack_vectors(column: pa.Array, modality: str) -> np.ndarray:
    """A (Fixed)List<float> column → (n, dim) float32 (one dim per modality)."""
    if column.null_count:
        raise ValueError(f"clip_features: null vectors in modality {modality!r}")
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    else:
        lengths = np.diff(column.offsets.to_numpy())
        if lengths.size and (lengths != lengths[0]).any():
            raise ValueError(f"clip_features: vectors of different lengths in {modality!r}")
        dim = int(lengths[0]) if lengths.size else 0
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), dim)


def sequence_tensors(frame: pd.DataFrame, n_items: int, max_len: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``neighbor_sequences`` rows → dense (n_items, L) node/type/hop tensors, PAD-filled.

    L is the largest ``pos`` + 1 (capped by ``max_len``: positions >= max_len are dropped).
    Items without rows get their own id at position 0 (a length-1 sequence).
    """
    pos = frame["pos"].to_numpy(np.int64)
    if max_len is not None:
        frame = frame[pos < max_len]
        pos = pos[pos < max_len]
    length = int(pos.max()) + 1 if pos.size else 1
    node = np.full((n_items, length), PAD, dtype=np.int64)
    ntype = np.full((n_items, length), PAD, dtype=np.int64)
    hop = np.full((n_items, length), PAD, dtype=np.int64)
    item = frame["item_id"].to_numpy(np.int64)
    _check_range("neighbor_sequences.item_id", item, n_items)
    node[item, pos] = frame["node_id"].to_numpy(np.int64)
    types = frame["node_type"]
    codes = (types.map(NODE_TYPE_CODES).to_numpy() if types.dtype == object or
             isinstance(types.dtype, pd.StringDtype | pd.CategoricalDtype) else types.to_numpy())
    if pd.isna(codes).any():
        raise ValueError("neighbor_sequences.node_type: unknown values")
    ntype[item, pos] = codes.astype(np.int64)
    hop[item, pos] = frame["hop"].to_numpy(np.int64)
    missing = node[:, 0] == PAD
    node[missing, 0] = np.flatnonzero(missing)
    ntype[missing, 0] = NODE_TYPE_CODES["item"]
    hop[missing, 0] = 0
    return torch.from_numpy(node), torch.from_numpy(ntype), torch.from_numpy(hop)


def build_data(
    tables: Mapping[str, pd.DataFrame | pa.Table | None],
) -> RecData:
    """Turn the lake tables of one dataset into a :class:`RecData` (on the CPU).

    ``tables`` maps table name → DataFrame/Table (or None/absent for optional tables).
    """
    def frame(name: str) -> pd.DataFrame | None:
        value = tables.get(name)
        if value is None:
            return None
        return value.to_pandas() if isinstance(value, pa.Table) else value

    for name in REQUIRED_TABLES:
        if frame(name) is None:
            raise ValueError(f"table {name!r} is required")
    notes: list[str] = []
    n_users = len(frame("users"))
    n_items = len(frame("items"))
    entities = frame("entities")
    n_entities = max(n_items, len(entities)) if entities is not None else n_items
    split = frame("split")
    users = split["user_id"].to_numpy(np.int64)
    items = split["item_id"].to_numpy(np.int64)
    _check_range("split.user_id", users, n_users)
    _check_range("split.item_id", items, n_items)
    part = split["split"].astype(str).to_numpy()
    unknown = set(np.unique(part)) - {"train", "valid", "test"}
    if unknown:
        raise ValueError(f"split: unknown parts {sorted(unknown)}")

    triples = frame("kg_triples")
    relations = frame("relations")
    if triples is None or len(triples) == 0:
        head = rel = tail = np.zeros(0, dtype=np.int64)
        notes.append("no KG triples: items keep their ID embeddings; propagation uses "
                     "user-item edges only")
    else:
        head = triples["head_id"].to_numpy(np.int64)
        rel = triples["relation_id"].to_numpy(np.int64)
        tail = triples["tail_id"].to_numpy(np.int64)
        _check_range("kg_triples.head_id", head, n_entities)
        _check_range("kg_triples.tail_id", tail, n_entities)
    n_relations = int(max(len(relations) if relations is not None else 0,
                          rel.max() + 1 if rel.size else 0))

    features = feature_tensors(tables.get("clip_features"), n_entities)
    for name in MODALITIES:
        if name not in features:
            notes.append(f"modality {name!r} absent for the whole dataset: its graph is dropped "
                         "and its keys are masked")

    train = part == "train"
    # the neighbours stage is the one place BFS sequences are computed; a fusion model says so
    # when they are missing, and seq_len is applied by the model, not here
    seq = frame("neighbor_sequences")
    seq_node = seq_type = seq_hop = None
    if seq is not None:
        seq_node, seq_type, seq_hop = sequence_tensors(seq, n_items)
        _check_range("neighbor_sequences.node_id", seq_node[seq_node >= 0].numpy(),
                     n_entities + n_users)

    def pairs(mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return _long(users[mask]), _long(items[mask])

    (tu, ti), (vu, vi), (su, si) = pairs(train), pairs(part == "valid"), pairs(part == "test")
    return RecData(
        n_users=n_users, n_items=n_items, n_entities=n_entities, n_relations=n_relations,
        train_user=tu, train_item=ti, valid_user=vu, valid_item=vi, test_user=su, test_item=si,
        kg_head=_long(head), kg_relation=_long(rel), kg_tail=_long(tail), features=features,
        seq_node=seq_node, seq_type=seq_type, seq_hop=seq_hop, notes=notes,
    )


def with_valid_in_train(data: RecData) -> RecData:
    """The split of a refit: the validation pairs join train, no validation remains.

    For the final model of a search (bench/tune.py --refit): validation has chosen the settings
    and the number of epochs; the model is then trained on every pair the test does not hold,
    as a release's published train file (e.g. KGAT's ``train.txt``) would be used whole."""
    empty = data.valid_user[:0]
    return replace(data, train_user=torch.cat([data.train_user, data.valid_user]),
                   train_item=torch.cat([data.train_item, data.valid_item]),
                   valid_user=empty, valid_item=empty.clone(),
                   notes=[*data.notes, f"refit: {data.valid_user.numel():,} validation pairs "
                          "trained on, no validation split"])


def read_lake_tables(data_dir: str | Path, dataset: str, version: int | None = None
                     ) -> dict[str, pa.Table | None]:
    """Read one dataset's tables straight from the Parquet lake (no DuckDB, no Dagster).

    All tables come from one lake snapshot — the published one, or ``version`` (time travel:
    the exact data an earlier run trained on). ``warehouse.lake.Lake`` owns the layout.
    """
    return read_snapshot_tables(Lake(Path(data_dir)).snapshot(dataset, version))


def read_snapshot_tables(snapshot: Snapshot) -> dict[str, pa.Table | None]:
    """The training tables of one snapshot. Missing optional tables come back as None; a
    missing required table raises naming the asset to materialize."""
    out: dict[str, pa.Table | None] = {name: snapshot.read(name) for name in REQUIRED_TABLES}
    for name in OPTIONAL_TABLES:
        out[name] = snapshot.read(name) if snapshot.has(name) else None
    return out


# --------------------------------------------------------------------------- graph helpers


@dataclass
class EdgeList:
    """Directed edges head → tail with relation ids (propagation aggregates tails into heads)."""

    head: torch.Tensor
    relation: torch.Tensor
    tail: torch.Tensor
    n_nodes: int
    n_relations: int

    def to(self, device: torch.device | str) -> EdgeList:
        return EdgeList(self.head.to(device), self.relation.to(device), self.tail.to(device),
                        self.n_nodes, self.n_relations)


def collaborative_edges(data: RecData) -> EdgeList:
    """The collaborative KG of KGAT as directed triples, both directions, TRAIN pairs only.

    Relations: 0 = user interacts item (user → item), 1 = its inverse (item → user),
    ``2 + r`` = KG relation r (head → tail), ``2 + R + r`` = its inverse. Self-loops dropped.
    """
    users = data.train_user + data.n_entities
    items = data.train_item
    R = data.n_relations
    zero = torch.zeros_like(users)
    head = torch.cat([users, items, data.kg_head, data.kg_tail])
    tail = torch.cat([items, users, data.kg_tail, data.kg_head])
    rel = torch.cat([zero, zero + 1, data.kg_relation + 2, data.kg_relation + 2 + R])
    keep = head != tail
    return EdgeList(head[keep], rel[keep], tail[keep], data.n_nodes, 2 + 2 * R)


def user_item_csr(n_users: int, users: torch.Tensor, items: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr, items sorted by user) of a set of pairs: the items of user u are
    ``items[indptr[u]:indptr[u+1]]``."""
    order = torch.argsort(users * (int(items.max()) + 1 if items.numel() else 1) + items)
    counts = torch.bincount(users, minlength=n_users)
    indptr = torch.zeros(n_users + 1, dtype=torch.long, device=users.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, items[order]
