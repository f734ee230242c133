"""WikidataClient against a loopback SPARQL endpoint answering in the W3C SPARQL JSON format.

The ``server`` fixture (a fresh :class:`LoopbackServer`) comes from ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datasources.errors import DownloadError
from datasources.http import HttpClient, HttpSettings
from datasources.kg.wikidata import (
    BOOK_PROPERTIES,
    FILM_PROPERTIES,
    WikidataClient,
    build_query,
    mid_to_wikidata,
    parse_sparql_results,
    wikidata_to_mid,
)
from tests.support.http_server import LoopbackServer, RecordedRequest, Reply

UA = "kg4rec-tests/1.0 (test@example.org)"
WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., WikidataClient]]:
    https: list[HttpClient] = []

    def make(server: LoopbackServer, *, http_overrides: dict | None = None, **kw) -> WikidataClient:
        options = {
            "user_agent": UA,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "retries": 2,
            "backoff_factor": 0.01,
            "max_retry_after": 5.0,
            "progress": False,
        }
        options.update(http_overrides or {})
        http = HttpClient(tmp_path / "http-cache", HttpSettings(**options))
        https.append(http)
        kw.setdefault("min_interval_s", 0.0)
        kw.setdefault("cache_dir", tmp_path / "wd-cache")
        return WikidataClient(http, endpoint=server.url("/sparql"), **kw)

    yield make
    for http in https:
        http.close()


def lit(value: str) -> dict[str, str]:
    return {"type": "literal", "value": value}


def uri(value: str) -> dict[str, str]:
    return {"type": "uri", "value": value}


def binding(mid: str, pid: str, qid: str, value_mid: str | None = None, label: str | None = None):
    row = {"fb": lit(mid_to_wikidata(mid)), "p": uri(WDT + pid), "value": uri(WD + qid)}
    if value_mid:
        row["valueFb"] = lit(mid_to_wikidata(value_mid))
    if label:
        row["valueLabel"] = {"xml:lang": "en", "type": "literal", "value": label}
    return row


def results(rows: list[dict]) -> dict:
    return {
        "head": {"vars": ["fb", "p", "value", "valueFb", "valueLabel"]},
        "results": {"bindings": rows},
    }


def requested_mids(request: RecordedRequest) -> list[str]:
    query = request.query["query"][0]
    values = re.search(r"VALUES \?fb \{([^}]*)\}", query)
    assert values, query
    return [wikidata_to_mid(v) for v in re.findall(r'"([^"]+)"', values.group(1))]


def fake_endpoint(request: RecordedRequest) -> Reply:
    """Every MID is directed by ``Q<n>`` (Freebase ``m.d<mid>``) and has genre ``Q1`` (no MID)."""
    rows = []
    for mid in requested_mids(request):
        suffix = mid.split(".")[1]
        rows.append(
            binding(mid, "P57", f"Q9{len(suffix)}{suffix}", f"m.d{suffix}", f"Dir {suffix}")
        )
        rows.append(binding(mid, "P136", "Q1", None, "drama film"))
    body = json.dumps(results(rows)).encode()
    return Reply(body=body, content_type="application/sparql-results+json")


# --------------------------------------------------------------------------------------------


def test_mid_conversion_and_query_text() -> None:
    assert mid_to_wikidata("m.0dyb1") == "/m/0dyb1"
    assert mid_to_wikidata("g.11b6") == "/g/11b6"
    assert wikidata_to_mid("/m/0dyb1") == "m.0dyb1"
    assert wikidata_to_mid("Q5") is None
    with pytest.raises(ValueError):
        mid_to_wikidata('m.0"} . ?x ?y ?z {')
    query = build_query(["m.b", "m.a", "m.a"], ["P57", "P136"])
    assert 'VALUES ?fb { "/m/a" "/m/b" }' in query
    assert "VALUES ?p { wdt:P136 wdt:P57 }" in query
    assert "?item wdt:P646 ?fb ." in query
    assert "OPTIONAL { ?value wdt:P646 ?valueFb . }" in query
    with pytest.raises(ValueError):
        build_query(["m.a"], ["P57; DROP"])


def test_parse_results() -> None:
    rows = [
        binding("m.0dyb1", "P57", "Q1", "m.lasseter", "John Lasseter"),
        binding("m.0dyb1", "P136", "Q2", None, "animated film"),
        binding("m.0dyb1", "P136", "Q2", None, "animated film"),  # duplicate row
        binding("m.0dyb1", "P161", "Q3", "m.zz2"),  # Wikidata item with two Freebase ids:
        binding("m.0dyb1", "P161", "Q3", "m.zz1"),  # the smaller one is used
        {"fb": lit("/m/0dyb1"), "p": uri(WDT + "P57"), "value": lit("a literal")},
        binding("m.0dyb1", "P999", "Q4"),  # not a requested property
    ]
    pid_to_rel = {
        "P57": "film.film.directed_by",
        "P136": "film.film.genre",
        "P161": "film.film.starring",
    }
    triples, names = parse_sparql_results(results(rows), pid_to_rel)
    assert triples.to_numpy().tolist() == [
        ["m.0dyb1", "film.film.directed_by", "m.lasseter"],
        ["m.0dyb1", "film.film.genre", "wd:Q2"],
        ["m.0dyb1", "film.film.starring", "m.zz1"],
    ]
    assert names.to_numpy().tolist() == [
        ["m.lasseter", "John Lasseter", "director"],
        ["wd:Q2", "animated film", "genre"],
    ]
    with pytest.raises(DownloadError):
        parse_sparql_results({"head": {}}, pid_to_rel)


def test_batching_headers_and_result(server: LoopbackServer, make_client) -> None:
    server.add_handler("/sparql", fake_endpoint)
    client = make_client(server, batch_size=2)
    mids = ["m.05", "m.01", "m.04", "m.02", "m.03", "m.01"]
    out = client.triples_for_mids(mids, {"film.film.directed_by": "P57", "film.film.genre": "P136"})
    reqs = server.requests_for("/sparql")
    assert len(reqs) == 3  # ceil(5 unique / 2)
    assert [requested_mids(r) for r in reqs] == [["m.01", "m.02"], ["m.03", "m.04"], ["m.05"]]
    for r in reqs:
        assert r.method == "GET"
        assert r.query["format"] == ["json"]
        assert r.header("Accept") == "application/sparql-results+json"
        assert r.header("User-Agent") == UA
        assert "VALUES ?p { wdt:P136 wdt:P57 }" in r.query["query"][0]
    assert len(out.triples) == 10
    assert ["m.03", "film.film.directed_by", "m.d03"] in out.triples.to_numpy().tolist()
    assert ["m.03", "film.film.genre", "wd:Q1"] in out.triples.to_numpy().tolist()
    names = out.names.set_index("entity_key")
    assert names.loc["m.d03", ["name", "kind"]].tolist() == ["Dir 03", "director"]
    assert names.loc["wd:Q1", "name"] == "drama film"
    assert client.last_stats == {
        "n_batches": 3,
        "n_requests": 3,
        "n_cache_hits": 0,
        "n_bindings": 10,
    }


def test_cache_makes_rerun_request_free(
    server: LoopbackServer, make_client, tmp_path: Path
) -> None:
    server.add_handler("/sparql", fake_endpoint)
    client = make_client(server, batch_size=2)
    first = client.triples_for_mids(["m.01", "m.02", "m.03"])
    assert server.hits("/sparql") == 2
    assert len(list((tmp_path / "wd-cache").glob("*.json"))) == 2
    # A new client on the same cache dir, MIDs in another order: no request at all.
    again = make_client(server, batch_size=2).triples_for_mids(["m.03", "m.02", "m.01", "m.02"])
    assert server.hits("/sparql") == 2
    assert again.triples.equals(first.triples)
    # Different properties are a different query, hence a different cache entry.
    client.triples_for_mids(["m.01"], BOOK_PROPERTIES)
    assert server.hits("/sparql") == 3


def test_429_with_retry_after_then_ok(server: LoopbackServer, make_client) -> None:
    server.add("/sparql", b"slow down", status=429, headers={"Retry-After": "1"})
    server.add_handler("/sparql", fake_endpoint)
    client = make_client(server)
    start = time.monotonic()
    out = client.triples_for_mids(["m.01"], FILM_PROPERTIES)
    elapsed = time.monotonic() - start
    reqs = server.requests_for("/sparql")
    assert len(reqs) == 2
    assert reqs[1].received_at - reqs[0].received_at >= 0.9  # Retry-After honoured
    assert elapsed < 5
    assert len(out.triples) == 2


def test_500_then_ok(server: LoopbackServer, make_client) -> None:
    server.add("/sparql", b"oops", status=500)
    server.add_handler("/sparql", fake_endpoint)
    out = make_client(server).triples_for_mids(["m.01"])
    assert server.hits("/sparql") == 2
    assert len(out.triples) == 2


def test_persistent_error_and_timeout_raise_download_error(
    server: LoopbackServer, make_client, tmp_path: Path
) -> None:
    server.add("/sparql", b"down", status=503)
    client = make_client(server, http_overrides={"retries": 1})
    with pytest.raises(DownloadError):
        client.triples_for_mids(["m.01"])
    server.clear("/sparql")
    server.add("/sparql", json.dumps(results([])).encode(), delay=1.5)
    slow = make_client(server, http_overrides={"retries": 0, "read_timeout": 0.2})
    with pytest.raises(DownloadError):
        slow.triples_for_mids(["m.02"])
    assert not list((tmp_path / "wd-cache").glob("*.json"))  # failures are not cached


def test_unexpected_payload_is_not_cached(
    server: LoopbackServer, make_client, tmp_path: Path
) -> None:
    server.add_json("/sparql", {"error": "nope"})
    with pytest.raises(DownloadError, match="unexpected SPARQL response"):
        make_client(server).triples_for_mids(["m.01"])
    assert not list((tmp_path / "wd-cache").glob("*.json"))


def test_rate_limit_spaces_request_starts(server: LoopbackServer, make_client) -> None:
    # The client's clock, not the server's arrival times: under CPU load the loopback server
    # notices requests late by varying amounts, which says nothing about the client's spacing.
    server.add_handler("/sparql", fake_endpoint)
    starts: list[float] = []
    client = make_client(server, batch_size=1, min_interval_s=0.25)
    real_get_json = client.http.get_json

    def timed_get_json(*args, **kwargs):
        starts.append(time.monotonic())
        return real_get_json(*args, **kwargs)

    client.http.get_json = timed_get_json
    client.triples_for_mids(["m.01", "m.02", "m.03"])
    assert len(server.requests_for("/sparql")) == 3 and len(starts) == 3
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.25


def test_properties_must_be_unambiguous(server: LoopbackServer, make_client) -> None:
    client = make_client(server)
    with pytest.raises(ValueError, match="P136"):
        client.triples_for_mids(["m.01"], {**FILM_PROPERTIES, **BOOK_PROPERTIES})
    with pytest.raises(ValueError):
        client.triples_for_mids(["not-a-mid"])
    assert server.hits("/sparql") == 0
    empty = client.triples_for_mids([])
    assert empty.triples.empty and list(empty.triples.columns) == [
        "head_key",
        "relation_key",
        "tail_key",
    ]
