"""Tests of the collaborative KG builder and the truncated-BFS neighbour sequences."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import sequence_checks
from model import sequences as nb
from model.graph import NODE_TYPE_NAMES, CollaborativeKG, build_collaborative_kg
from model.sequence_checks import reference_bfs, sequence_stats
from model.sequences import (
    DEFAULT_SEQUENCE_LENGTH,
    bfs_neighbor_sequences,
    neighbor_hash,
)

# --------------------------------------------------------------------------- hand graph
#
# 3 items (0, 1, 2), 2 attribute entities (3, 4), 3 users (nodes 5, 6, 7 = users 0, 1, 2).
#
#      u0(5)     u1(6)     u2(7)          item 2: isolated
#        \      /    \      /
#         i0(0)        i1(1)
#            \        /
#             e3(3) -- e4(4)
#
# degrees: 0:3  1:3  2:0  3:3  4:1  5:1  6:2  7:1
HAND = {
    "n_users": 3,
    "n_items": 3,
    "n_entities": 5,
    "users": [0, 1, 1, 2, 0],  # (u0, i0) twice: duplicates must be removed
    "items": [0, 0, 1, 1, 0],
    "heads": [0, 3, 3, 4, 3],  # (3, 3) is a self loop; (4, 3) repeats (3, 4) reversed
    "tails": [3, 1, 4, 3, 3],
    "rels": [0, 1, 2, 5, 6],
}


def hand_graph(users=None, items=None) -> CollaborativeKG:
    return build_collaborative_kg(
        HAND["n_users"],
        HAND["n_items"],
        HAND["n_entities"],
        HAND["users"] if users is None else users,
        HAND["items"] if items is None else items,
        HAND["heads"],
        HAND["tails"],
        HAND["rels"],
    )


def row(seqs, r):
    m = seqs.mask[r]
    return seqs.node_id[r][m].tolist(), seqs.hop[r][m].tolist()


def test_hand_graph_csr():
    g = hand_graph()
    assert (g.n_users, g.n_items, g.n_entities, g.n_nodes) == (3, 3, 5, 8)
    expected = {0: [3, 5, 6], 1: [3, 6, 7], 2: [], 3: [0, 1, 4], 4: [3], 5: [0], 6: [0, 1], 7: [1]}
    for v, nbrs in expected.items():
        assert g.neighbors(v).tolist() == nbrs
    assert g.indptr.dtype == np.int64 and g.indptr[-1] == g.indices.size == 2 * g.n_edges
    assert g.degree().tolist() == [3, 3, 0, 3, 1, 1, 2, 1]
    assert g.node_type.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert NODE_TYPE_NAMES == ("item", "entity", "user")
    assert g.user_node(2) == 7


def test_edge_table():
    t = hand_graph().to_edge_table()
    assert t.column_names == ["src", "dst", "src_type", "dst_type", "relation", "relation_id"]
    rows = sorted(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
    assert rows == [
        (0, 3, "item", "entity", "0", 0),
        (0, 5, "item", "user", "interact", -1),
        (0, 6, "item", "user", "interact", -1),
        (1, 3, "item", "entity", "1", 1),
        (1, 6, "item", "user", "interact", -1),
        (1, 7, "item", "user", "interact", -1),
        (3, 4, "entity", "entity", "2", 2),  # (3,4) rel 2 and (4,3) rel 5: smallest wins
    ]


def test_builder_rejects_bad_input():
    with pytest.raises(ValueError, match="train_item_ids out of range"):
        build_collaborative_kg(1, 2, 2, [0], [2], [], [])
    with pytest.raises(ValueError, match="kg_heads out of range"):
        build_collaborative_kg(1, 2, 3, [0], [1], [3], [0])
    with pytest.raises(ValueError, match="lengths differ"):
        build_collaborative_kg(1, 2, 2, [0, 0], [1], [], [])
    with pytest.raises(ValueError, match="n_entities >= n_items"):
        build_collaborative_kg(1, 3, 2, [], [], [], [])


def test_hand_graph_sequences_degree():
    g = hand_graph()
    # n=5. item 0: hop-1 candidates {3, 5, 6} ranked by degree (3:3, 6:2, 5:1); one slot
    # left for hop 2 = unvisited neighbours of {3, 6, 5} = {1, 4}; degree 3 beats 1 -> 1.
    # item 1: hop 1 {3, 6, 7} -> 3, 6, 7; hop 2 from {3, 6, 7} = {0, 4} -> 0.
    s = bfs_neighbor_sequences(g, n=5)
    assert row(s, 0) == ([0, 3, 6, 5, 1], [0, 1, 1, 1, 2])
    assert row(s, 1) == ([1, 3, 6, 7, 0], [0, 1, 1, 1, 2])
    assert row(s, 2) == ([2], [0])
    assert s.length.tolist() == [5, 5, 1]
    assert s.node_type[0].tolist() == [0, 1, 2, 2, 0]
    # n=8: item 0 exhausts its 7-node component; hop 3 reaches user 2 through item 1.
    s = bfs_neighbor_sequences(g, n=8)
    assert row(s, 0) == ([0, 3, 6, 5, 1, 4, 7], [0, 1, 1, 1, 2, 2, 3])
    assert row(s, 1) == ([1, 3, 6, 7, 0, 4, 5], [0, 1, 1, 1, 2, 2, 3])
    assert s.node_id[0].tolist() == [0, 3, 6, 5, 1, 4, 7, -1]
    assert s.mask[0].tolist() == [True] * 7 + [False]
    # max_hops=1 keeps the 1st-order neighbours only; max_hops=0 the item alone.
    s = bfs_neighbor_sequences(g, n=8, max_hops=1)
    assert row(s, 0) == ([0, 3, 6, 5], [0, 1, 1, 1])
    s = bfs_neighbor_sequences(g, n=8, max_hops=0)
    assert s.length.tolist() == [1, 1, 1]
    # n=1: just the item.
    s = bfs_neighbor_sequences(g, n=1)
    assert s.node_id[:, 0].tolist() == [0, 1, 2] and s.hop.tolist() == [[0], [0], [0]]


def test_isolated_items_are_length_one_and_padded():
    g = build_collaborative_kg(2, 4, 4, [0, 1], [0, 0], [], [])  # items 1, 2, 3 isolated
    s = bfs_neighbor_sequences(g, n=4)
    assert s.length.tolist() == [3, 1, 1, 1]
    for r in (1, 2, 3):
        assert s.node_id[r].tolist() == [r, -1, -1, -1]
        assert s.hop[r].tolist() == [0, -1, -1, -1]
        assert s.node_type[r].tolist() == [0, -1, -1, -1]
        assert s.mask[r].tolist() == [True, False, False, False]
    # Items with no nodes at all still yield one row per item.
    g0 = build_collaborative_kg(0, 2, 2, [], [], [], [])
    assert bfs_neighbor_sequences(g0, n=3).length.tolist() == [1, 1]


def test_random_tie_break_order_follows_hash():
    # Star: item 0 with 20 users; n=6 keeps the 5 users with the smallest hash.
    g = build_collaborative_kg(20, 1, 1, np.arange(20), np.zeros(20, int), [], [])
    for seed in (0, 1, 123):
        s = bfs_neighbor_sequences(g, n=6, tie_break="random", seed=seed)
        users = np.arange(20) + 1
        h = neighbor_hash(seed, 0, users)
        expected = users[np.argsort(h, kind="stable")][:5].tolist()
        assert row(s, 0) == ([0, *expected], [0, 1, 1, 1, 1, 1])
    a = bfs_neighbor_sequences(g, n=6, tie_break="random", seed=0).node_id
    b = bfs_neighbor_sequences(g, n=6, tie_break="random", seed=1).node_id
    assert not np.array_equal(a, b)


# neighbor_hash(0, 0, [0, 1, 2]) under the SplitMix64 definition; pinned so that a change of
# the "random" tie-break (which would silently reshuffle every sequence) fails loudly.
GOLDEN_HASHES = [3746585686858627171, 3092335531369821329, 6781056432484289559]


def test_hash_is_pinned_and_matches_python_twin():
    # Golden values: the "random" tie-break must not change across machines or versions.
    got = neighbor_hash(0, 0, np.array([0, 1, 2])).tolist()
    assert got == [sequence_checks._neighbor_hash_py(0, 0, v) for v in (0, 1, 2)]
    assert got == GOLDEN_HASHES
    rng = np.random.default_rng(0)
    items, nodes = rng.integers(0, 2**40, 50), rng.integers(0, 2**40, 50)
    vec = neighbor_hash(7, items, nodes).tolist()
    assert vec == [
        sequence_checks._neighbor_hash_py(7, int(i), int(v)) for i, v in zip(items, nodes, strict=True)
    ]


# --------------------------------------------------------------------------- properties


@st.composite
def graphs(draw) -> CollaborativeKG:
    n_items = draw(st.integers(1, 8))
    n_entities = n_items + draw(st.integers(0, 5))
    n_users = draw(st.integers(0, 8))
    k = draw(st.integers(0, 40)) if n_users else 0
    users = draw(st.lists(st.integers(0, max(n_users - 1, 0)), min_size=k, max_size=k))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=k, max_size=k))
    kk = draw(st.integers(0, 20))
    heads = draw(st.lists(st.integers(0, n_entities - 1), min_size=kk, max_size=kk))
    tails = draw(st.lists(st.integers(0, n_entities - 1), min_size=kk, max_size=kk))
    return build_collaborative_kg(n_users, n_items, n_entities, users, items, heads, tails)


def assert_matches_reference(g, s, n, tie_break, seed, max_hops=None):
    for item in range(g.n_items):
        nodes, hops = reference_bfs(g, item, n, tie_break, seed, max_hops)
        assert row(s, item) == (nodes, hops), item
        assert s.length[item] == len(nodes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    g=graphs(),
    n=st.integers(1, 10),
    tie_break=st.sampled_from(["degree", "random"]),
    seed=st.integers(0, 2**32),
    max_hops=st.one_of(st.none(), st.integers(0, 3)),
    chunk_size=st.integers(1, 9),
    max_pairs=st.integers(1, 50),
)
def test_matches_reference(g, n, tie_break, seed, max_hops, chunk_size, max_pairs):
    s = bfs_neighbor_sequences(
        g, n, max_hops, tie_break, seed, chunk_size=chunk_size, max_pairs=max_pairs
    )
    assert s.node_id.shape == (g.n_items, n)
    assert_matches_reference(g, s, n, tie_break, seed, max_hops)


@pytest.mark.parametrize("factor", [0.01, 1.0, 4.0, 1e12])
def test_random_prefilter_paths_are_exact(monkeypatch, factor):
    # A dense bipartite graph (items share many users) with small n exercises both the
    # settled path and the unfiltered fallback of the hash-threshold prefilter.
    monkeypatch.setattr(nb, "RANDOM_PREFILTER_FACTOR", factor)
    rng = np.random.default_rng(3)
    u, i = rng.integers(0, 30, 400), rng.integers(0, 25, 400)
    g = build_collaborative_kg(30, 25, 28, u, i, rng.integers(0, 28, 30), rng.integers(0, 28, 30))
    for n in (2, 5, 12):
        s = bfs_neighbor_sequences(g, n, tie_break="random", seed=11, max_pairs=64)
        assert_matches_reference(g, s, n, "random", 11)


@settings(max_examples=100, deadline=None)
@given(g=graphs(), n=st.integers(1, 10), tie_break=st.sampled_from(["degree", "random"]))
def test_sequence_invariants(g, n, tie_break):
    s = bfs_neighbor_sequences(g, n, tie_break=tie_break, seed=5)
    deg = g.degree()
    for r in range(g.n_items):
        nodes, hops = row(s, r)
        assert nodes[0] == r and hops[0] == 0 and 0 not in hops[1:]
        assert len(set(nodes)) == len(nodes)
        assert hops == sorted(hops)
        assert s.node_type[r][s.mask[r]].tolist() == g.node_type[nodes].tolist()
        assert (s.node_id[r][~s.mask[r]] == -1).all() and (s.hop[r][~s.mask[r]] == -1).all()
        assert (s.node_type[r][~s.mask[r]] == -1).all()
        assert s.mask[r].tolist() == [True] * len(nodes) + [False] * (n - len(nodes))
        # every hop-h node is adjacent to some hop-(h-1) node of the sequence
        by_hop = {}
        for v, h in zip(nodes, hops, strict=True):
            by_hop.setdefault(h, []).append(v)
        for h in range(1, max(hops) + 1):
            prev = set(by_hop[h - 1])
            for v in by_hop[h]:
                assert prev & set(g.neighbors(v).tolist())
            if tie_break == "degree":
                key = [(-deg[v], v) for v in by_hop[h]]
                assert key == sorted(key)
        # a short sequence means the whole component was exhausted
        if len(nodes) < n:
            reach = {v for u in nodes for v in g.neighbors(u).tolist()}
            assert reach <= set(nodes)


def test_deterministic_and_chunk_independent():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 60, 900), rng.integers(0, 80, 900)
    g = build_collaborative_kg(60, 80, 95, u, i, rng.integers(0, 95, 120), rng.integers(0, 95, 120))
    for tie_break in ("degree", "random"):
        base = bfs_neighbor_sequences(g, 16, tie_break=tie_break, seed=42)
        again = bfs_neighbor_sequences(g, 16, tie_break=tie_break, seed=42)
        assert np.array_equal(base.node_id, again.node_id)
        for chunk_size, max_pairs in [(1, 10**9), (3, 7), (17, 1), (1000, 100)]:
            other = bfs_neighbor_sequences(
                g, 16, tie_break=tie_break, seed=42, chunk_size=chunk_size, max_pairs=max_pairs
            )
            for name in ("node_id", "hop", "node_type", "mask", "length"):
                assert np.array_equal(getattr(base, name), getattr(other, name)), name
        # Rows do not depend on which other items are computed, nor on their order.
        items = rng.permutation(80)[:23]
        sub = bfs_neighbor_sequences(g, 16, tie_break=tie_break, seed=42, items=items)
        assert sub.item_id.tolist() == items.tolist()
        assert np.array_equal(sub.node_id, base.node_id[items])
        assert np.array_equal(sub.hop, base.hop[items])


# --------------------------------------------------------------------------- leakage


def pipeline_sequences(train_pairs, valid_pairs, test_pairs, n=5):
    """What the pipeline does: it receives all splits but only train pairs reach the builder."""
    del valid_pairs, test_pairs  # held-out pairs must never reach the graph
    users, items = zip(*train_pairs, strict=True) if train_pairs else ((), ())
    g = hand_graph(users=list(users), items=list(items))
    return bfs_neighbor_sequences(g, n)


def test_builder_accepts_only_train_pairs():
    params = list(inspect.signature(build_collaborative_kg).parameters)
    assert params == [
        "n_users",
        "n_items",
        "n_entities",
        "train_user_ids",
        "train_item_ids",
        "kg_heads",
        "kg_tails",
        "kg_relations",
    ]
    assert not any(w in p for p in params for w in ("valid", "test", "split", "eval"))


def test_held_out_pairs_cannot_change_sequences():
    train = list(zip(HAND["users"], HAND["items"], strict=True))
    leak = (2, 0)  # user 2 (node 7) never rated item 0 in train
    base = pipeline_sequences(train, [], [])
    # Sensitivity: had the test pair leaked into the graph, item 0's sequence would change
    # (user 7 becomes a 1st-order neighbour of item 0 with degree 2, ahead of user 5).
    leaked = pipeline_sequences([*train, leak], [], [])
    assert row(leaked, 0) != row(base, 0)
    assert 7 in row(leaked, 0)[0][:4] and 7 not in row(base, 0)[0][:4]
    # The pipeline passes it as valid or test: no sequence may change.
    for valid, test in [([leak], []), ([], [leak]), ([leak, (0, 1)], [leak, (2, 2)])]:
        s = pipeline_sequences(train, valid, test)
        for name in ("node_id", "hop", "node_type", "mask", "length"):
            assert np.array_equal(getattr(s, name), getattr(base, name))


# --------------------------------------------------------------------------- outputs


def test_to_table_long_format():
    s = bfs_neighbor_sequences(hand_graph(), n=5)
    t = s.to_table()
    assert t.column_names == ["item_id", "pos", "node_id", "node_type", "hop"]
    assert t.num_rows == int(s.length.sum()) == 11  # no padding rows
    rows = list(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
    assert rows[:5] == [
        (0, 0, 0, "item", 0),
        (0, 1, 3, "entity", 1),
        (0, 2, 6, "user", 1),
        (0, 3, 5, "user", 1),
        (0, 4, 1, "item", 2),
    ]
    assert rows[-1] == (2, 0, 2, "item", 0)
    assert str(t.schema.field("node_type").type) == "string"


def test_sequence_stats():
    g = hand_graph()
    st_ = sequence_stats(bfs_neighbor_sequences(g, n=5), g)
    assert st_["n"] == 5 and st_["rows"] == 3
    assert st_["length"] == {
        "min": 1,
        "median": 5.0,
        "mean": 11 / 3,
        "max": 5,
        "histogram": {1: 1, 5: 2},
    }
    assert st_["type_share_by_hop"][0] == {"count": 3, "item": 1.0, "entity": 0.0, "user": 0.0}
    assert st_["type_share_by_hop"][1] == {"count": 6, "item": 0.0, "entity": 2 / 6, "user": 4 / 6}
    assert st_["type_share_by_hop"][2]["item"] == 1.0
    assert st_["short"]["count"] == 1 and st_["short"]["isolated"] == 1
    assert st_["short"]["examples"] == [{"item_id": 2, "length": 1, "degree": 0, "max_hop": 0}]


def test_argument_validation():
    g = hand_graph()
    assert DEFAULT_SEQUENCE_LENGTH == 32
    with pytest.raises(ValueError, match="n must be"):
        bfs_neighbor_sequences(g, n=0)
    with pytest.raises(ValueError, match="tie_break"):
        bfs_neighbor_sequences(g, tie_break="bfs")
    with pytest.raises(ValueError, match="max_hops"):
        bfs_neighbor_sequences(g, max_hops=-1)
    with pytest.raises(ValueError, match="items out of range"):
        bfs_neighbor_sequences(g, items=[3])
