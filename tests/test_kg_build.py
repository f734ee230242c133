"""build_kg: id mapping, cleaning, thresholds, names/kinds and statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasources.kg.build import KGBuildOptions, KGResult, build_kg, validate_kg
from datasources.kg.readers import Triples


def make_items(keys: list[str], titles: list[str | None] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": np.arange(len(keys)),
            "item_key": keys,
            "title": titles if titles is not None else [f"Title {k}" for k in keys],
        }
    )


def links_df(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["item_key", "entity_key"])


def triples_df(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["head_key", "relation_key", "tail_key"])


def decoded(result: KGResult) -> set[tuple[str, str, str]]:
    """Triples as (head entity_key, relation_key, tail entity_key)."""
    keys = result.entities["entity_key"].to_numpy()
    rels = result.relations["relation_key"].to_numpy()
    kg = result.kg_triples
    return set(
        zip(
            keys[kg["head_id"]].tolist(),
            rels[kg["relation_id"]].tolist(),
            keys[kg["tail_id"]].tolist(),
            strict=True,
        )
    )


@pytest.fixture
def small() -> KGResult:
    items = make_items(["1", "2", "3", "4"])
    links = [
        ("kb4rec", links_df([("1", "m.a"), ("2", "m.b"), ("9", "m.z"), ("3", "m.c")])),
        ("satori", links_df([("1", "satori:0"), ("2", "satori:1"), ("77", "satori:9")])),
    ]
    freebase = triples_df(
        [
            ("m.a", "film.film.genre", "m.g1"),
            ("m.b", "film.film.genre", "m.g1"),
            ("m.a", "film.film.genre", "m.g1"),  # duplicate within the source
            ("m.a", "film.film.sequel", "m.a"),  # self-loop
            ("m.a", "film.film.sequel", "m.b"),  # item-item
        ]
    )
    satori = triples_df(
        [
            ("satori:0", "film.film.genre", "m.g1"),  # duplicate across sources after unification
            ("satori:0", "film.film.director", "satori:101"),
            ("satori:1", "film.film.director", "satori:101"),
        ]
    )
    meta = Triples(
        triples_df(
            [("item:1", "movie.genre", "genre:Comedy"), ("item:99", "movie.genre", "genre:X")]
        ),
        pd.DataFrame({"entity_key": ["genre:Comedy"], "name": ["Comedy"], "kind": ["genre"]}),
    )
    names = pd.DataFrame({"entity_key": ["m.g1", "m.a"], "name": ["Drama", "Toy Story FB"]})
    return build_kg(
        items,
        links,
        [("freebase", freebase, None), ("satori", satori, None), ("movielens", meta)],
        names=names,
    )


def test_items_first_and_contiguous(small: KGResult) -> None:
    ent = small.entities
    assert validate_kg(small, 4) == []
    assert ent["entity_id"].tolist() == list(range(len(ent)))
    assert ent["kind"].tolist()[:4] == ["item"] * 4
    assert ent["entity_key"].tolist()[:4] == ["m.a", "m.b", "m.c", "item:4"]
    assert ent["name"].tolist()[:4] == ["Title 1", "Title 2", "Title 3", "Title 4"]
    # attribute entities after the items, sorted by key
    attr = ent["entity_key"].tolist()[4:]
    assert attr == sorted(attr) == ["genre:Comedy", "m.g1", "satori:101"]
    assert small.relations["relation_key"].tolist() == sorted(small.relations["relation_key"])


def test_unification_dedupe_and_counts(small: KGResult) -> None:
    assert decoded(small) == {
        ("m.a", "film.film.genre", "m.g1"),
        ("m.b", "film.film.genre", "m.g1"),
        ("m.a", "film.film.sequel", "m.b"),
        ("m.a", "film.film.director", "satori:101"),
        ("m.b", "film.film.director", "satori:101"),
        ("m.a", "movie.genre", "genre:Comedy"),
    }
    dropped = small.stats["dropped"]
    assert dropped["duplicate_triples"] == 2
    assert dropped["self_loops"] == 1
    assert dropped["unknown_item_key_triples"] == 1
    assert dropped["unknown_item_key_examples"] == ["item:99"]
    assert small.stats["by_source"]["freebase"]["dropped"]["duplicates"] == 1
    assert small.stats["by_source"]["satori"]["dropped"]["duplicates"] == 1
    # the surviving copy keeps the earliest source
    kg = small.kg_triples
    genre = small.relations.set_index("relation_key").loc["film.film.genre", "relation_id"]
    assert set(kg.loc[kg["relation_id"] == genre, "source"]) == {"freebase"}


def test_unknown_links_are_counted_with_examples(small: KGResult) -> None:
    links = small.stats["links"]
    assert links["kb4rec"]["n_links_unknown_item"] == 1
    assert links["kb4rec"]["unknown_item_examples"] == ["9"]
    assert links["satori"]["unknown_item_examples"] == ["77"]
    assert small.stats["dropped"]["links_unknown_item"] == 2
    assert links["kb4rec"]["n_items_linked"] == 3
    assert links["kb4rec"]["share_items_linked"] == pytest.approx(0.75)
    assert small.item_links.columns.tolist() == ["item_id", "entity_key", "source"]
    assert small.item_links.to_numpy().tolist() == [
        [0, "m.a", "kb4rec"],
        [0, "satori:0", "satori"],
        [1, "m.b", "kb4rec"],
        [1, "satori:1", "satori"],
        [2, "m.c", "kb4rec"],
    ]


def test_table1_and_names_kinds(small: KGResult) -> None:
    table = small.table1()
    overall = table.iloc[0]
    assert overall["source"] == "all"
    assert overall["n_entities"] == 7
    assert overall["n_triples"] == 6
    assert overall["n_relations"] == 4
    assert overall["n_items_linked"] == 3
    assert overall["n_items_with_kg_neighbours"] == 2
    assert table.set_index("source").loc["movielens", "n_triples"] == 1
    ent = small.entities.set_index("entity_key")
    assert ent.loc["m.g1", "name"] == "Drama"
    assert ent.loc["m.g1", "kind"] == "genre"  # inferred from film.film.genre
    assert ent.loc["genre:Comedy", ["name", "kind"]].tolist() == ["Comedy", "genre"]
    assert ent.loc["satori:101", "kind"] == "director"
    assert ent.loc["satori:101", "name"] is None


def test_items_joined_through_item_keys_count_as_linked() -> None:
    """Metadata triples name items directly (``item:<key>``), with no link row: those items
    are joined to the KG, and Table 1 says so."""
    items = make_items(["1", "2", "3", "4"])
    meta = triples_df([("item:1", "genre", "g:a"), ("item:2", "genre", "g:a"),
                       ("item:3", "genre", "g:b"), ("item:4", "genre", "g:b")])
    result = build_kg(items, [], [("movielens", meta, None)])
    overall = result.stats["overall"]
    assert len(result.item_links) == 0
    assert overall["n_items_linked"] == 4 and overall["share_items_linked"] == 1.0
    assert overall["n_items_with_kg_neighbours"] == 4
    assert result.table1().iloc[0]["n_items_linked"] == 4

    # a linked key (item 1) plus an item:<key> triple (item 3); item 2 has a link but no kept
    # triple (still linked), item 4 nothing
    mixed = build_kg(items, [("kb4rec", links_df([("1", "m.a"), ("2", "m.b")]))],
                     [("freebase", triples_df([("m.a", "film.genre", "m.g")]), None),
                      ("movielens", triples_df([("item:3", "genre", "g:b")]), None)])
    assert mixed.stats["overall"]["n_items_linked"] == 3
    assert mixed.stats["overall"]["share_items_linked"] == pytest.approx(0.75)
    assert mixed.stats["overall"]["n_items_with_kg_neighbours"] == 2


def test_name_and_kind_priority() -> None:
    items = make_items(["1"], titles=[None])
    src_names = pd.DataFrame(
        {"entity_key": ["m.p", "m.q"], "name": ["Source name", None], "kind": [None, "writer"]}
    )
    names = pd.DataFrame({"entity_key": ["m.p", "m.q", "m.i"], "name": ["Global", "Q", "Item FB"]})
    types = pd.DataFrame({"entity_key": ["m.p", "m.q"], "type": ["directed_by", "actor"]})
    triples = triples_df(
        [
            ("m.i", "x.rel", "m.p"),
            ("m.i", "x.rel", "m.q"),
            ("m.i", "x.rel", "wd:Q5"),
            ("m.i", "x.rel", "foo"),
        ]
    )
    result = build_kg(
        items,
        [("fb", links_df([("1", "m.i")]))],
        [("src", triples, src_names)],
        names=names,
        types=types,
    )
    ent = result.entities.set_index("entity_key")
    assert ent.loc["m.i", "name"] == "Item FB"  # no title: the linked key's name
    assert ent.loc["m.p", ["name", "kind"]].tolist() == ["Source name", "director"]
    assert ent.loc["m.q", ["name", "kind"]].tolist() == ["Q", "writer"]
    assert ent.loc["wd:Q5", "kind"] == "wikidata"
    assert ent.loc["foo", "kind"] == "entity"


def test_conflicting_links_first_claim_wins() -> None:
    items = make_items(["1", "2"])
    result = build_kg(
        items,
        [("a", links_df([("1", "m.x")])), ("b", links_df([("2", "m.x"), ("2", "m.y")]))],
        [("t", triples_df([("m.x", "r", "m.z"), ("m.y", "r", "m.z")]), None)],
    )
    assert result.stats["dropped"]["links_key_claimed_by_other_item"] == 1
    assert result.stats["links"]["b"]["conflict_examples"] == ["m.x"]
    assert result.entities["entity_key"].tolist()[:2] == ["m.x", "m.y"]
    assert decoded(result) == {("m.x", "r", "m.z"), ("m.y", "r", "m.z")}
    assert validate_kg(result, 2) == []


def test_reverse_relations() -> None:
    items = make_items(["1", "2"])
    triples = triples_df(
        [("item:1", "b.rel", "x"), ("item:2", "a.rel", "x"), ("item:2", "b.rel", "y")]
    )
    result = build_kg(items, [], [("t", triples, None)], options=KGBuildOptions(add_reverse=True))
    assert validate_kg(result, 2) == []
    assert result.relations["relation_key"].tolist() == ["a.rel", "b.rel", "a.rel~inv", "b.rel~inv"]
    assert result.relations["n_triples"].tolist() == [1, 2, 1, 2]
    assert len(result.kg_triples) == 6
    assert ("x", "b.rel~inv", "item:1") in decoded(result)
    assert result.stats["overall"]["n_triples_forward"] == 3
    with pytest.raises(ValueError, match="~inv"):
        build_kg(
            items,
            [],
            [("t", triples_df([("item:1", "r~inv", "x")]), None)],
            options=KGBuildOptions(add_reverse=True),
        )


def test_thresholds_reach_a_fixpoint_and_never_drop_items() -> None:
    items = make_items(["1", "2", "3"])
    triples = triples_df(
        [
            ("item:1", "genre", "g:common"),
            ("item:2", "genre", "g:common"),
            ("item:3", "genre", "g:rare"),  # degree 1 -> dropped
            ("item:1", "rare.rel", "g:common"),  # relation with 1 triple -> dropped
            ("item:1", "director", "p:x"),
            ("item:2", "director", "p:x"),
            ("item:1", "writer", "p:y"),  # p:y has degree 2 and 'writer' 2 triples: both kept
            ("p:y", "writer", "p:x"),
            ("item:1", "sequel", "item:3"),  # item-item: items have no degree limit
        ]
    )
    options = KGBuildOptions(min_relation_triples=2, min_entity_degree=2)
    result = build_kg(items, [], [("t", triples, None)], options=options)
    assert validate_kg(result, 3) == []
    assert ("item:3", "genre", "g:rare") not in decoded(result)
    assert all(rel != "rare.rel" for _, rel, _ in decoded(result))
    dropped = result.stats["dropped"]
    assert dropped["relations_dropped"] == ["rare.rel", "sequel"]
    assert dropped["by_min_relation_triples"] == 2
    assert dropped["by_min_entity_degree"] == 1
    assert dropped["attribute_entities_dropped"] == 1
    assert result.stats["overall"]["n_items"] == 3
    assert len(result.entities) == 3 + 3  # g:common, p:x, p:y
    # every surviving relation/attribute satisfies the thresholds
    assert (result.relations["n_triples"] >= 2).all()
    kg = result.kg_triples
    degree = np.bincount(np.r_[kg["head_id"], kg["tail_id"]], minlength=len(result.entities))
    assert (degree[3:] >= 2).all()


def test_hub_cap_is_deterministic_and_order_independent() -> None:
    items = make_items([str(i) for i in range(20)])
    rows = [(f"item:{i}", "genre", "g:hub") for i in range(20)] + [("item:0", "genre", "g:small")]
    triples = triples_df(rows)
    options = KGBuildOptions(max_entity_degree=5, seed=7)
    a = build_kg(items, [], [("t", triples, None)], options=options)
    b = build_kg(
        items, [], [("t", triples.iloc[::-1].reset_index(drop=True), None)], options=options
    )
    assert validate_kg(a, 20) == []
    assert decoded(a) == decoded(b)
    kg = a.kg_triples
    hub = a.entities.set_index("entity_key").loc["g:hub", "entity_id"]
    assert (kg["tail_id"] == hub).sum() == 5
    assert ("item:0", "genre", "g:small") in decoded(a)  # entities under the cap keep all
    assert a.stats["dropped"]["by_max_entity_degree"] == 15
    chosen = {
        frozenset(
            decoded(
                build_kg(
                    items,
                    [],
                    [("t", triples, None)],
                    options=KGBuildOptions(max_entity_degree=5, seed=s),
                )
            )
        )
        for s in range(6)
    }
    assert len(chosen) > 1  # the seed matters


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.n_items-1"):
        build_kg(pd.DataFrame({"item_id": [1, 2], "item_key": ["a", "b"]}))
    with pytest.raises(ValueError, match="not unique"):
        build_kg(pd.DataFrame({"item_id": [0, 1], "item_key": ["a", "a"]}))
    with pytest.raises(ValueError, match="lacks columns"):
        build_kg(make_items(["1"]), [("x", pd.DataFrame({"item_key": ["1"]}))])
    with pytest.raises(ValueError, match="max_entity_degree"):
        KGBuildOptions(max_entity_degree=0)


def test_empty_inputs() -> None:
    result = build_kg(make_items(["1", "2"]))
    assert validate_kg(result, 2) == []
    assert result.entities["entity_key"].tolist() == ["item:1", "item:2"]
    assert len(result.kg_triples) == 0 and len(result.relations) == 0
    assert result.stats["overall"]["n_items_with_kg_neighbours"] == 0


def test_validate_kg_reports_violations(small: KGResult) -> None:
    broken = KGResult(
        small.item_links,
        small.entities.assign(kind=["genre", *small.entities["kind"].tolist()[1:]]),
        small.relations,
        pd.concat([small.kg_triples, small.kg_triples.iloc[:1]], ignore_index=True),
        small.stats,
    )
    problems = validate_kg(broken, 4)
    assert any("items-first" in p for p in problems)
    assert any("duplicate triples" in p for p in problems)
    assert any("n_triples" in p for p in problems)


# --------------------------------------------------------------------------------------------
# Property-based: invariants and agreement with a naive reference on random small inputs
# --------------------------------------------------------------------------------------------

ITEM_KEYS = [str(i) for i in range(6)]
ENTITY_KEYS = [
    "m.a",
    "m.b",
    "m.c",
    "satori:1",
    "satori:2",
    "g:x",
    "g:y",
    "item:0",
    "item:3",
    "item:9",
]
RELS = ["r1", "r2", "r3"]


def reference(
    n_items: int, links: list[list[tuple[str, str]]], triples: list[list[tuple[str, str, str]]]
):
    """Straightforward per-row implementation of the mapping rules."""
    claim: dict[str, int] = {}
    for source in links:
        for item_key, key in source:
            if item_key in ITEM_KEYS[:n_items] and key not in claim:
                claim[key] = int(item_key)
    for i in range(n_items):
        claim.setdefault(f"item:{i}", i)
    out = set()
    for source in triples:
        for h, r, t in source:
            if any(k.startswith("item:") and k not in claim for k in (h, t)):
                continue
            hn = ("item", claim[h]) if h in claim else ("attr", h)
            tn = ("item", claim[t]) if t in claim else ("attr", t)
            if hn != tn:
                out.add((hn, r, tn))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_items=st.integers(1, 6),
    links=st.lists(
        st.lists(
            st.tuples(st.sampled_from([*ITEM_KEYS, "99"]), st.sampled_from(ENTITY_KEYS[:5])),
            max_size=6,
        ),
        max_size=3,
    ),
    triples=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(ENTITY_KEYS), st.sampled_from(RELS), st.sampled_from(ENTITY_KEYS)
            ),
            max_size=12,
        ),
        min_size=1,
        max_size=3,
    ),
    add_reverse=st.booleans(),
    min_deg=st.integers(1, 3),
    min_rel=st.integers(1, 3),
    cap=st.one_of(st.none(), st.integers(1, 4)),
)
def test_invariants_property(n_items, links, triples, add_reverse, min_deg, min_rel, cap) -> None:
    items = make_items(ITEM_KEYS[:n_items])
    link_sources = [(f"l{i}", links_df(s)) for i, s in enumerate(links)]
    triple_sources = [(f"t{i}", triples_df(s), None) for i, s in enumerate(triples)]
    options = KGBuildOptions(
        add_reverse=add_reverse,
        min_entity_degree=min_deg,
        min_relation_triples=min_rel,
        max_entity_degree=cap,
        seed=3,
    )
    result = build_kg(items, link_sources, triple_sources, options=options)
    assert validate_kg(result, n_items) == []
    assert result.entities["kind"].tolist()[:n_items] == ["item"] * n_items
    again = build_kg(items, link_sources, triple_sources, options=options)
    pd.testing.assert_frame_equal(result.kg_triples, again.kg_triples)
    pd.testing.assert_frame_equal(result.entities, again.entities)

    # Without filters the forward triples are exactly the reference set.
    plain = build_kg(items, link_sources, triple_sources)
    keys = plain.entities["entity_key"].to_numpy()
    rels = plain.relations["relation_key"].to_numpy()

    def node(entity_id: int) -> tuple[str, object]:
        return ("item", entity_id) if entity_id < n_items else ("attr", keys[entity_id])

    got = {
        (node(h), rels[r], node(t))
        for h, r, t in plain.kg_triples[["head_id", "relation_id", "tail_id"]].itertuples(
            index=False
        )
    }
    assert got == reference(n_items, links, triples)
    n_rows = sum(len(s) for s in triples)
    dropped = plain.stats["dropped"]
    assert (
        len(got)
        + dropped["duplicate_triples"]
        + dropped["self_loops"]
        + dropped["unknown_item_key_triples"]
        == n_rows
    )
    # Filters only ever remove triples.
    forward = result.stats["overall"]["n_triples_forward"]
    assert forward <= len(got)
