"""Collaborative knowledge graph (users + items + attribute entities) as an undirected CSR graph.

Multi-KG4Rec (ESWA 2025, section 4.2.2) builds, for every item, a sequence of high-order
neighbours gathered by breadth-first search over the *collaborative* KG: the user–item
interaction graph merged with the item knowledge graph.  This module owns that graph.

Node id convention (fixed; the rest of the project depends on it)
-----------------------------------------------------------------
* Entities are numbered ITEMS FIRST: entity ids ``0 .. n_items-1`` *are* the items,
  attribute entities are ``n_items .. n_entities-1``.
* Collaborative-KG node ids: ``0 .. n_entities-1`` are the entities (so ``node id == item id``
  for items) and ``n_entities .. n_entities+n_users-1`` are the users
  (``node = n_entities + user_id``).
* ``node_type``: 0 = item, 1 = entity (attribute), 2 = user -- see :data:`NODE_TYPE_NAMES`.

Leakage
-------
!!! ONLY TRAIN-SPLIT USER–ITEM PAIRS MAY BE PASSED TO :func:`build_collaborative_kg`. !!!
Every edge of this graph is visible to the neighbour sequences that feed the model, so a
valid/test interaction that reaches the builder leaks the label into the model input (an item
"sees" the very user it must be recommended to).  The builder therefore has no split argument
and no way to receive valid/test rows: the caller selects the train rows and passes only those.

Construction is vectorised NumPy (packed int64 keys + ``np.unique`` + ``np.bincount``/
``cumsum``); no SciPy, so the module depends only on NumPy (and PyArrow for the edge table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

NODE_TYPE_ITEM = 0
NODE_TYPE_ENTITY = 1
NODE_TYPE_USER = 2
NODE_TYPE_NAMES: tuple[str, str, str] = ("item", "entity", "user")

#: Relation id stored for edges that carry no KG relation (user–item edges, or KG edges
#: built without ``kg_relations``).
NO_RELATION = -1


@dataclass(frozen=True, eq=False)
class CollaborativeKG:
    """Undirected collaborative KG in CSR form.

    ``indices[indptr[v]:indptr[v+1]]`` are the neighbours of node ``v``, sorted by node id.
    Every undirected edge is stored in both directions, duplicates are removed and there are
    no self loops.  ``relation`` is aligned with ``indices``: the KG relation id of that edge
    (the smallest one when the same entity pair appears under several relations) or
    :data:`NO_RELATION` for user–item edges and for KG edges built without relation ids.
    """

    n_users: int
    n_items: int
    n_entities: int
    n_nodes: int
    indptr: np.ndarray  # int64, (n_nodes + 1,)
    indices: np.ndarray  # int32 (int64 if n_nodes >= 2**31), (n_directed_edges,)
    node_type: np.ndarray  # int8, (n_nodes,)
    relation: np.ndarray  # int32, aligned with indices

    @property
    def n_edges(self) -> int:
        """Number of undirected edges (each stored twice in the CSR)."""
        return int(self.indices.shape[0] // 2)

    def degree(self) -> np.ndarray:
        """Undirected degree of every node (int64, shape ``(n_nodes,)``)."""
        return np.diff(self.indptr)

    def neighbors(self, node: int) -> np.ndarray:
        """Neighbours of one node, sorted by id (a view into ``indices``)."""
        return self.indices[self.indptr[node] : self.indptr[node + 1]]

    def user_node(self, user_id: np.ndarray | int) -> np.ndarray | int:
        """Node id of a user id (``n_entities + user_id``)."""
        return user_id + self.n_entities

    def to_edge_table(self) -> pa.Table:
        """Every undirected edge once (``src < dst``) as a PyArrow table, e.g. for DuckDB.

        Columns: ``src``, ``dst`` (int64 node ids), ``src_type``, ``dst_type`` (strings from
        :data:`NODE_TYPE_NAMES`), ``relation`` (string: ``"interact"`` for user–item edges,
        otherwise the KG relation id in decimal, ``"-1"`` when unknown) and ``relation_id``
        (int32: the KG relation id, -1 for user–item / unknown).  A single Arrow column
        cannot mix strings and ints, hence the string ``relation`` plus the numeric
        ``relation_id`` for SQL filters.  Because users have larger ids than all entities,
        user–item edges come out as ``src = item, dst = user``.
        """
        src = np.repeat(np.arange(self.n_nodes, dtype=np.int64), self.degree())
        dst = self.indices.astype(np.int64)
        once = src < dst
        src, dst, rel = src[once], dst[once], self.relation[once]
        src_t, dst_t = self.node_type[src], self.node_type[dst]
        names = np.asarray(NODE_TYPE_NAMES, dtype=object)
        interact = (src_t == NODE_TYPE_USER) | (dst_t == NODE_TYPE_USER)
        rel_str = np.where(interact, "interact", rel.astype(str)).astype(object)
        return pa.table(
            {
                "src": pa.array(src, pa.int64()),
                "dst": pa.array(dst, pa.int64()),
                "src_type": pa.array(names[src_t], pa.string()),
                "dst_type": pa.array(names[dst_t], pa.string()),
                "relation": pa.array(rel_str, pa.string()),
                "relation_id": pa.array(rel.astype(np.int32), pa.int32()),
            }
        )


def node_types(n_users: int, n_items: int, n_entities: int) -> np.ndarray:
    """Node type of every collaborative-KG node under the fixed id convention."""
    node_type = np.full(n_entities + n_users, NODE_TYPE_USER, dtype=np.int8)
    node_type[:n_items] = NODE_TYPE_ITEM
    node_type[n_items:n_entities] = NODE_TYPE_ENTITY
    return node_type


def _as_ids(name: str, values, upper: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= upper:
        raise ValueError(f"{name} out of range [0, {upper}): min={lo}, max={hi}")
    return arr


def build_collaborative_kg(
    n_users: int,
    n_items: int,
    n_entities: int,
    train_user_ids,
    train_item_ids,
    kg_heads,
    kg_tails,
    kg_relations=None,
) -> CollaborativeKG:
    """Build the undirected collaborative KG from TRAIN user–item pairs and KG triples.

    !!! Pass ONLY train-split interactions.  Valid/test pairs must never reach this function:
    every edge ends up in the items' neighbour sequences, so a held-out pair would leak its
    label into the model input.  There is deliberately no split argument. !!!

    Args:
        n_users, n_items, n_entities: sizes; ``n_entities >= n_items`` (items are entities
            ``0..n_items-1``).
        train_user_ids, train_item_ids: aligned 1-D integer arrays of train interactions
            (user ids in ``[0, n_users)``, item ids in ``[0, n_items)``).  Duplicates are fine.
        kg_heads, kg_tails: aligned 1-D integer arrays of KG triples over entity ids
            ``[0, n_entities)``.  Direction is dropped (the graph is undirected); self loops
            are dropped.
        kg_relations: optional aligned relation ids (kept per edge for :meth:`to_edge_table`;
            the smallest id wins when an entity pair has several relations).

    Returns:
        :class:`CollaborativeKG` with ``n_nodes = n_entities + n_users``.
    """
    users, items, heads, tails, kg_rel = _checked_inputs(
        n_users, n_items, n_entities, train_user_ids, train_item_ids, kg_heads, kg_tails,
        kg_relations)
    n_nodes = n_entities + n_users
    # One (a, b, relation) list of undirected edges: interactions then KG triples.
    a = np.concatenate([items, heads])
    b = np.concatenate([users + n_entities, tails])
    rel = np.concatenate([np.full(items.shape, NO_RELATION, dtype=np.int64), kg_rel])
    indptr, indices, relation = _undirected_csr(a, b, rel, n_nodes)
    return CollaborativeKG(
        n_users=int(n_users),
        n_items=int(n_items),
        n_entities=int(n_entities),
        n_nodes=int(n_nodes),
        indptr=indptr,
        indices=indices,
        node_type=node_types(n_users, n_items, n_entities),
        relation=relation,
    )


def _checked_inputs(n_users, n_items, n_entities, train_user_ids, train_item_ids,
                    kg_heads, kg_tails, kg_relations):
    """The edge inputs of :func:`build_collaborative_kg` as int64 arrays, checked."""
    if n_items < 0 or n_users < 0 or n_entities < n_items:
        raise ValueError(
            f"need n_users >= 0 and n_entities >= n_items >= 0, got "
            f"n_users={n_users}, n_items={n_items}, n_entities={n_entities}"
        )
    users = _as_ids("train_user_ids", train_user_ids, n_users)
    items = _as_ids("train_item_ids", train_item_ids, n_items)
    heads = _as_ids("kg_heads", kg_heads, n_entities)
    tails = _as_ids("kg_tails", kg_tails, n_entities)
    if users.shape != items.shape:
        raise ValueError(
            f"train_user_ids/train_item_ids lengths differ: {users.size} vs {items.size}"
        )
    if heads.shape != tails.shape:
        raise ValueError(f"kg_heads/kg_tails lengths differ: {heads.size} vs {tails.size}")
    if kg_relations is None:
        kg_rel = np.full(heads.shape, NO_RELATION, dtype=np.int64)
    else:
        kg_rel = np.asarray(kg_relations).astype(np.int64, copy=False)
        if kg_rel.shape != heads.shape:
            raise ValueError("kg_relations must be aligned with kg_heads")
    return users, items, heads, tails, kg_rel


def _undirected_csr(a: np.ndarray, b: np.ndarray, rel: np.ndarray, n_nodes: int):
    """CSR (indptr, indices, relation) of the undirected, deduplicated edges ``a -- b``.

    Self loops are dropped; an edge given several times keeps its smallest relation id.
    """
    keep = a != b
    a, b, rel = a[keep], b[keep], rel[keep]
    # Both directions, packed as row * n_nodes + col (fits int64: n_nodes**2 < 2**63).
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    rel2 = np.concatenate([rel, rel])
    keys = rows * np.int64(n_nodes) + cols
    # Sort by (key, relation) so the first occurrence of each key carries the smallest
    # relation id and keys come out in CSR (row, col) order. Relation ids are small: one
    # int64 (key, relation) sorts ~3x faster than np.lexsort on two arrays, whose gathers
    # fall out of cache as the graph grows (bench/scaling.py); lexsort where it would overflow.
    n_rel = int(rel2.max()) + 2 if rel2.size else 1  # relation ids from NO_RELATION = -1
    if (keys.size and int(rel2.min()) >= NO_RELATION
            and int(keys.max()) < (np.iinfo(np.int64).max - n_rel) // n_rel):
        # stable = timsort here: the user→item half arrives sorted (the split is by user)
        packed = np.sort(keys * n_rel + (rel2 + 1), kind="stable")
        keys, rel2 = packed // n_rel, packed % n_rel - 1
    else:
        order = np.lexsort((rel2, keys))
        keys, rel2 = keys[order], rel2[order]
    # Adjacent comparison instead of np.unique: keys are already sorted, and NumPy 2.4's
    # hash-based np.unique is several times slower on millions of int64 keys.
    first = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    uniq = keys[first]
    rows_u = uniq // n_nodes
    cols_u = uniq - rows_u * n_nodes
    counts = np.bincount(rows_u, minlength=n_nodes)
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    idx_dtype = np.int32 if n_nodes < 2**31 else np.int64
    return indptr, cols_u.astype(idx_dtype), rel2[first].astype(np.int32)


def collaborative_kg_from_tables(tables) -> CollaborativeKG:
    """The collaborative KG of one dataset's lake tables (``users``, ``items``, ``entities``,
    ``split``, ``kg_triples`` as DataFrames): its TRAIN pairs and KG triples. The neighbours
    stage, the cold-start benchmark and the synthetic datasets all build it through here."""
    split, triples = tables["split"], tables["kg_triples"]
    train = (split["split"] == "train").to_numpy()  # the id columns alone are filtered
    return build_collaborative_kg(
        len(tables["users"]), len(tables["items"]), len(tables["entities"]),
        split["user_id"].to_numpy()[train], split["item_id"].to_numpy()[train],
        triples["head_id"].to_numpy(), triples["tail_id"].to_numpy(),
        triples["relation_id"].to_numpy(),
    )
