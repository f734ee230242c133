"""Helpers for the media tests: generated images and a loopback imitation of the media APIs.

Images are generated at test time (no licensed poster is ever committed). ``FakeMediaApis``
answers in the JSON shapes of OMDb, TMDB, Wikipedia's REST summary and Open Library, on the
shared :class:`tests.support.http_server.LoopbackServer`, and records which API key it saw.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from datasources.http import HttpClient, HttpSettings
from datasources.media import (
    Endpoints,
    FetchCache,
    ImageStore,
    ItemRef,
    LocalMetadata,
    MediaCollector,
    MediaRun,
    MediaSettings,
)
from tests.support.http_server import LoopbackServer, RecordedRequest, Reply

SECRET_OMDB = "omdbKEY-s3cr3t-7f3a9c"
SECRET_TMDB = "tmdbKEY-s3cr3t-b41d02"


def jpeg_bytes(
    size: tuple[int, int] = (60, 90),
    color: tuple[int, int, int] = (200, 30, 40),
    mode: str = "RGB",
    noise: bool = False,
) -> bytes:
    """A JPEG; ``noise`` makes the entropy-coded data dominate the file (for truncation tests)."""
    if noise:
        image = Image.merge("RGB", [Image.effect_noise(size, 80) for _ in range(3)])
    else:
        image = Image.new(mode, size, color if mode == "RGB" else None)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def png_bytes(
    size: tuple[int, int] = (60, 90), mode: str = "RGBA", color: Any = (0, 0, 255, 0)
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A ~70-byte PNG whose header claims ``width``×``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>404</title></head><body>Not here</body></html>"
)


def endpoints(server: LoopbackServer) -> Endpoints:
    return Endpoints(
        omdb=server.url("/omdb/"),
        tmdb=server.url("/tmdb/3"),
        tmdb_images=server.url("/tmdbimg/t/p/w500"),
        wikipedia=server.url("/wiki/api/rest_v1"),
        openlibrary=server.url("/ol"),
        openlibrary_covers=server.url("/covers"),
    )


class FakeMediaApis:
    """OMDb, TMDB, Wikipedia and Open Library as the tests script them."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.omdb: dict[str, dict[str, Any]] = {}  # imdb id -> record
        self.omdb_keys_seen: list[str] = []
        server.add_handler("/omdb/", self._omdb)

    # -- OMDb ---------------------------------------------------------------------------------
    def omdb_movie(
        self, imdb_id: str, *, plot: str = "N/A", poster: str = "N/A", title: str = "A Movie"
    ) -> None:
        self.omdb[imdb_id] = {
            "Title": title,
            "Plot": plot,
            "Poster": poster,
            "Response": "True",
            "imdbID": imdb_id,
            "Type": "movie",
        }

    def _omdb(self, request: RecordedRequest) -> Reply:
        key = (request.query.get("apikey") or [""])[0]
        self.omdb_keys_seen.append(key)
        if key != SECRET_OMDB:
            return _json({"Response": "False", "Error": "Invalid API key!"}, status=401)
        imdb = (request.query.get("i") or [""])[0]
        if imdb in self.omdb:
            return _json(self.omdb[imdb])
        if "t" in request.query:
            title = request.query["t"][0]
            for record in self.omdb.values():
                if record["Title"] == title:
                    return _json(record)
            return _json({"Response": "False", "Error": "Movie not found!"})
        return _json({"Response": "False", "Error": "Incorrect IMDb ID."})

    # -- TMDB ---------------------------------------------------------------------------------
    def tmdb_movie(
        self, tmdb_id: str, *, overview: str = "", poster_path: str | None = None, status: int = 200
    ) -> None:
        payload: dict[str, Any] = {
            "id": int(tmdb_id),
            "overview": overview,
            "poster_path": poster_path,
        }

        def handler(request: RecordedRequest) -> Reply:
            if (request.query.get("api_key") or [""])[0] != SECRET_TMDB:
                return _json({"status_code": 7, "status_message": "Invalid API key"}, status=401)
            if status != 200:
                return _json({"status_code": 34, "status_message": "not found"}, status=status)
            return _json(payload)

        self.server.add_handler(f"/tmdb/3/movie/{tmdb_id}", handler)

    # -- Wikipedia ----------------------------------------------------------------------------
    def wiki_page(
        self,
        title: str,
        *,
        extract: str,
        description: str = "",
        image: str | None = None,
        kind: str = "standard",
    ) -> None:
        payload: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "extract": extract,
        }
        if image:
            payload["originalimage"] = {"source": image, "width": 60, "height": 90}
        path = "/wiki/api/rest_v1/page/summary/" + quote(title.replace(" ", "_"), safe="")
        self.server.add_json(path, payload)

    # -- Open Library -------------------------------------------------------------------------
    def openlibrary_book(
        self,
        isbn: str,
        *,
        description: str | None,
        work_description: Any = None,
        cover: bytes | None = None,
    ) -> None:
        edition_id, work_id = f"OL{isbn[:6]}M", f"OL{isbn[:6]}W"
        # /isbn/X.json redirects to the edition, like the real service.
        self.server.add(
            f"/ol/isbn/{isbn}.json",
            b"",
            status=302,
            headers={"Location": f"/ol/books/{edition_id}.json"},
        )
        edition: dict[str, Any] = {"title": f"Book {isbn}", "works": [{"key": f"/works/{work_id}"}]}
        if description is not None:
            edition["description"] = description
        self.server.add_json(f"/ol/books/{edition_id}.json", edition)
        self.server.add_json(
            f"/ol/works/{work_id}.json", {"title": f"Book {isbn}", "description": work_description}
        )
        if cover is not None:
            self.server.add(f"/covers/b/isbn/{isbn}-L.jpg", cover, content_type="image/jpeg")


