"""The KG library on the real staged data (../shared/data), checked against SOURCES.md counts.

The data may not be redistributed, so nothing from it is stored in the repository: these tests
read it at run time and skip with a reason when it is absent. Point ``KG4REC_SHARED_DATA`` at
another copy to use that one. Run with ``-s`` to see the ML-1M Table-1 block and build time.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from datasources.kg.attributes import (
    amazon_category_triples,
    movielens_metadata_triples,
    omdb_triples,
    read_omdb_metadata,
    read_recbole_item_titles,
)
from datasources.kg.build import KGBuildOptions, build_kg, validate_kg
from datasources.kg.readers import (
    read_freebase_names,
    read_freebase_types,
    read_item_index2entity_id,
    read_kb4rec_links,
    read_kgat_item_list,
    read_kgat_remap_list,
    read_mkr_kg,
    read_recbole_atomic,
    read_recbole_kg,
    read_recbole_link,
)

pytestmark = pytest.mark.realdata

SHARED_DATA = Path(
    os.environ.get("KG4REC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def need(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set KG4REC_SHARED_DATA to the staged data)")
    return path


def movielens_items(path: Path) -> pd.DataFrame:
    """Items from ML-1M ``movies.dat`` (``MovieID::Title (Year)::Genre|Genre``, latin-1)."""
    records = []
    with path.open(encoding="latin-1") as fh:
        for line in fh:
            movie_id, title, genres = line.rstrip("\n").split("::")
            match = re.match(r"^(.*) \((\d{4})\)\s*$", title)
            records.append(
                (
                    int(movie_id),
                    match.group(1) if match else title,
                    int(match.group(2)) if match else None,
                    genres.split("|") if genres else None,
                )
            )
    records.sort()
    return pd.DataFrame(
        {
            "item_id": range(len(records)),
            "item_key": [str(r[0]) for r in records],
            "title": [r[1] for r in records],
            "year": pd.array([r[2] for r in records], dtype="Int64"),
            "genres": [r[3] for r in records],
        }
    )


@pytest.fixture(scope="module")
def ml1m_items() -> pd.DataFrame:
    return movielens_items(need("ml1m_raw/movies.dat"))


@pytest.fixture(scope="module")
def ml1m_rated() -> set[str]:
    """ML ids of the 3,706 rated movies: DERK's item_list is keyed by the MovieLens id."""
    ids = pd.read_csv(need("ml1m_derk_kgat/item_list.txt"), sep=" ", dtype=str)
    return set(ids["org_id"])


# --------------------------------------------------------------------------------------------
# ML-1M
# --------------------------------------------------------------------------------------------


def test_ml1m_items_and_rated_movies(ml1m_items: pd.DataFrame, ml1m_rated: set[str]) -> None:
    assert len(ml1m_items) == 3883
    assert len(ml1m_rated) == 3706
    assert ml1m_rated <= set(ml1m_items["item_key"])
    inter = pd.read_csv(need("ml1m_derived/interactions.tsv.gz"), sep="\t", usecols=["movie_id"])
    mapped = set(inter.loc[inter["movie_id"] != -1, "movie_id"].astype(str))
    assert len(inter) == 1_000_209
    assert mapped <= ml1m_rated


def test_ml1m_kb4rec_links(ml1m_items: pd.DataFrame, ml1m_rated: set[str]) -> None:
    links = read_kb4rec_links(need("kb4rec_links/ml2fb.txt.gz"))
    assert len(links) == 25_982
    in_ml1m = links[links["item_key"].isin(set(ml1m_items["item_key"]))]
    assert in_ml1m["item_key"].nunique() == 3811
    assert in_ml1m["item_key"].isin(ml1m_rated).sum() == 3655
    derk = read_kgat_item_list(need("ml1m_derk_kgat/item_list.txt"))
    assert len(derk) == 3655
    merged = derk.merge(links, on="item_key", suffixes=("_derk", "_kb4rec"))
    assert len(merged) == 3655
    assert (merged["entity_key_derk"] == merged["entity_key_kb4rec"]).all()


def test_ml1m_satori_kg(ml1m_items: pd.DataFrame) -> None:
    kg = read_mkr_kg(need("ml1m_kg_satori_mkr/kg.txt"))
    assert len(kg.drop_duplicates()) == 20_782
    assert kg["relation_key"].nunique() == 7
    assert kg["relation_key"].value_counts()["film.film.genre"] == 5271
    entities = pd.concat([kg["head_key"], kg["tail_key"]]).nunique()
    assert entities == 7008
    index = read_item_index2entity_id(need("ml1m_kg_satori_mkr/item_index2entity_id.txt"))
    assert len(index) == 2347
    assert index["item_key"].isin(set(ml1m_items["item_key"])).all()


def test_ml1m_names_types_omdb() -> None:
    names = read_freebase_names(need("ml1m_freebase_names_rexrex9/e_names_fb.tsv.gz"))
    assert len(names) == 35_511
    types = read_freebase_types(need("ml1m_freebase_names_rexrex9/e_types_fb.tsv.gz"))
    assert len(types) == 142_569
    omdb = read_omdb_metadata(need("ml1m_links_posters_omdb/omdb_metadata.jsonl.gz"))
    # 3,883 records; movie 2999's record is an OMDb "#DUPE#" stub with every field N/A.
    assert omdb["item_key"].nunique() == 3882
    assert set(omdb["field"]) == {
        "director", "writer", "actor", "genre", "language", "country", "production", "rated"
    }  # fmt: skip
    assert not omdb["value"].str.contains(r"\(screenplay|N/A", regex=True).any()


