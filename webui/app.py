"""The aiohttp application: shared state, middlewares (errors, Host check, session, CSRF),
security headers, static files and the background ingest task.

Order of the middlewares (outermost first): errors -> host -> auth. Every response, errors
included, gets the security headers from the `on_response_prepare` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from engine.index.mapped import TrailIndex
from webui.auth import Audit, LoginGuard, Session, Sessions, User, UserStore
from webui.netaddr import ip_key
from webui.roles import allows
from webui.settings import Settings
from webui.store import SYNC_BYTES, Ingester, Readers
from webui.tokens import TOKEN_PATHS, TokenStore, token_gate

log = logging.getLogger("maltrail.webui")
STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "mt_session"
INGEST_SECONDS = 1.0
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PUBLIC_API = {"/api/openapi.json", "/api/login"}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
    ".json": "application/json", ".woff2": "font/woff2", ".webmanifest": "application/manifest+json",
}
T = TypeVar("T")
SHARED_MAX = 64


@dataclass
class Context:
    """Everything the handlers share; one per application."""

    settings: Settings
    users: UserStore
    sessions: Sessions
    throttle: LoginGuard
    audit: Audit
    ingester: Ingester
    readers: Readers
    tokens: TokenStore
    reader_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(3, "mt-read"))
    writer_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "mt-write"))
    hunt_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, "mt-hunt"))
    login_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, "mt-login"))
    logins_in_flight: dict[str, int] = field(default_factory=dict)
    trail_index: TrailIndex | None = None
    trail_error: str = ""
    trail_generation: int = 0
    tick: asyncio.Event = field(default_factory=asyncio.Event)
    caught_up: bool = False
    progress: tuple[int, int] | None = None  # (bytes indexed, bytes of logs) while behind
    live_streams: dict[str, int] = field(default_factory=dict)
    status_memory: dict[str, Any] = field(default_factory=dict)
    closing: bool = False
    secret: bytes = b""
    version: int = 0  # bumped by every change of the index or of shared triage
    shared: dict[tuple, asyncio.Future] = field(default_factory=dict)
    collector: Any = None  # engine.ship.collector.Collector with [collect]
    ingest_wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.reader_pool, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.writer_pool, fn, *args)

    async def shared_read(self, key: tuple, fn: Callable[[], T]) -> T:
        """Identical requests over the same state of the index share one computation: ten tabs
        that refresh the same view after the same live events cost one query. An answer is
        never reused once an event or a triage change has come in (`version`)."""
        full = (self.version, *key)
        task = self.shared.get(full)
        if task is None:
            if len(self.shared) >= SHARED_MAX or any(k[0] != self.version for k in self.shared):
                self.shared = {k: v for k, v in self.shared.items() if k[0] == self.version and not v.done()}
            task = self.shared[full] = asyncio.ensure_future(self.read(fn))
            task.add_done_callback(lambda t: self._forget_failed(full, t))
        return await asyncio.shield(task)

    def _forget_failed(self, key: tuple, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            self.shared.pop(key, None)

    def changed(self) -> None:
        self.version += 1

    def partial(self) -> dict[str, Any]:
        """What every data answer adds while the index is still being built: `partial` and how far."""
        if self.caught_up and self.progress is None:
            return {}
        done, total = self.progress or (0, 0)
        return {"partial": True, "indexing": {"bytes_done": done, "bytes_total": total}}

    def notify(self) -> None:
        """Wake every live stream (a new Event each time: no waiter misses a round)."""
        old, self.tick = self.tick, asyncio.Event()
        old.set()


CTX = web.AppKey("ctx", Context)
SESSION = web.RequestKey("session", Session)
USER = web.RequestKey("user", User)


def ctx_of(request: web.Request) -> Context:
    return request.app[CTX]


def json_error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def client_address(request: web.Request) -> str:
    """The peer, or behind a trusted proxy ([server] trusted_proxies) the address the proxies
    saw: the rightmost X-Forwarded-For entry that is not itself a trusted proxy."""
    peer = request.remote or "?"
    proxies = ctx_of(request).settings.trusted_proxies
    if proxies.unrestricted or not proxies.contains_text(peer):
        return peer
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    for hop in reversed(hops):
        if ip_key(hop) is None:
            return peer  # a malformed chain: trust nothing in it
        if not proxies.contains_text(hop):
            return hop
    return peer


def host_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    host = request.headers.get("Host", "")
    if not host or len(host) > 260:
        return False
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in allowed


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """No traceback or server detail ever reaches a client; API errors are JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return json_error(exc.status, exc.reason.lower(), headers)
        if exc.status >= 400:
            return web.Response(status=exc.status, text=f"{exc.status} {exc.reason}\n",
                                headers={k: v for k, v in exc.headers.items() if k == "Allow"})
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


