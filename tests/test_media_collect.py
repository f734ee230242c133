"""The media collector against a loopback imitation of OMDb, TMDB, Wikipedia and Open Library.

Covers the chain order, every failure a real image host produces, the cross-run cache
(incremental, refresh, retry policy), offline mode, content-addressed dedupe, rate limiting,
circuit breakers, and that API keys never leave the request.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import replace

import pytest

from datasources.media import LocalMetadata, MediaSettings, media_problems, summarize_media
from datasources.media.local import OmdbRecord
from tests.support.http_server import RecordedRequest, Reply
from tests.test_media_helpers import (
    HTML_ERROR_PAGE,
    SECRET_OMDB,
    SECRET_TMDB,
    TEST_HTTP,
    FakeMediaApis,
    bomb_png,
    collect,
    endpoints,
    jpeg_bytes,
    movie,
    row,
    serve_image,
)


def _local(**records: tuple[str | None, str | None]) -> LocalMetadata:
    """``LocalMetadata`` with OMDb records ``{movie_id: (plot, poster_url)}``."""
    return LocalMetadata(
        omdb={
            k: OmdbRecord(f"tt{int(k):07d}", f"Movie {k} (1995)", plot, poster)
            for k, (plot, poster) in records.items()
        }
    )


# -- chains ---------------------------------------------------------------------------------


def test_chain_order_first_success_wins(server, tmp_path):
    apis = FakeMediaApis(server)
    apis.omdb_movie("tt0000001", plot="API plot", poster=server.url("/img/api.jpg"))
    good = serve_image(server, "/img/good.jpg", jpeg_bytes())
    local = _local(**{"1": ("Local plot.", server.url("/img/gone.jpg"))})  # 404: not served
    local.posters = {"1": good}

    run = collect(tmp_path, [movie(0, imdb_id="tt0000001")], server=server, local=local)

    r = row(run, 0)
    assert (r["poster_status"], r["poster_source"], r["poster_url"]) == ("ok", "poster_list", good)
    assert r["poster_attempts"][0].startswith("omdb_file: not_found (HTTP 404")
    assert r["poster_attempts"][1] == "poster_list: ok"
    assert (r["description"], r["description_source"], r["description_origin"]) == (
        "Local plot.",
        "omdb_plot",
        "omdb_file",
    )
    assert server.hits("/omdb/") == 0  # nothing after the first success is asked
    assert r["poster_path"].endswith(f"{r['poster_sha256']}.jpg")
    assert (r["poster_width"], r["poster_height"]) == (60, 90)


def test_configured_order_and_one_request_serves_both_chains(server, tmp_path):
    apis = FakeMediaApis(server)
    api_poster = serve_image(server, "/img/api.jpg", jpeg_bytes(color=(1, 2, 3)))
    apis.omdb_movie("tt0000001", plot="A full plot from the API.", poster=api_poster)
    local = _local(**{"1": ("Local plot.", None)})

    run = collect(
        tmp_path,
        [movie(0, imdb_id="tt0000001")],
        server=server,
        local=local,
        poster_sources=("omdb_api", "omdb_file"),
        description_sources=("omdb_api", "omdb_file"),
    )

    r = row(run, 0)
    assert (r["poster_source"], r["poster_url"], r["description_origin"]) == (
        "omdb_api",
        api_poster,
        "omdb_api",
    )
    assert r["description"] == "A full plot from the API."
    [request] = server.requests_for("/omdb/")  # one lookup answered both chains
    assert request.query["i"] == ["tt0000001"] and request.query["plot"] == ["full"]
    assert request.query["apikey"] == [SECRET_OMDB]
    assert "multi-kg4rec" in request.header("User-Agent")


def test_omdb_title_search_without_imdb_id_and_not_found(server, tmp_path):
    apis = FakeMediaApis(server)
    apis.omdb_movie("tt0000009", title="Known", plot="Found by title.")
    refs = [movie(0, title="Known"), movie(1, title="Unknown")]

    run = collect(
        tmp_path, refs, server=server, description_sources=("omdb_api",), poster_sources=()
    )

    assert row(run, 0)["description"] == "Found by title."
    r = row(run, 1)
    assert r["description"] is None and r["description_source"] == "none"
    assert r["description_attempts"] == ["omdb_api: not_found (OMDb: Movie not found!)"]
    assert {q.query["t"][0] for q in server.requests_for("/omdb/")} == {"Known", "Unknown"}
    assert row(run, 0)["poster_status"] == "no_source"


def test_tmdb_overview_and_poster_path(server, tmp_path):
    apis = FakeMediaApis(server)
    apis.tmdb_movie("862", overview="Toys come alive.", poster_path="/abc123.jpg")
    apis.tmdb_movie("999", status=404)
    serve_image(server, "/tmdbimg/t/p/w500/abc123.jpg", jpeg_bytes())
    refs = [movie(0, tmdb_id="862"), movie(1, tmdb_id="999"), movie(2)]

    run = collect(
        tmp_path,
        refs,
        server=server,
        poster_sources=("tmdb_api",),
        description_sources=("tmdb_api", "title_genres"),
    )

    r = row(run, 0)
    assert (
        r["poster_url"] == server.url("/tmdbimg/t/p/w500/abc123.jpg") and r["poster_status"] == "ok"
    )
    assert (r["description"], r["description_source"]) == ("Toys come alive.", "tmdb_overview")
    assert server.requests_for("/tmdb/3/movie/862")[0].query["api_key"] == [SECRET_TMDB]
    r1 = row(run, 1)
    assert (
        r1["poster_status"] == "no_source"
        and "tmdb_api: not_found (tmdb_api: HTTP 404)" in r1["poster_error"]
    )
    assert (r1["description"], r1["description_source"]) == (
        "Movie 1 (1995). Drama.",
        "title_genres_fallback",
    )
    assert row(run, 2)["poster_attempts"] == ["tmdb_api: skipped (no TMDB id)"]


def test_wikipedia_prefers_film_pages_and_rejects_other_meanings(server, tmp_path):
    apis = FakeMediaApis(server)
    poster = serve_image(server, "/img/toy.jpg", jpeg_bytes())
    apis.wiki_page(
        "Toy Story (film)",
        extract="Toy Story is a 1995 American animated film.",
        description="1995 American animated film",
        image=poster,
    )
    apis.wiki_page("Heat (film)", extract="Heat may refer to several films.", kind="disambiguation")
    apis.wiki_page("Heat", extract="In thermodynamics, heat is energy in transfer.")
    refs = [movie(0, title="Toy Story"), movie(1, title="Heat")]

    run = collect(
        tmp_path,
        refs,
        server=server,
        poster_sources=("wikipedia",),
        description_sources=("wikipedia",),
    )

    r = row(run, 0)
    assert r["description_source"] == "wikipedia_extract" and r["poster_status"] == "ok"
    assert (
        server.hits("/wiki/api/rest_v1/page/summary/Toy_Story_%281995_film%29") == 1
    )  # tried first
    r1 = row(run, 1)
    assert r1["description"] is None
    assert "no matching Wikipedia article (3 titles tried)" in r1["description_attempts"][0]


def test_openlibrary_cover_and_work_description_through_redirect(server, tmp_path):
    apis = FakeMediaApis(server)
    isbn = "0262033844"
    apis.openlibrary_book(
        isbn,
        description=None,
        cover=jpeg_bytes(),
        work_description={"type": "/type/text", "value": "An algorithms book."},
    )
    refs = [
        movie(0, key=isbn, isbn=isbn, kind="book", title=None),
        movie(1, key="B00000XYZ1", kind="book", title=None),
    ]

    run = collect(
        tmp_path,
        refs,
        server=server,
        poster_sources=("openlibrary",),
        description_sources=("openlibrary", "title_genres"),
    )

    r = row(run, 0)
    assert r["poster_url"] == server.url(f"/covers/b/isbn/{isbn}-L.jpg?default=false")
    assert r["poster_status"] == "ok"
    assert server.requests_for(f"/covers/b/isbn/{isbn}-L.jpg")[0].query == {"default": ["false"]}
    assert (r["description"], r["description_source"]) == (
        "An algorithms book.",
        "openlibrary_description",
    )
    r1 = row(run, 1)
    assert r1["poster_status"] == "no_source" and r1["description_source"] == "none"
    assert (
        r1["description_attempts"][0]
        == "openlibrary: skipped (no ISBN-10 (the ASIN is not an ISBN))"
    )


# -- failures -------------------------------------------------------------------------------


def test_every_failure_kind_gets_a_row_and_a_reason(server, tmp_path):
    ok = jpeg_bytes((60, 90), noise=True)
    urls = {
        0: server.url("/img/missing.jpg"),
        1: serve_image(
            server, "/img/429.jpg", b"slow down", status=429, headers={"Retry-After": "1"}
        ),
        2: serve_image(server, "/img/500.jpg", b"oops", status=500),
        3: serve_image(server, "/img/slow.jpg", ok, delay=1.2),
        4: serve_image(server, "/img/truncated.jpg", ok[: len(ok) // 2]),
        5: serve_image(server, "/img/html.jpg", HTML_ERROR_PAGE),
        6: serve_image(server, "/img/bomb.png", bomb_png(), content_type="image/png"),
        7: server.url("/img/loop-a.jpg"),
        8: serve_image(server, "/img/cut.jpg", ok, truncate_to=200),
    }
    server.add("/img/429.jpg", ok, content_type="image/jpeg")
    server.add("/img/500.jpg", ok, content_type="image/jpeg")
    server.add("/img/loop-a.jpg", status=302, headers={"Location": "/img/loop-b.jpg"})
    server.add("/img/loop-b.jpg", status=302, headers={"Location": "/img/loop-a.jpg"})
    local = LocalMetadata(posters={str(k + 1): url for k, url in urls.items()})
    refs = [movie(k) for k in urls]

    run = collect(
        tmp_path,
        refs,
        local=local,
        poster_sources=("poster_list",),
        description_sources=("title_genres",),
        workers=6,
    )

    statuses = {k: row(run, k)["poster_status"] for k in urls}
    assert statuses == {
        0: "not_found",
        1: "ok",
        2: "ok",
        3: "timeout",
        4: "invalid_image",
        5: "invalid_image",
        6: "too_large",
        7: "redirect_loop",
        8: "network_error",
    }
    errors = {k: row(run, k)["poster_error"] for k in urls}
    assert errors[0] == "HTTP 404" and errors[3] == "timed out (after retries)"
    assert errors[5] == "not an image: body looks like HTML" and errors[6] == (
        "decompression bomb: header claims 400,000,000 px (limit 40,000,000 px)"
    )
    assert errors[8] == f"body cut short after 200 of {len(ok)} bytes"
    assert all(row(run, k)["poster_url"] == urls[k] for k in urls)  # the original URL is kept
    first, second = server.requests_for("/img/429.jpg")
    assert second.received_at - first.received_at >= 0.9  # Retry-After honoured
    assert server.hits("/img/500.jpg") == 2
    assert len(run.frame) == len(refs) and run.frame["description"].notna().all()

    summary = summarize_media(run.frame)
    assert (summary["attempted"], summary["failed"]) == (9, 7)
    assert summary["status_counts"]["invalid_image"] == 2
    assert media_problems(summary, max_failure_rate=0.5) == [
        "poster failure rate 77.8% (7 of 9 fetched) exceeds 50.0%"
    ]
    assert media_problems(summary, max_failure_rate=0.8) == []


def test_stream_to_disk_resumes_cut_bodies_and_reads_local_mirrors_in_place(server, tmp_path):
    ok = jpeg_bytes((60, 90), noise=True)
    mirror = tmp_path / "mirror"
    (mirror / "posters").mkdir(parents=True)
    (mirror / "posters" / "m.jpg").write_bytes(jpeg_bytes(color=(5, 5, 5)))
    local = LocalMetadata(
        posters={
            "1": serve_image(server, "/img/resumed.jpg", ok, truncate_to=len(ok) // 2),
            "2": serve_image(server, "/img/cut.jpg", ok, truncate_to=200, supports_ranges=False),
            "3": "https://posters.example/posters/m.jpg",  # served from the mirror directory
        }
    )
    http = replace(TEST_HTTP, mirrors={"https://posters.example/": str(mirror)})
    run = collect(
        tmp_path / "data",
        [movie(0), movie(1), movie(2)],
        local=local,
        http=http,
        stream_to_disk=True,
        poster_sources=("poster_list",),
        description_sources=(),
    )
    assert list(run.frame["poster_status"]) == ["ok", "network_error", "ok"]
    assert [r.header("Range") for r in server.requests_for("/img/resumed.jpg")] == [
        None,
        f"bytes={len(ok) // 2}-",
    ]
    assert row(run, 1)["poster_error"] == f"body cut short after 200 of {len(ok)} bytes"
    assert row(run, 2)["poster_url"] == "https://posters.example/posters/m.jpg"
    assert (mirror / "posters" / "m.jpg").is_file()  # a local source is never deleted
    downloads = tmp_path / "data" / "cache" / "media" / "downloads"
    assert not [p for p in downloads.rglob("*") if p.name == "body"]  # raw copies dropped


def test_unexpected_answers_do_not_fail_the_run(server, tmp_path):
    server.add_json("/omdb/", ["not", "an", "object"])
    server.add("/tmdb/3/movie/5", b"{not json", content_type="application/json")
    run = collect(
        tmp_path,
        [movie(0, imdb_id="tt0000001", tmdb_id="5")],
        server=server,
        description_sources=("omdb_api", "tmdb_api", "title_genres"),
        poster_sources=(),
    )
    attempts = row(run, 0)["description_attempts"]
    assert attempts[0] == "omdb_api: http_error (OMDb: answer is not a JSON object)"
    assert attempts[1].startswith("tmdb_api: network_error (tmdb_api: invalid JSON")
    assert row(run, 0)["description_source"] == "title_genres_fallback"


def test_invalid_key_disables_the_source_after_the_first_401(server, tmp_path):
    FakeMediaApis(server)
    refs = [movie(k, imdb_id=f"tt{k + 1:07d}") for k in range(5)]
    run = collect(
        tmp_path,
        refs,
        server=server,
        api_keys={"omdb": "wrong-key-123"},
        workers=1,
        poster_sources=("omdb_api",),
        description_sources=("omdb_api",),
    )
    assert server.hits("/omdb/") == 1
    assert run.stats["disabled_sources"] == {
        "omdb_api": "disabled after HTTP 401 (check the API key)"
    }
    assert row(run, 4)["description_attempts"] == [
        "omdb_api: skipped (disabled after HTTP 401 (check the API key))"
    ]


def test_unreachable_host_is_given_up_after_a_streak(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    local = LocalMetadata(
        posters={str(k + 1): f"http://127.0.0.1:{port}/p{k}.jpg" for k in range(6)}
    )
    run = collect(
        tmp_path,
        [movie(k) for k in range(6)],
        local=local,
        workers=1,
        poster_sources=("poster_list",),
        description_sources=(),
        host_failure_limit=3,
    )
    assert run.stats["image_requests"] == 3
    assert set(run.frame["poster_status"]) == {"network_error"}
    assert "unreachable after 3 consecutive connection failures" in row(run, 5)["poster_error"]
    assert run.stats["unreachable_hosts"] == [f"127.0.0.1:{port}"]


# -- cache, refresh, offline, dedupe -----------------------------------------------------------


def test_second_run_sends_no_request(server, tmp_path):
    apis = FakeMediaApis(server)
    for k in range(4):
        poster = serve_image(server, f"/img/{k}.jpg", jpeg_bytes(color=(k, 50, 50)))
        apis.omdb_movie(f"tt{k + 1:07d}", plot=f"Plot {k}", poster=poster)
    refs = [movie(k, imdb_id=f"tt{k + 1:07d}") for k in range(4)]
    first = collect(tmp_path, refs, server=server, poster_sources=("omdb_api",))
    assert set(first.frame["poster_status"]) == {"ok"} and first.stats["requests"] == 8

    server.clear_log()
    second = collect(tmp_path, refs, server=server, poster_sources=("omdb_api",))
    assert server.requests == [] and second.stats["requests"] == 0
    assert second.stats["lookup_cache_hits"] == 4 and second.stats["image_cache_hits"] == 4
    columns = ["poster_path", "poster_sha256", "description", "poster_status"]
    assert second.frame[columns].equals(first.frame[columns])

    server.clear_log()
    collect(tmp_path, refs, server=server, poster_sources=("omdb_api",), refresh=True)
    assert server.hits("/omdb/") == 4 and all(server.hits(f"/img/{k}.jpg") == 1 for k in range(4))


def test_rerun_retries_only_transient_failures_by_default(server, tmp_path):
    urls = {
        0: serve_image(server, "/img/ok.jpg", jpeg_bytes()),
        1: server.url("/img/404.jpg"),
        2: serve_image(server, "/img/503.jpg", b"down", status=503),
        3: serve_image(server, "/img/html.jpg", HTML_ERROR_PAGE),
    }
    local = LocalMetadata(posters={str(k + 1): u for k, u in urls.items()})
    refs = [movie(k) for k in urls]
    kwargs = {"local": local, "poster_sources": ("poster_list",), "description_sources": ()}
    first = collect(tmp_path, refs, **kwargs)
    assert list(first.frame["poster_status"]) == ["ok", "not_found", "http_error", "invalid_image"]

    server.clear_log()
    server.add("/img/503.jpg", jpeg_bytes(color=(9, 9, 9)), content_type="image/jpeg")  # recovered
    second = collect(tmp_path, refs, **kwargs)
    assert [r.path for r in server.requests] == ["/img/503.jpg"]
    assert list(second.frame["poster_status"]) == ["ok", "not_found", "ok", "invalid_image"]

    server.clear_log()
    collect(tmp_path, refs, **kwargs, retry_failures="all")
    assert sorted(r.path for r in server.requests) == ["/img/404.jpg", "/img/html.jpg"]
    server.clear_log()
    collect(tmp_path, refs, **kwargs, retry_failures="none")
    assert server.requests == []


def test_offline_mode_sends_nothing_and_records_known_urls(server, tmp_path):
    apis = FakeMediaApis(server)
    poster = serve_image(server, "/img/p.jpg", jpeg_bytes())
    apis.omdb_movie("tt0000002", plot="API plot", poster=poster)
    local = _local(**{"1": ("Local plot.", poster)})
    refs = [movie(0, imdb_id="tt0000001"), movie(1, imdb_id="tt0000002")]

    run = collect(tmp_path, refs, server=server, local=local, offline=True)
    assert server.requests == [] and run.stats["requests"] == 0
    r0, r1 = row(run, 0), row(run, 1)
    assert (r0["poster_status"], r0["poster_url"], r0["poster_path"]) == (
        "skipped_offline",
        poster,
        None,
    )
    assert r0["poster_error"] == "offline mode: known URL not fetched"
    assert r0["description"] == "Local plot."
    assert r1["poster_status"] == "skipped_offline" and r1["poster_url"] is None
    assert "omdb_api" in r1["poster_error"]
    assert r1["description_source"] == "title_genres_fallback"
    assert "omdb_api: skipped (offline mode)" in r1["description_attempts"]
    assert summarize_media(run.frame)["failure_rate"] == 0.0

    # What an online run fetched, offline mode serves from the cache - still without requests.
    collect(tmp_path, refs, server=server, local=local)
    server.clear_log()
    again = collect(tmp_path, refs, server=server, local=local, offline=True)
    assert server.requests == []
    assert list(again.frame["poster_status"]) == ["ok", "ok"]
    assert row(again, 1)["description"] == "API plot"


def test_same_poster_is_fetched_once_and_stored_once(server, tmp_path):
    same = jpeg_bytes(color=(10, 20, 30))
    shared = serve_image(server, "/img/shared.jpg", same)
    mirror = serve_image(server, "/img/other-url-same-bytes.jpg", same)
    local = LocalMetadata(posters={"1": shared, "2": shared, "3": mirror})
    run = collect(
        tmp_path,
        [movie(0), movie(1), movie(2)],
        local=local,
        poster_sources=("poster_list",),
        description_sources=(),
    )
    assert server.hits("/img/shared.jpg") == 1
    assert run.frame["poster_path"].nunique() == 1 and run.frame["poster_sha256"].nunique() == 1
    assert list(run.frame["poster_url"]) == [shared, shared, mirror]
    assert len(list((tmp_path / "cache" / "images").rglob("*.jpg"))) == 1
    assert not list(
        (tmp_path / "cache" / "media" / "downloads").rglob("body")
    )  # raw copies dropped


def test_per_host_rate_limit_spaces_requests(server, tmp_path):
    local = LocalMetadata(
        posters={
            str(k + 1): serve_image(server, f"/img/r{k}.jpg", jpeg_bytes(color=(k, k, k)))
            for k in range(5)
        }
    )
    started = time.monotonic()
    run = collect(
        tmp_path,
        [movie(k) for k in range(5)],
        local=local,
        poster_sources=("poster_list",),
        description_sources=(),
        per_host_rps=10.0,
        per_host_burst=1,
        workers=4,
    )
    assert time.monotonic() - started >= 0.38
    arrivals = sorted(r.received_at for r in server.requests)
    # 5 requests at 10/s without burst span >= 0.4 s (the exact slots: the limiter's unit test).
    assert arrivals[-1] - arrivals[0] >= 0.3
    assert run.stats["rate_limit_wait_s"] > 0


# -- keys -------------------------------------------------------------------------------------


def test_api_keys_never_leave_the_request(server, tmp_path, caplog):
    """Keys reach the API, and nowhere else: table, cache files, logs, stats, errors."""
    caplog.set_level(logging.DEBUG)
    poster_with_key = server.url(f"/img/signed.jpg?apikey={SECRET_OMDB}")

    def omdb(request: RecordedRequest) -> Reply:
        imdb = request.query["i"][0]
        if imdb == "tt0000001":
            return Reply(b"boom", status=500)
        if imdb == "tt0000002":
            return Reply(b"{}", delay=1.0, content_type="application/json")
        body = {"Response": "True", "Plot": "ok", "Poster": poster_with_key}
        return Reply(__import__("json").dumps(body).encode(), content_type="application/json")

    server.add_handler("/omdb/", omdb)
    server.add_json("/tmdb/3/movie/7", {"status_message": "Invalid API key"}, status=401)
    serve_image(server, "/img/signed.jpg", b"<html>nope</html>")
    refs = [movie(k, imdb_id=f"tt{k + 1:07d}", tmdb_id="7") for k in range(3)]

    run = collect(
        tmp_path,
        refs,
        server=server,
        poster_sources=("omdb_api", "tmdb_api"),
        description_sources=("omdb_api", "tmdb_api"),
    )

    assert any(SECRET_OMDB in r.raw_path for r in server.requests_for("/omdb/"))
    assert any(SECRET_TMDB in r.raw_path for r in server.requests_for("/tmdb/3/movie/7"))
    produced = [
        run.frame.to_json(),
        repr(run.stats),
        repr(MediaSettings(api_keys={"omdb": SECRET_OMDB})),
        caplog.text,
    ]
    produced += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (SECRET_OMDB, SECRET_TMDB):
        assert not any(secret in text for text in produced)
    assert row(run, 2)["poster_url"] == server.url("/img/signed.jpg?apikey=***")
    assert {row(run, 0)["poster_status"], row(run, 1)["poster_status"]} == {"no_source"}
    assert "omdb_api: http_error (omdb_api: HTTP 500)" in row(run, 0)["poster_attempts"]
    assert (
        "omdb_api: timeout (omdb_api: timed out (after retries))" in row(run, 1)["poster_attempts"]
    )


@pytest.mark.parametrize("policy", ["sometimes"])
def test_settings_reject_unknown_names(policy):
    with pytest.raises(ValueError, match="retry_failures"):
        MediaSettings(retry_failures=policy)
    with pytest.raises(ValueError, match="unknown poster source"):
        MediaSettings(poster_sources=("title_genres",))
    assert MediaSettings.for_dataset("amazon-book").poster_sources == ("openlibrary", "wikipedia")
    assert "api_keys" not in repr(MediaSettings())
    assert endpoints  # the helper used by the asset tests is importable from here too
