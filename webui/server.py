"""Running the dashboard server: uvloop, the listening socket (TLS when configured), the one-time
admin password on first start, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
import sys
from collections.abc import Callable

import uvloop
from aiohttp import web

from engine.config import CollectConfig, ConfigError
from webui.app import Runner, build_app, make_context
from webui.auth import UserError, UserStore
from webui.settings import LOCAL_NAMES, Settings


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[server] tls_cert / tls_key: cannot load the certificate and key: {exc}") from None
    return ctx


def url_of(settings: Settings, port: int) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if settings.tls else 'http'}://{host}:{port}/"


def exposure_warnings(settings: Settings) -> list[str]:
    """What an operator should know when the server is reachable from other machines."""
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    out = []
    if not loopback and not settings.tls:
        out.append("listening beyond loopback over plain HTTP: passwords and sessions cross the network "
                   "in clear; set [server] tls_cert and tls_key (or put a TLS proxy in front)")
    if settings.host in ("0.0.0.0", "::") and settings.allowed_hosts <= set(LOCAL_NAMES):
        out.append("listening on every address but [server] allowed_hosts is empty: browsers that use "
                   "another host name are refused (421)")
    return out


async def first_admin(users: UserStore, say: Callable[[str], None]) -> None:
    """Only once the port is bound: create `admin` (or replace one whose password was never
    shown), print the password, and only then mark it shown, so it cannot be lost."""
    try:
        password = users.ensure_admin()
        if password:
            say(f"created user 'admin' with password: {password}")
            say("  (shown once; set your own with: maltrail user add admin)")
        sys.stdout.flush()
        if password:
            users.shown("admin")
    except (UserError, OSError) as exc:
        say(f"warning: cannot create the first user: {exc}")


def serve(settings: Settings, say: Callable[[str], None] = print, collect: CollectConfig | None = None) -> int:
    """Blocks until Ctrl-C / SIGTERM. Prints the URL (and a first-start admin password) once.
    With `[collect]` (`collect`), the server also consumes the sensors' events over NATS."""
    ssl_ctx = tls_context(settings)
    try:
        ctx = make_context(settings)
        if collect is not None:
            from engine.ship.collector import Collector

            ctx.collector = Collector(collect, settings.log_dir, lambda line: say(f"collect: {line}"))
        ctx.users.load()
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"[server] index_dir / users: {exc.strerror}: {exc.filename}") from None

    async def main() -> None:
        runner = Runner(build_app(ctx), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_ctx, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the password: a stop cannot cut its marking
            loop.add_signal_handler(sig, stop.set)
        say(f"dashboard: {url_of(settings, port)}  (logs: {settings.log_dir}, index: {settings.index_dir})")
        if collect is not None:
            udp = f"; UDP intake on {collect.udp_listen}" if collect.udp_listen else ""
            say(f"collect: sensors' events from {', '.join(collect.servers)} (stream {collect.stream}) into "
                f"{settings.log_dir / 'sensors'}{udp}")
        for warning in exposure_warnings(settings):
            say(f"warning: {warning}")
        await first_admin(ctx.users, say)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()

    uvloop.run(main())
    say("dashboard: stopped")
    return 0
