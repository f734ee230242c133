"""A scriptable loopback HTTP server for the project's tests.

The pipeline talks to dataset hosts, media APIs and Wikidata; the test machines have no internet,
and tests must be able to provoke the failures real servers produce (429 with ``Retry-After``,
5xx, stalls, connection resets, truncated bodies, servers without ``Range`` support). This module
gives every test file the same small server for that, bound to ``127.0.0.1`` on a free port and
run in a background thread.

Typical use (define the fixture in the test module or a conftest)::

    import pytest
    from tests.support.http_server import LoopbackServer

    @pytest.fixture
    def server():
        with LoopbackServer() as srv:
            yield srv

    def test_retry(server):
        server.add("/data.zip", b"", status=503)   # first request
        server.add("/data.zip", b"payload")        # second and every later request
        ...fetch(server.url("/data.zip"))...
        assert len(server.requests_for("/data.zip")) == 2

Routing rules:

* Routes match the request *path* (query string ignored); the query is available on the recorded
  request (``RecordedRequest.query``) and to handlers.
* Each :meth:`LoopbackServer.add` appends one scripted reply to the path's queue. Requests consume
  the queue in order and the **last reply repeats forever** (so one ``add`` = always that reply).
* :meth:`LoopbackServer.add_handler` appends a callable ``(RecordedRequest) -> Reply`` instead,
  for answers that depend on the request (e.g. a SPARQL endpoint checking its query).
* Unknown paths get 404 (and are still recorded).
* ``GET``, ``HEAD`` and ``POST`` are served; ``HEAD`` sends headers only.

Every request is appended to :attr:`LoopbackServer.requests` *before* it is answered, so tests
can count hits and inspect headers (``Range``, ``User-Agent``, ...).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["LoopbackServer", "RecordedRequest", "Reply"]


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        body: bytes sent (for a 200 with ``supports_ranges``, the full resource a Range slices).
        status: HTTP status code.
        headers: extra response headers (e.g. ``{"Retry-After": "1"}``); they override defaults.
        content_type: ``Content-Type`` header.
        delay: seconds to wait before answering at all (to provoke client read timeouts).
        truncate_to: send the full ``Content-Length`` but only this many body bytes, then close
            (a body that breaks off midway).
        reset: abort the connection with a TCP RST. Alone: no response at all. With
            ``truncate_to``: reset after the truncated body instead of a clean close.
        supports_ranges: honour ``Range: bytes=...`` on 200 replies with 206/416 and advertise
            ``Accept-Ranges``. ``False`` ignores Range and always sends the whole body with 200,
            like many simple servers.
    """

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    delay: float = 0.0
    truncate_to: int | None = None
    reset: bool = False
    supports_ranges: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    """What the server saw. ``headers`` is case-insensitive (``r.headers["range"]`` works)."""

    method: str
    path: str  # without the query string
    raw_path: str  # as sent, query included
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    received_at: float  # time.monotonic() when the request line was read

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


Handler = Callable[[RecordedRequest], Reply]


class _Route:
    """A path's queue of replies/handlers; the last entry repeats once the queue is used up."""

    def __init__(self) -> None:
        self.entries: list[Reply | Handler] = []
        self.served = 0

    def next(self) -> Reply | Handler:
        entry = self.entries[min(self.served, len(self.entries) - 1)]
        self.served += 1
        return entry