def _json(payload: Any, status: int = 200) -> Reply:
    return Reply(body=json.dumps(payload).encode(), status=status, content_type="application/json")


def serve_image(server: LoopbackServer, path: str, body: bytes, **kwargs: Any) -> str:
    kwargs.setdefault("content_type", "image/jpeg")
    server.add(path, body, **kwargs)
    return server.url(path)


TEST_HTTP = HttpSettings(
    connect_timeout=2.0,
    read_timeout=0.5,
    retries=2,
    backoff_factor=0.0,
    max_retry_after=2.0,
    progress=False,
)


def collect(
    root: Path,
    refs: list[ItemRef],
    *,
    server: LoopbackServer | None = None,
    local: LocalMetadata | None = None,
    http: HttpSettings = TEST_HTTP,
    api_keys: Mapping[str, str] | None = None,
    **settings: Any,
) -> MediaRun:
    """One collector run with test-sized timeouts, caches under ``root``."""
    settings.setdefault("per_host_rps", None)
    settings.setdefault("workers", 4)
    if server is not None:
        settings.setdefault("endpoints", endpoints(server))
    keys = {"omdb": SECRET_OMDB, "tmdb": SECRET_TMDB} if api_keys is None else dict(api_keys)
    media_settings = replace(MediaSettings(**settings), api_keys=keys)
    with (
        HttpClient(root / "cache" / "media" / "downloads", http) as client,
        FetchCache(root / "cache" / "media" / "fetch_cache.sqlite") as cache,
    ):
        collector = MediaCollector(
            media_settings, client, cache, ImageStore(root / "cache" / "images"), local
        )
        return collector.run(refs)


def movie(item_id: int, key: str | None = None, **fields: Any) -> ItemRef:
    fields.setdefault("title", f"Movie {item_id}")
    fields.setdefault("year", 1995)
    fields.setdefault("genres", ("Drama",))
    key = key or str(item_id + 1)
    return ItemRef(item_id=item_id, item_key=key, local_key=key, **fields)


def row(run: MediaRun, item_id: int) -> dict[str, Any]:
    frame = run.frame
    return frame[frame["item_id"] == item_id].iloc[0].to_dict()


def test_bomb_png_is_tiny_but_claims_huge_size():
    data = bomb_png()
    assert len(data) < 100
    # The header alone is what the validation looks at.
    assert struct.unpack(">II", data[16:24]) == (20000, 20000)