@web.middleware
async def host_check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """DNS rebinding: a page from another origin cannot reach us under its own host name."""
    if not host_allowed(request, ctx_of(request).settings.allowed_hosts):
        return json_error(421, "unknown host name (add it to [server] allowed_hosts)")
    return await handler(request)


def current_user(request: web.Request) -> tuple[Session, User] | None:
    ctx = ctx_of(request)
    session = ctx.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return None
    user = ctx.users.get(session.user)
    if user is None:
        ctx.sessions.delete(session.token)
        return None
    return session, user


def same_origin(request: web.Request) -> bool:
    """Browsers send Origin on every cross-site POST; when present it must be us."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    scheme = "https" if ctx_of(request).settings.tls else "http"
    return origin == f"{scheme}://{request.headers.get('Host', '')}"


@web.middleware
async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
               ) -> web.StreamResponse:
    """Every /api/ path but the public ones needs a session; every state change needs the CSRF
    token of that session and a same-origin request."""
    path = request.path
    if request.method in UNSAFE_METHODS and not same_origin(request):
        return json_error(403, "cross-origin request refused")
    if not path.startswith("/api/") or path in PUBLIC_API:
        return await handler(request)
    scope = TOKEN_PATHS.get(path)  # automation: a bearer token instead of a session
    if scope and request.method == "GET" and (scope == "blocklist" or "Authorization" in request.headers):
        refused = token_gate(request, ctx_of(request).tokens, scope)
        return refused if refused is not None else await handler(request)
    found = current_user(request)
    if found is None:
        return json_error(401, "login required")
    session, user = found
    if request.method in UNSAFE_METHODS:
        token = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            return json_error(403, "missing or wrong CSRF token")
    route = request.match_info.route.resource
    if route is not None and not allows(user.role, request.method, route.canonical):
        return json_error(403, f"the {user.role} role may not do this")
    request[SESSION] = session
    request[USER] = user
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["Server"] = "maltrail"
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.path.startswith("/api/"):
        h["Cache-Control"] = "no-store"
    if request.app[CTX].settings.tls:
        h["Strict-Transport-Security"] = "max-age=31536000"


BASE_HEADERS = {"Server": "maltrail", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


class _HardenedHandler(RequestHandler):
    """Protocol-level errors (malformed request line, oversized headers) never reach the app, so
    aiohttp answers them itself, with its version and an echo of the input: answer plainly."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        status = status if 400 <= status < 600 else 500
        resp = web.Response(status=status, text=f"{status}\n", headers=BASE_HEADERS)
        resp.force_close()
        return resp