class LoopbackServer:
    """Threaded HTTP/1.1 server on ``127.0.0.1:<free port>``; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        if self._httpd is not None:
            return self
        # Port 0: the OS picks a free port, so parallel test runs never collide.
        self._httpd = _Server(("127.0.0.1", 0), _RequestHandler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"loopback-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers and close open keep-alive connections."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            # Unblocks handler threads waiting on an idle keep-alive connection.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server (``path`` may carry a query string)."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- scripting ---------------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        delay: float = 0.0,
        truncate_to: int | None = None,
        reset: bool = False,
        supports_ranges: bool = True,
    ) -> LoopbackServer:
        """Append one reply to ``path``'s queue (see :class:`Reply`). ``str`` bodies are UTF-8."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        reply = Reply(
            body=body,
            status=status,
            headers=dict(headers or {}),
            content_type=content_type,
            delay=delay,
            truncate_to=truncate_to,
            reset=reset,
            supports_ranges=supports_ranges,
        )
        return self._append(path, reply)

    def add_json(
        self, path: str, payload: Any, *, status: int = 200, **kwargs: Any
    ) -> LoopbackServer:
        """Append a JSON reply (``application/json``)."""
        kwargs.setdefault("content_type", "application/json")
        return self.add(path, json.dumps(payload).encode("utf-8"), status=status, **kwargs)

    def add_handler(self, path: str, handler: Handler) -> LoopbackServer:
        """Append a callable that builds the reply from the :class:`RecordedRequest`."""
        return self._append(path, handler)

    def clear(self, path: str | None = None) -> None:
        """Forget the routes of ``path`` (or all routes). The request log is kept."""
        with self._lock:
            if path is None:
                self._routes.clear()
            else:
                self._routes.pop(path, None)

    def _append(self, path: str, entry: Reply | Handler) -> LoopbackServer:
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/': {path!r}")
        with self._lock:
            self._routes.setdefault(urlsplit(path).path, _Route()).entries.append(entry)
        return self

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path (query ignored) equals ``path``."""
        wanted = urlsplit(path).path
        return [r for r in self.requests if r.path == wanted]

    def hits(self, path: str) -> int:
        return len(self.requests_for(path))

    def clear_log(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- used by the handler thread ------------------------------------------------------------

    def _record_and_route(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            route = self._routes.get(request.path)
            entry = route.next() if route is not None and route.entries else None
        if entry is None:
            return Reply(body=b"not found", status=404, content_type="text/plain")
        if isinstance(entry, Reply):
            return entry
        return entry(request)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled handler must never keep the test process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are the point of many tests; stay quiet.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers (and requests' pool)
    server: _Server

    def setup(self) -> None:
        super().setup()
        owner = self.server.owner
        with owner._lock:
            owner._connections.add(self.connection)

    def finish(self) -> None:
        owner = self.server.owner
        with owner._lock:
            owner._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        received = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            raw_path=self.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            received_at=received,
        )
        reply = self.server.owner._record_and_route(request)
        if reply.delay and self.server.owner._stopping.wait(reply.delay):
            self.close_connection = True
            return
        try:
            self._answer(request, reply)
        except (ConnectionError, TimeoutError):
            # The client gave up (read timeout) or we reset the connection on purpose.
            self.close_connection = True

    def _answer(self, request: RecordedRequest, reply: Reply) -> None:
        if reply.reset and reply.truncate_to is None:
            self._reset()
            return
        status, body, headers = reply.status, reply.body, dict(reply.headers)
        if reply.supports_ranges and status == 200:
            headers.setdefault("Accept-Ranges", "bytes")
            range_header = (request.header("Range") or "").strip()
            if range_header.startswith("bytes="):  # other units are ignored, as RFC 9110 allows
                span = _parse_range(range_header, len(body))
                if span is None:
                    status, body = 416, b""
                    headers["Content-Range"] = f"bytes */{len(reply.body)}"
                else:
                    start, end = span
                    status, body = 206, body[start : end + 1]
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(reply.body)}"
        self.send_response(status, _reason(status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if reply.truncate_to is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[: reply.truncate_to])
        self.wfile.flush()
        self.close_connection = True  # a short body is only detectable if the connection ends
        if reply.reset:
            self._reset()

    def _reset(self) -> None:
        """Abort with RST (SO_LINGER 0), so the client sees ECONNRESET rather than a clean EOF."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into inclusive (start, end); ``None`` if unsatisfiable.

    Multi-range requests are answered with the first range only (enough for download tests).
    """
    first = value.strip()[len("bytes=") :].split(",")[0].strip()
    start_text, _, end_text = first.partition("-")
    try:
        if not start_text:  # suffix range: the last N bytes
            n = int(end_text)
            if n == 0 or size == 0:
                return None
            return max(0, size - n), size - 1
        start = int(start_text)
        end = int(end_text) if end_text else size - 1
    except ValueError:  # malformed: answer 416 rather than crash the handler
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