def test_ml1m_merged_kg(ml1m_items: pd.DataFrame, ml1m_rated: set[str]) -> None:
    start = time.perf_counter()
    links = [
        ("kb4rec", read_kb4rec_links(need("kb4rec_links/ml2fb.txt.gz"))),
        (
            "satori",
            read_item_index2entity_id(need("ml1m_kg_satori_mkr/item_index2entity_id.txt")),
        ),
    ]
    sources = [
        ("satori", read_mkr_kg(need("ml1m_kg_satori_mkr/kg.txt")), None),
        (
            "omdb",
            omdb_triples(
                read_omdb_metadata(need("ml1m_links_posters_omdb/omdb_metadata.jsonl.gz"))
            ),
        ),
        ("movielens", movielens_metadata_triples(ml1m_items)),
    ]
    names = read_freebase_names(need("ml1m_freebase_names_rexrex9/e_names_fb.tsv.gz"))
    read_s = time.perf_counter() - start
    result = build_kg(ml1m_items, links, sources, names=names, options=KGBuildOptions())
    total_s = time.perf_counter() - start

    assert validate_kg(result, len(ml1m_items)) == []
    overall = result.stats["overall"]
    assert 10_000 <= overall["n_entities"] <= 100_000
    assert overall["n_relations"] == 7 + 8 + 2
    assert result.stats["by_source"]["satori"]["n_triples"] == 20_782
    assert result.stats["links"]["kb4rec"]["n_links_unknown_item"] == 25_982 - 3811
    linked = set(result.item_links["item_id"])
    rated_ids = set(ml1m_items.loc[ml1m_items["item_key"].isin(ml1m_rated), "item_id"])
    share_rated_linked = len(linked & rated_ids) / len(rated_ids)
    assert share_rated_linked >= 0.95
    assert total_s < 15

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nML-1M KG (KB4Rec + Satori links; Satori + OMDb + MovieLens triples)")
        print(result.table1().to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("dropped:", result.stats["dropped"])
    print(
        f"rated movies linked: {len(linked & rated_ids)}/{len(rated_ids)} = {share_rated_linked:.4f}"
    )
    print(f"read {read_s:.2f}s, read+build {total_s:.2f}s")

    capped = build_kg(
        ml1m_items,
        links,
        sources,
        names=names,
        options=KGBuildOptions(
            add_reverse=True, min_entity_degree=2, min_relation_triples=10, max_entity_degree=500
        ),
    )
    assert validate_kg(capped, len(ml1m_items)) == []
    assert capped.stats["overall"]["n_entities"] < overall["n_entities"]


# --------------------------------------------------------------------------------------------
# ML-100K (RecBole, with a Freebase KG)
# --------------------------------------------------------------------------------------------


def test_ml100k_recbole_kg_and_build() -> None:
    kg = read_recbole_kg(need("ml100k_recbole_kg/ml-100k.kg.gz"))
    assert len(kg) == 91_631
    assert kg["relation_key"].nunique() == 24
    assert pd.concat([kg["head_key"], kg["tail_key"]]).nunique() == 34_628
    link = read_recbole_link(need("ml100k_recbole_kg/ml-100k.link"))
    assert len(link) == 1598

    raw = read_recbole_atomic(need("ml100k_recbole_kg/ml-100k.item"))
    raw = raw.assign(_id=raw["item_id"].astype(int)).sort_values("_id")
    items = pd.DataFrame(
        {
            "item_id": range(len(raw)),
            "item_key": raw["item_id"].to_numpy(),
            "title": raw["movie_title"].to_numpy(),
        }
    )
    assert len(items) == 1682
    result = build_kg(items, [("recbole", link)], [("freebase", kg, None)])
    assert validate_kg(result, len(items)) == []
    assert result.stats["overall"]["n_items_linked"] == 1598
    assert result.stats["overall"]["n_items_with_kg_neighbours"] >= 1500


# --------------------------------------------------------------------------------------------
# Amazon-Books
# --------------------------------------------------------------------------------------------


def test_amazon_kgat_items_match_kb4rec() -> None:
    kgat = read_kgat_item_list(need("amazon_book_kgat/item_list.txt.gz"))
    assert len(kgat) == 24_915
    assert kgat["item_key"].is_unique
    ab2fb = read_kb4rec_links(need("kb4rec_links/ab2fb.txt.gz"))
    assert len(ab2fb) == 109_671
    merged = kgat.merge(ab2fb, on="item_key", how="left", suffixes=("", "_kb4rec"))
    assert merged["entity_key_kb4rec"].notna().all()
    assert (merged["entity_key"] == merged["entity_key_kb4rec"]).all()
    entities = read_kgat_remap_list(need("amazon_book_kgat/entity_list.txt.gz"))
    assert len(entities) == 113_487
    assert (entities["org_id"].iloc[: len(kgat)].to_numpy() == kgat["entity_key"].to_numpy()).all()
    relations = read_kgat_remap_list(need("amazon_book_kgat/relation_list.txt"))
    assert len(relations) == 39


def test_amazon_titles_and_categories() -> None:
    path = need("amazon_books_recbole_kupa/Amazon-Books.item.gz")
    titles = read_recbole_item_titles(path)
    assert len(titles) == 23_170
    kgat = set(read_kgat_item_list(need("amazon_book_kgat/item_list.txt.gz"))["item_key"])
    # SOURCES.md's 15,685 counts KGAT items present in the .item file; 84 of them have no title.
    assert read_recbole_atomic(path)["item_id"].isin(kgat).sum() == 15_685
    assert titles["item_key"].isin(kgat).sum() == 15_601
    cats = amazon_category_triples(path)
    assert len(cats.triples) > 0
    assert not (cats.triples["tail_key"] == "category:Books").any()
    assert cats.triples["head_key"].str.startswith("item:").all()
