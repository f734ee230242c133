"""Local metadata readers, id resolution, the rate limiter and the retry policy (no network)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from datasources.errors import MalformedInputError
from datasources.media import (
    FetchCache,
    HostRateLimiter,
    LocalMetadata,
    build_item_refs,
    imdb_id_from_url,
    is_isbn10,
    normalize_imdb_id,
    read_links,
    read_omdb_records,
    read_poster_list,
    should_retry,
)


def _omdb_line(movie_id, title, omdb):
    return json.dumps(
        {"imdb_id": f"{movie_id:07d}", "ml_title": title, "movie_id": movie_id, "omdb": omdb}
    )


def test_read_omdb_records_gz_with_na_and_failed_lookups(tmp_path):
    path = tmp_path / "omdb.jsonl.gz"
    lines = [
        _omdb_line(
            1, "Toy Story (1995)", {"Plot": "A cowboy doll...", "Poster": "https://x/p.jpg"}
        ),
        _omdb_line(2, "Jumanji (1995)", {"Plot": "N/A", "Poster": "N/A"}),
        _omdb_line(3, "Gone (1995)", {"Response": "False", "Error": "Incorrect IMDb ID."}),
        "",
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    records = read_omdb_records(path)
    assert records["1"].plot == "A cowboy doll..." and records["1"].poster == "https://x/p.jpg"
    assert records["1"].imdb_id == "tt0000001" and records["1"].title == "Toy Story (1995)"
    assert (records["2"].plot, records["2"].poster) == (None, None)
    assert records["3"].plot is None and records["3"].imdb_id == "tt0000003"


def test_read_omdb_records_names_the_bad_line(tmp_path):
    path = tmp_path / "omdb.jsonl"
    path.write_text(_omdb_line(1, "A (1995)", {}) + "\n{broken\n")
    with pytest.raises(MalformedInputError, match=r"omdb.jsonl:2: invalid JSON"):
        read_omdb_records(path)


def test_read_poster_list_keeps_commas_in_urls(tmp_path):
    path = tmp_path / "posters.csv"
    path.write_text("movie_id,url\n1,https://m.media/x._V1_UX182_CR0,0,182,268_AL_.jpg\n2,N/A\n\n")
    assert read_poster_list(path) == {"1": "https://m.media/x._V1_UX182_CR0,0,182,268_AL_.jpg"}
    path.write_text("1,https://a/b.jpg\nx,https://a/c.jpg\n")
    with pytest.raises(MalformedInputError, match=":2: movie id is not an integer"):
        read_poster_list(path)


def test_read_links_both_layouts(tmp_path):
    ml25 = tmp_path / "links.csv"
    ml25.write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,0113497,\n")
    links = read_links(ml25)
    assert (links["1"].imdb_id, links["1"].tmdb_id) == ("tt0114709", "862")
    assert links["2"].tmdb_id is None
    artificial = tmp_path / "links_artificial.csv"
    artificial.write_text(
        'movie_id,title,imdbId,tmdbId\n11,"American President, The (1995)",112346,9087.0\n'
    )
    row = read_links(artificial)["11"]
    assert (row.imdb_id, row.tmdb_id, row.title) == (
        "tt0112346",
        "9087",
        "American President, The (1995)",
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("id,url\n1,x\n")
    with pytest.raises(MalformedInputError, match="expected columns"):
        read_links(bad)


def test_id_helpers():
    assert normalize_imdb_id("0114709") == normalize_imdb_id(114709) == "tt0114709"
    assert normalize_imdb_id("tt12345678") == "tt12345678"
    assert normalize_imdb_id("") is None and normalize_imdb_id(float("nan")) is None
    assert imdb_id_from_url("https://www.imdb.com/title/tt0114709/") == "tt0114709"
    assert imdb_id_from_url("http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)") is None
    assert is_isbn10("0262033844") and is_isbn10("080442957X")
    assert not is_isbn10("0262033845") and not is_isbn10("B00005JNOG") and not is_isbn10("12345")


def test_build_item_refs_by_key_and_by_title_year():
    local = LocalMetadata(
        omdb={},
        posters={},
        links={k: r for k, r in read_links_rows().items()},
    )
    items = pd.DataFrame(
        {
            "item_id": [1, 0, 2],
            "item_key": ["11", "1", "0262033844"],
            "title": ["The American President", "Toy Story", None],
            "year": pd.array([1995, 1995, None], dtype="Int64"),
            "genres": [["Comedy"], ["Animation", "Comedy"], None],
            "imdb_url": [None, None, "https://www.imdb.com/title/tt7654321/"],
        }
    )
    refs = build_item_refs(items, local)
    assert [r.item_id for r in refs] == [0, 1, 2]
    assert (refs[0].imdb_id, refs[0].tmdb_id, refs[0].genres) == (
        "tt0114709",
        "862",
        ("Animation", "Comedy"),
    )
    assert refs[2].imdb_id == "tt7654321" and refs[2].isbn == "0262033844" and refs[2].title is None

    # ML-100K: different ids, same movies - matched by normalised title and year.
    ml100k = pd.DataFrame(
        {
            "item_id": [0, 1, 2],
            "item_key": ["1", "2", "3"],
            "title": ["Toy Story", "American President, The", "Unknown Film"],
            "year": [1995, 1995, 1995],
            "genres": [None, None, None],
        }
    )
    refs = build_item_refs(ml100k, local, match_by="title_year")
    assert [r.local_key for r in refs] == ["1", "11", None]
    assert refs[1].imdb_id == "tt0112346" and refs[2].imdb_id is None


def read_links_rows():
    from datasources.media.local import LinkRow

    return {
        "1": LinkRow("tt0114709", "862", "Toy Story (1995)"),
        "11": LinkRow("tt0112346", "9087", "American President, The (1995)"),
    }


def test_rate_limiter_spaces_requests_per_host():
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)

    limiter = HostRateLimiter(10.0, burst=2, clock=lambda: now[0], sleep=sleep)
    assert [limiter.acquire("a") for _ in range(4)] == pytest.approx([0.0, 0.0, 0.1, 0.2])
    assert limiter.acquire("b") == 0.0  # hosts are independent
    now[0] = 10.0  # after a pause the burst is available again
    assert limiter.acquire("a") == 0.0
    unlimited = HostRateLimiter(None, per_host={"slow": 2.0}, clock=lambda: 0.0, sleep=sleep)
    assert unlimited.acquire("fast") == 0.0 and unlimited.acquire("fast") == 0.0
    assert unlimited.acquire("slow") == 0.0 and unlimited.acquire("slow") == pytest.approx(0.5)
    assert unlimited.acquire("") == 0.0


def test_retry_policy_and_cache_roundtrip(tmp_path):
    assert should_retry("timeout", "transient") and should_retry("http_error", "transient")
    assert not should_retry("not_found", "transient") and should_retry("not_found", "all")
    assert not should_retry("ok", "all") and not should_retry("timeout", "none")
    with pytest.raises(ValueError):
        should_retry("timeout", "often")
    with FetchCache(tmp_path / "c.sqlite") as cache:
        cache.put("image", "https://x/p.jpg", {"status": "ok", "sha256": "ab"})
        assert cache.get("image", "https://x/p.jpg") == {"status": "ok", "sha256": "ab"}
        assert cache.get("lookup", "https://x/p.jpg") is None and cache.count() == 1
    with FetchCache(tmp_path / "c.sqlite") as cache:  # persisted
        assert cache.get("image", "https://x/p.jpg")["sha256"] == "ab"
