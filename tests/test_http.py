"""Tests of datasources.http against real loopback servers (no mocks of requests/urllib3)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datasources.errors import ChecksumMismatchError, DownloadError
from datasources.http import (
    DEFAULT_USER_AGENT,
    MIRROR_ENV,
    HttpClient,
    HttpSettings,
    HttpStatusError,
    parse_md5_text,
    parse_mirrors,
    safe_url,
)
from tests.support.http_server import LoopbackServer

# 20 000 bytes of non-repeating data, so a misplaced resume offset changes the result.
PAYLOAD = hashlib.sha256(b"seed").digest() * 625
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
SECRET = "SECRET-abc123"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., HttpClient]]:
    """Clients sharing one cache dir, with test-sized timeouts and backoff."""
    clients: list[HttpClient] = []

    def make(**overrides: object) -> HttpClient:
        options: dict[str, object] = {
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "retries": 3,
            "backoff_factor": 0.01,
            "max_retry_after": 10.0,
            "progress": False,
        }
        options.update(overrides)
        client = HttpClient(tmp_path / "cache", HttpSettings(**options))  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def part_of(path: Path) -> Path:
    return path.with_name(path.name + ".part")


# -- plain downloads and the cache ------------------------------------------------------------


def test_fetch_downloads_then_serves_from_cache_without_request(server, make_client):
    server.add("/data/ml-1m.zip", PAYLOAD)
    client = make_client()
    url = server.url("/data/ml-1m.zip")

    first = client.fetch(url)
    second = client.fetch(url)

    assert first == second == client.cache_path(url)
    assert first.name == "ml-1m.zip"
    assert first.read_bytes() == PAYLOAD
    assert server.hits("/data/ml-1m.zip") == 1
    assert not part_of(first).exists()


def test_filename_override_and_refresh(server, make_client):
    server.add("/dl", b"v1")
    server.add("/dl", b"v2")
    client = make_client()

    path = client.fetch(server.url("/dl"), filename="thing.bin")
    assert path.name == "thing.bin"
    assert path.read_bytes() == b"v1"
    assert client.fetch(server.url("/dl"), filename="thing.bin", refresh=True).read_bytes() == b"v2"
    assert server.hits("/dl") == 2


def test_user_agent_sent_on_every_request(server, make_client):
    server.add("/file", b"x")
    server.add_json("/api", {"ok": True})
    default = make_client()
    custom = make_client(user_agent="custom-agent/9")

    default.fetch(server.url("/file"))
    assert default.get_json(server.url("/api")) == {"ok": True}
    custom.get(server.url("/api"))

    agents = [r.header("User-Agent") for r in server.requests]
    assert agents == [DEFAULT_USER_AGENT, DEFAULT_USER_AGENT, "custom-agent/9"]


# -- retries -----------------------------------------------------------------------------------


def test_read_timeout_is_retried_then_succeeds(server, make_client):
    server.add("/slow", PAYLOAD, delay=2.0)
    server.add("/slow", PAYLOAD)
    client = make_client(read_timeout=0.3)

    assert client.fetch(server.url("/slow")).read_bytes() == PAYLOAD
    assert server.hits("/slow") == 2


def test_read_timeout_forever_raises_download_error(server, make_client):
    server.add("/slow", PAYLOAD, delay=5.0)
    client = make_client(read_timeout=0.2, retries=2)

    started = time.monotonic()
    with pytest.raises(DownloadError, match="/slow"):
        client.fetch(server.url("/slow"))
    assert time.monotonic() - started < 4.0
    assert server.hits("/slow") == 3  # first try + 2 retries
    assert not client.cache_path(server.url("/slow")).exists()


def test_connection_reset_then_success(server, make_client):
    server.add("/flaky", reset=True)
    server.add("/flaky", PAYLOAD)
    client = make_client()

    assert client.fetch(server.url("/flaky")).read_bytes() == PAYLOAD
    assert server.hits("/flaky") == 2


def test_429_retry_after_is_honoured(server, make_client):
    server.add("/limited", b"slow down", status=429, headers={"Retry-After": "1"})
    server.add("/limited", PAYLOAD)
    client = make_client(max_retry_after=10.0)

    started = time.monotonic()
    assert client.fetch(server.url("/limited")).read_bytes() == PAYLOAD
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 5.0
    first, second = server.requests_for("/limited")
    assert second.received_at - first.received_at >= 0.9


def test_retry_after_above_cap_is_capped(server, make_client):
    server.add("/limited", b"", status=503, headers={"Retry-After": "3600"})
    server.add("/limited", PAYLOAD)
    client = make_client(max_retry_after=0.3)

    started = time.monotonic()
    assert client.fetch(server.url("/limited")).read_bytes() == PAYLOAD
    elapsed = time.monotonic() - started

    assert 0.25 <= elapsed < 3.0
    assert server.hits("/limited") == 2


def test_500_then_success(server, make_client):
    server.add("/boom", b"oops", status=500)
    server.add("/boom", PAYLOAD)
    client = make_client()

    assert client.fetch(server.url("/boom")).read_bytes() == PAYLOAD
    assert server.hits("/boom") == 2


def test_500_forever_raises_with_status(server, make_client):
    server.add("/boom", b"oops", status=500)
    client = make_client(retries=2)

    with pytest.raises(HttpStatusError) as caught:
        client.fetch(server.url("/boom"))

    assert isinstance(caught.value, DownloadError)
    assert caught.value.status_code == 500
    assert "500" in str(caught.value)
    assert server.url("/boom") in str(caught.value)
    assert server.hits("/boom") == 3
    assert not client.cache_path(server.url("/boom")).exists()


def test_404_is_not_retried(server, make_client):
    client = make_client()
    with pytest.raises(HttpStatusError, match="404") as caught:
        client.get(server.url("/missing"))
    assert caught.value.status_code == 404
    assert server.hits("/missing") == 1


# -- resume --------------------------------------------------------------------------------------


def test_truncated_body_is_resumed_with_range(server, make_client):
    server.add("/big.zip", PAYLOAD, truncate_to=7000)
    server.add("/big.zip", PAYLOAD)
    client = make_client()

    path = client.fetch(server.url("/big.zip"), md5=PAYLOAD_MD5)

    assert path.read_bytes() == PAYLOAD
    first, second = server.requests_for("/big.zip")
    assert first.header("Range") is None
    assert second.header("Range") == "bytes=7000-"


def test_reset_mid_body_is_resumed(server, make_client):
    server.add("/big.zip", PAYLOAD, truncate_to=5000, reset=True)
    server.add("/big.zip", PAYLOAD)
    client = make_client()

    assert client.fetch(server.url("/big.zip")).read_bytes() == PAYLOAD
    assert server.requests_for("/big.zip")[1].header("Range") == "bytes=5000-"


def test_truncation_forever_gives_up_and_keeps_nothing_at_final_path(server, make_client):
    server.add("/big.zip", PAYLOAD, truncate_to=1000)
    client = make_client(retries=2)
    url = server.url("/big.zip")

    with pytest.raises(DownloadError, match="after 3 attempts"):
        client.fetch(url)

    final = client.cache_path(url)
    assert not final.exists()
    assert part_of(final).read_bytes() == PAYLOAD[:3000]  # kept for a later resume
    assert [r.header("Range") for r in server.requests] == [None, "bytes=1000-", "bytes=2000-"]


def test_existing_part_file_is_resumed_after_crash(server, make_client):
    server.add("/big.zip", PAYLOAD)
    client = make_client()
    url = server.url("/big.zip")
    final = client.cache_path(url)
    final.parent.mkdir(parents=True)
    part_of(final).write_bytes(PAYLOAD[:12345])

    assert client.fetch(url).read_bytes() == PAYLOAD
    (only,) = server.requests
    assert only.header("Range") == "bytes=12345-"
    assert not part_of(final).exists()


def test_server_without_range_support_restarts_from_zero(server, make_client):
    server.add("/big.zip", PAYLOAD, supports_ranges=False)
    client = make_client()
    url = server.url("/big.zip")
    final = client.cache_path(url)
    final.parent.mkdir(parents=True)
    part_of(final).write_bytes(b"stale bytes that must not survive")

    assert client.fetch(url, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    (only,) = server.requests
    assert only.header("Range") == "bytes=33-"


def test_complete_part_file_answered_416_is_accepted(server, make_client):
    server.add("/big.zip", PAYLOAD)
    client = make_client()
    url = server.url("/big.zip")
    final = client.cache_path(url)
    final.parent.mkdir(parents=True)
    part_of(final).write_bytes(PAYLOAD)  # crashed after the last byte, before the rename

    assert client.fetch(url, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.hits("/big.zip") == 1


# -- checksums -----------------------------------------------------------------------------------


def test_md5_match(server, make_client):
    server.add("/f.zip", PAYLOAD)
    client = make_client()
    path = client.fetch(server.url("/f.zip"), md5=PAYLOAD_MD5.upper())
    assert path.read_bytes() == PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert client.fetch(server.url("/f.zip"), sha256=sha) == path
    assert server.hits("/f.zip") == 1


def test_md5_mismatch_raises_and_caches_nothing(server, make_client):
    server.add("/f.zip", PAYLOAD)
    client = make_client()
    url = server.url("/f.zip")
    wrong = "0" * 32

    with pytest.raises(ChecksumMismatchError) as caught:
        client.fetch(url, md5=wrong)

    assert caught.value.expected == wrong
    assert caught.value.actual == PAYLOAD_MD5
    final = client.cache_path(url)
    assert not final.exists()
    assert not part_of(final).exists()


def test_sha256_mismatch_raises(server, make_client):
    server.add("/f.zip", PAYLOAD)
    client = make_client()
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        client.fetch(server.url("/f.zip"), sha256="f" * 64)


def test_cached_copy_failing_checksum_is_downloaded_again(server, make_client):
    server.add("/f.zip", PAYLOAD)
    client = make_client()
    url = server.url("/f.zip")
    final = client.cache_path(url)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"corrupted cache entry")

    assert client.fetch(url, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.hits("/f.zip") == 1


def test_md5_url_in_grouplens_format(server, make_client):
    server.add("/datasets/ml-1m.zip", PAYLOAD)
    server.add("/datasets/ml-1m.zip.md5", f"MD5 (ml-1m.zip) = {PAYLOAD_MD5}\n")
    client = make_client()
    url, md5_url = server.url("/datasets/ml-1m.zip"), server.url("/datasets/ml-1m.zip.md5")

    path = client.fetch(url, md5_url=md5_url)
    assert path.read_bytes() == PAYLOAD
    # Both the data and the checksum file are cached: a rerun makes no request at all.
    assert client.fetch(url, md5_url=md5_url) == path
    assert len(server.requests) == 2


def test_md5_url_mismatch(server, make_client):
    server.add("/datasets/ml-1m.zip", PAYLOAD)
    server.add("/datasets/ml-1m.zip.md5", f"MD5 (ml-1m.zip) = {'a' * 32}\n")
    client = make_client()

    with pytest.raises(ChecksumMismatchError):
        client.fetch(
            server.url("/datasets/ml-1m.zip"), md5_url=server.url("/datasets/ml-1m.zip.md5")
        )
    assert not client.cache_path(server.url("/datasets/ml-1m.zip")).exists()


@pytest.mark.parametrize(
    "text",
    [
        f"MD5 (ml-1m.zip) = {PAYLOAD_MD5}",
        f"{PAYLOAD_MD5}  ml-1m.zip\n",
        f"{PAYLOAD_MD5.upper()}\n",
        f"{'1' * 32}  other.zip\n{PAYLOAD_MD5} *ml-1m.zip\n",
    ],
)
def test_parse_md5_text_formats(text):
    assert parse_md5_text(text, "ml-1m.zip") == PAYLOAD_MD5


def test_parse_md5_text_rejects_garbage():
    with pytest.raises(ValueError):
        parse_md5_text("<html>not found</html>")


# -- mirrors and local sources ----------------------------------------------------------------


def test_parse_mirrors():
    assert parse_mirrors(None) == {}
    assert parse_mirrors("  ") == {}
    assert parse_mirrors("/srv/mirror") == {"*": "/srv/mirror"}
    assert parse_mirrors("https://a/=http://m/a/; https://b/x=/data/b") == {
        "https://a/": "http://m/a/",
        "https://b/x": "/data/b",
    }
    with pytest.raises(ValueError, match="PREFIX=TARGET"):
        parse_mirrors("https://a/=/x;/just/a/dir")


def test_settings_from_env_reads_mirror_variable():
    settings = HttpSettings.from_env({MIRROR_ENV: "/srv/mirror"}, progress=False)
    assert settings.mirrors == {"*": "/srv/mirror"}
    assert settings.progress is False
    assert HttpSettings.from_env({}).mirrors == {}


def test_resolve_longest_prefix_wins(make_client, tmp_path):
    client = make_client(
        mirrors={
            "https://h.example/": "http://127.0.0.1:1/all/",
            "https://h.example/datasets/": "http://127.0.0.1:1/ds",
        }
    )
    assert client.resolve("https://h.example/datasets/a.zip") == "http://127.0.0.1:1/ds/a.zip"
    assert client.resolve("https://h.example/other/b.zip") == "http://127.0.0.1:1/all/other/b.zip"
    assert client.resolve("https://unmapped.example/c.zip") == "https://unmapped.example/c.zip"
    assert client.resolve(str(tmp_path / "x.zip")) == str(tmp_path / "x.zip")


def test_mirror_to_other_server_never_contacts_origin(make_client):
    with LoopbackServer() as origin, LoopbackServer() as mirror:
        mirror.add("/m/ml-1m.zip", PAYLOAD)
        url = origin.url("/datasets/ml-1m.zip")
        client = make_client(mirrors={origin.url("/datasets/"): mirror.url("/m/")})

        path = client.fetch(url, md5=PAYLOAD_MD5)

        assert path.read_bytes() == PAYLOAD
        assert path == client.cache_path(url)  # keyed on the original URL
        assert origin.requests == []
        assert mirror.hits("/m/ml-1m.zip") == 1
        # A client without the mirror finds the same cache entry: still no request to origin.
        assert make_client().fetch(url, md5=PAYLOAD_MD5) == path
        assert origin.requests == []


def test_mirror_to_local_directory_is_used_in_place(make_client, tmp_path):
    mirror_dir = tmp_path / "mirror"
    (mirror_dir / "ml").mkdir(parents=True)
    local = mirror_dir / "ml" / "ml-1m.zip"
    local.write_bytes(PAYLOAD)
    client = make_client(mirrors={"https://files.example.org/datasets/": str(mirror_dir)})

    path = client.fetch("https://files.example.org/datasets/ml/ml-1m.zip", md5=PAYLOAD_MD5)

    assert path == local  # no copy into the cache
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DownloadError, match=r"absent\.zip"):
        client.fetch("https://files.example.org/datasets/ml/absent.zip")


def test_wildcard_mirror_to_directory_and_to_server(server, make_client, tmp_path):
    (tmp_path / "m" / "host.example" / "a").mkdir(parents=True)
    (tmp_path / "m" / "host.example" / "a" / "b.zip").write_bytes(PAYLOAD)
    to_dir = make_client(mirrors=parse_mirrors(str(tmp_path / "m")))
    assert to_dir.fetch("https://host.example/a/b.zip") == tmp_path / "m/host.example/a/b.zip"

    server.add("/base/host.example/a/b.zip", PAYLOAD)
    to_server = make_client(mirrors=parse_mirrors(server.url("/base")))
    assert to_server.fetch("https://host.example/a/b.zip").read_bytes() == PAYLOAD
    assert server.hits("/base/host.example/a/b.zip") == 1


def test_file_urls_and_plain_paths_are_used_in_place(make_client, tmp_path):
    local = tmp_path / "some dir" / "ratings.dat"
    local.parent.mkdir()
    local.write_bytes(PAYLOAD)
    client = make_client()

    assert client.fetch(local.as_uri(), md5=PAYLOAD_MD5) == local
    assert client.fetch(str(local)) == local
    with pytest.raises(ChecksumMismatchError):
        client.fetch(str(local), md5="0" * 32)
    assert local.read_bytes() == PAYLOAD  # a user's file is never deleted
    with pytest.raises(DownloadError, match=r"missing\.dat"):
        client.fetch(str(tmp_path / "missing.dat"))
    with pytest.raises(DownloadError, match=r"missing\.dat"):
        client.fetch((tmp_path / "missing.dat").as_uri())


# -- secrets in query strings -------------------------------------------------------------------


def test_safe_url_hides_query_values_and_credentials():
    shown = safe_url(f"https://user:pw@api.example/v1/movie?apikey={SECRET}&t=Heat#frag")
    assert shown == "https://api.example/v1/movie?apikey=***&t=***"


def test_query_values_never_in_status_errors(server, make_client):
    server.add("/api", b"down", status=503)
    client = make_client(retries=1)

    with pytest.raises(HttpStatusError) as in_url:
        client.get(server.url(f"/api?apikey={SECRET}"))
    with pytest.raises(HttpStatusError) as in_params:
        client.get_json(server.url("/api"), params={"apikey": SECRET})

    for caught in (in_url, in_params):
        assert SECRET not in str(caught.value)
        assert "apikey=***" in str(caught.value)
    assert server.requests[0].query == {"apikey": [SECRET]}  # the key was really sent


def test_query_values_never_in_connection_errors(make_client, caplog):
    with socket.socket() as sock:  # find a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(retries=1)

    with caplog.at_level(logging.DEBUG, logger="datasources.http"):
        with pytest.raises(DownloadError) as via_get:
            client.get(f"http://127.0.0.1:{port}/api", params={"apikey": SECRET})
        with pytest.raises(DownloadError) as via_fetch:
            client.fetch(f"http://127.0.0.1:{port}/file.zip?apikey={SECRET}")

    for caught in (via_get, via_fetch):
        assert SECRET not in str(caught.value)
        assert caught.value.__cause__ is None  # the raw urllib3 error embeds the full URL
        assert caught.value.__suppress_context__
    assert SECRET not in caplog.text


def test_query_values_never_in_download_failures(server, make_client):
    server.add("/file.zip", PAYLOAD, truncate_to=10)
    client = make_client(retries=0)
    with pytest.raises(DownloadError) as caught:
        client.fetch(server.url(f"/file.zip?apikey={SECRET}"))
    assert SECRET not in str(caught.value)


def test_get_json_rejects_invalid_json(server, make_client):
    server.add("/api", b"<html>", content_type="text/html")
    client = make_client()
    with pytest.raises(DownloadError, match="invalid JSON"):
        client.get_json(server.url(f"/api?key={SECRET}"))


def test_compressed_response_is_stored_decoded(server, make_client):
    # Some servers compress despite "Accept-Encoding: identity"; the cache must hold the file.
    server.add("/data.json", gzip.compress(PAYLOAD), headers={"Content-Encoding": "gzip"})
    client = make_client()
    assert client.fetch(server.url("/data.json"), md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.requests[0].header("Accept-Encoding") == "identity"


def test_an_unreachable_upstream_says_so_in_one_line_with_the_way_out(make_client):
    from datasources.errors import UpstreamUnreachableError

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UpstreamUnreachableError) as caught:
        make_client(retries=1).fetch(f"http://127.0.0.1:{port}/ml-1m.zip")
    message = str(caught.value)
    assert "\n" not in message and f"cannot reach http://127.0.0.1:{port}/ml-1m.zip" in message
    assert "CONFIG=configs/offline.yaml" in message and "KG4REC_MIRROR" in message
