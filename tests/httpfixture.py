"""Local HTTP fixtures for tests: a scriptable server for feeds and archives, and a forwarding proxy.

Both listen on 127.0.0.1 with a free port, serve from daemon threads and stop on leaving the `with`
block. Waits inside a handler (`delay`, `stall_after`) end early when the server stops, so a test
never hangs on exit.
"""

from __future__ import annotations

import gzip
import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

_STALL_SECONDS = 30.0
_POLL_SECONDS = 0.02  # how soon serve_forever notices shutdown (its default 0.5 s slows every test)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade"})


@dataclass(frozen=True)
class Request:
    """One request as received; header names lower-cased (urllib sends `User-agent`, curl `User-Agent`)."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Route:
    body: bytes
    status: int
    etag: str | None
    last_modified: str | None
    content_type: str
    gzip_encoding: bool
    delay: float
    stall_after: int | None
    fail_times: int
    fail_status: int
    redirect_to: str | None
    headers: dict[str, str | None]
    fail_headers: dict[str, str | None]
    failures: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-answer (timeouts under test) are expected; stay quiet."""


class _Fixture:
    """What the two servers share: start and stop on a daemon thread, a stop event for waits."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.fixture = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(_POLL_SECONDS,),
                                        name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class FixtureServer(_Fixture):
    """Serves routes set with `route` (replaceable at any time) and records every request."""

    def __init__(self) -> None:
        super().__init__(_FixtureHandler)
        self._routes: dict[str, _Route] = {}
        self.requests: list[Request] = []

    def route(self, path: str, body: bytes, *, status: int = 200, etag: str | None = None,
              last_modified: str | None = None, content_type: str = "text/plain", gzip_encoding: bool = False,
              delay: float = 0.0, stall_after: int | None = None, fail_times: int = 0, fail_status: int = 500,
              redirect_to: str | None = None, headers: dict[str, str | None] | None = None,
              fail_headers: dict[str, str | None] | None = None) -> None:
        """Answer `path` (query string included if given, else any query) with `body`.

        `etag` / `last_modified` make conditional requests answer 304; `gzip_encoding` compresses for
        clients accepting gzip; `delay` waits before the status line; `stall_after` sends that many body
        bytes and then stalls; the first `fail_times` requests get `fail_status`; `redirect_to` answers
        with `status` if it is 3xx (else 302) and that Location; `headers` are added or override ours
        (None drops one, e.g. Content-Length for a body that ends when the connection closes);
        `fail_headers` go with the scripted failures (e.g. Retry-After).
        """
        with self._lock:
            self._routes[path] = _Route(body, status, etag, last_modified, content_type, gzip_encoding, delay,
                                        stall_after, fail_times, fail_status, redirect_to, dict(headers or {}),
                                        dict(fail_headers or {}))

    def count(self, path: str) -> int:
        """How many requests asked for `path` (query string included)."""
        with self._lock:
            return sum(1 for request in self.requests if request.path == path)

    def _receive(self, request: Request) -> tuple[_Route | None, bool]:
        """Record the request; its route and whether this request is one of the route's scripted failures."""
        with self._lock:
            self.requests.append(request)
            route = self._routes.get(request.path) or self._routes.get(urllib.parse.urlsplit(request.path).path)
            if route is None or route.failures >= route.fail_times:
                return route, False
            route.failures += 1
            return route, True


def _not_modified(route: _Route, headers: dict[str, str]) -> bool:
    """RFC 9110: If-None-Match decides when present; If-Modified-Since only without it."""
    if "if-none-match" in headers:
        tags = [tag.strip() for tag in headers["if-none-match"].split(",")]
        return route.etag is not None and ("*" in tags or route.etag in tags)
    if route.last_modified is None or "if-modified-since" not in headers:
        return False
    since = headers["if-modified-since"]
    try:
        return parsedate_to_datetime(route.last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return route.last_modified == since


class _FixtureHandler(BaseHTTPRequestHandler):
    server_version = "httpfixture/1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest output is for failures."""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        fixture: FixtureServer = self.server.fixture  # type: ignore[attr-defined]
        headers = {name.lower(): value for name, value in self.headers.items()}
        route, failing = fixture._receive(Request(self.command, self.path, headers))
        if route is None:
            self._send(404, {"Content-Type": "text/plain"}, b"not found\n", send_body)
            return
        if route.delay and fixture.stopping.wait(route.delay):
            return
        if failing:
            self._send(route.fail_status, {"Content-Type": "text/plain", **route.fail_headers}, b"scripted failure\n",
                       send_body)
            return
        extra = {name: value for name, value in (("ETag", route.etag), ("Last-Modified", route.last_modified)) if value}
        if route.redirect_to is not None:
            status = route.status if 300 <= route.status < 400 else 302
            self._send(status, {"Location": route.redirect_to, **route.headers}, b"", send_body)
            return
        if _not_modified(route, headers):
            self._send(304, {**extra, **route.headers}, b"", send_body)
            return
        body = route.body
        if route.gzip_encoding and "gzip" in headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            extra["Content-Encoding"] = "gzip"
        reply = {"Content-Type": route.content_type, **extra, **route.headers}
        if route.stall_after is None:
            self._send(route.status, reply, body, send_body)
            return
        self._send(route.status, reply, body[:route.stall_after], send_body, length=len(body))
        fixture.stopping.wait(_STALL_SECONDS)

    def _send(self, status: int, headers: dict[str, str | None], body: bytes, send_body: bool,
              length: int | None = None) -> None:
        """Status line, headers (Content-Length is the whole body's unless overridden), then `body`."""
        self.send_response(status)
        merged = {"content-length": ("Content-Length", str(len(body) if length is None else length))}
        for name, value in headers.items():  # later wins, whatever the spelling
            merged[name.lower()] = (name, value)
        for name, value in merged.values():
            if value is not None:
                self.send_header(name, value)
        self.end_headers()
        if send_body and status != 304:
            self.wfile.write(body)
            self.wfile.flush()


class ProxyServer(_Fixture):
    """A forwarding HTTP proxy (absolute-URL requests, no CONNECT) to 127.0.0.1 only; records what it forwarded."""

    def __init__(self) -> None:
        super().__init__(_ProxyHandler)
        self.forwarded: list[str] = []

    def _record(self, url: str) -> None:
        with self._lock:
            self.forwarded.append(url)


class _ProxyHandler(BaseHTTPRequestHandler):
    server_version = "httpfixture-proxy/1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest output is for failures."""

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_CONNECT(self) -> None:
        self.send_error(501, "CONNECT not supported by the test proxy")

    def _forward(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost"):
            self.send_error(403, "the test proxy forwards to http://127.0.0.1 only")
            return
        fixture: ProxyServer = self.server.fixture  # type: ignore[attr-defined]
        fixture._record(self.path)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", target.port or 80, timeout=10)
        try:
            upstream.request(self.command, urllib.parse.urlunsplit(("", "", target.path or "/", target.query, "")),
                             headers=headers)
            response = upstream.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.send_error(502, f"upstream failed: {exc}")
            return
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and (self.command == "HEAD" or name.lower() != "content-length"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