class _HardenedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _HardenedHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """AppRunner whose connections use `_HardenedHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _HardenedServer  # same object, only the protocol factory differs
        return server


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def static(request: web.Request) -> web.StreamResponse:
    """Files under webui/static/ at `/<path>` (and `/static/<path>`); `/` is index.html.
    Hidden names, `..`, backslashes and unknown extensions are refused; the resolved path must
    stay inside the folder (no symlink escape)."""
    rel = request.match_info.get("path", "") or "index.html"
    if rel.startswith("static/"):
        rel = rel[len("static/"):]
    parts = rel.split("/")
    if len(rel) > 512 or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        raise web.HTTPNotFound()
    root = STATIC_DIR.resolve()
    path = (root / rel).resolve()
    suffix = path.suffix.lower()
    if not path.is_relative_to(root) or suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    cache = "no-cache" if suffix == ".html" else "max-age=300, must-revalidate"
    return web.FileResponse(path, headers={"Content-Type": STATIC_TYPES[suffix], "Cache-Control": cache})


async def ingest_loop(app: web.Application) -> None:
    """Follow the logs into the index in bounded steps; wake the live streams when events arrive."""
    ctx = app[CTX]
    ctx.progress = await ctx.write(ctx.ingester.progress)
    while not ctx.closing:
        try:
            added = await ctx.write(ctx.ingester.sync, SYNC_BYTES)
        except Exception:
            log.exception("indexing the logs failed; retrying")
            added = 0
        if added:
            ctx.changed()
            ctx.notify()
        if ctx.ingester.pending:
            ctx.progress = await ctx.write(ctx.ingester.progress)
            await asyncio.sleep(0)
            continue
        ctx.caught_up = True
        ctx.progress = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.ingest_wake.wait(), INGEST_SECONDS)
        ctx.ingest_wake.clear()


async def load_trails(app: web.Application) -> None:
    """The trail index for /api/check: the sensor's own (same whitelist and custom trails), prepared
    off the event loop, and prepared again when its source changes or on SIGHUP, like the sensor."""
    from engine.reload import SIGNATURE_SECONDS, TrailSource

    ctx = app[CTX]
    cfg = ctx.settings.trail_config
    if not cfg.trails:
        ctx.trail_error = "no trail index configured ([server] trails or --trails)"
        return
    source = TrailSource(cfg)
    asked = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals outside the main thread
        loop.add_signal_handler(signal.SIGHUP, asked.set)
    seen: object = None
    try:
        while True:
            signature = await ctx.read(source.signature)
            if signature != seen or asked.is_set():
                asked.clear()
                seen = signature
                await _prepare_trails(ctx, cfg)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asked.wait(), SIGNATURE_SECONDS * 2)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)


async def _prepare_trails(ctx: Context, cfg: Any) -> None:
    """One generation: a failure keeps the index in use (or says why there is none)."""
    from engine.sensor import prepare_index

    def prepare() -> TrailIndex:
        work = ctx.settings.index_dir / "trails"
        work.mkdir(parents=True, exist_ok=True)
        return TrailIndex(prepare_index(cfg, work))

    try:
        index = await ctx.write(prepare)
    except Exception as exc:  # reported by /api/check; the rest of the server works without trails
        ctx.trail_error = f"trail index reload failed: {str(exc)[:200]}"
        if ctx.trail_index is None:
            ctx.trail_error = f"trail index unavailable: {str(exc)[:200]}"
        return
    ctx.trail_index, ctx.trail_error = index, ""
    ctx.trail_generation += 1


def build_app(ctx: Context) -> web.Application:
    from webui import accounts, api, blocklist, collected, live  # handlers import this module

    app = web.Application(middlewares=[errors, host_check, auth], client_max_size=64 * 1024)
    app[CTX] = ctx
    hub = app[live.HUB] = live.LiveHub(ctx)
    app.on_response_prepare.append(security_headers)
    api.add_routes(app)
    accounts.add_routes(app)
    app.router.add_get("/api/live", live.live)
    app.router.add_get("/api/blocklist", blocklist.blocklist)
    collected.add_routes(app)
    app.router.add_get("/ping", ping)
    app.router.add_get("/", static)
    app.router.add_get("/{path:(?!api/).+}", static)

    async def background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(ingest_loop(app)), asyncio.create_task(load_trails(app)),
                 asyncio.create_task(hub.run())]
        if ctx.collector is not None:
            tasks += collected.collect_tasks(ctx)
        yield
        ctx.closing = True
        ctx.notify()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pool in (ctx.reader_pool, ctx.hunt_pool, ctx.login_pool, ctx.writer_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        ctx.readers.close()
        ctx.ingester.close()

    async def stopping(app: web.Application) -> None:
        """Before aiohttp waits for open handlers: live streams and hunts end now."""
        ctx.closing = True
        ctx.notify()
        hub.wake()

    app.on_shutdown.append(stopping)
    app.cleanup_ctx.append(background)
    return app


def server_secret(index_dir: Path) -> bytes:
    """The server's own random key (opaque live ids), kept 0600 beside the index."""
    path = index_dir / "secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def make_context(settings: Settings) -> Context:
    ingester = Ingester(settings.log_dir, settings.index_dir, settings.severity, settings.flood_sources)
    return Context(secret=server_secret(settings.index_dir),
        settings=settings, users=UserStore(settings.users),
        sessions=Sessions(settings.session_idle_seconds, settings.session_max_seconds), throttle=LoginGuard(),
        audit=Audit(settings.index_dir / "audit.log"), ingester=ingester,
        readers=Readers(ingester.path, ingester.triage_path), tokens=TokenStore(settings.tokens))
