"""Connecting to NATS from `[ship]` / `[collect]` settings: servers, per-sensor credentials
(user + password, token or NKey seed), TLS; and the subject names both sides agree on."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from engine.config import ConfigError, NatsSettings

RECONNECT_SECONDS = 0.5


def events_subject(cfg: NatsSettings, sensor: str) -> str:
    return f"{cfg.subject_prefix}.events.{sensor}"


def heartbeat_subject(cfg: NatsSettings, sensor: str) -> str:
    return f"{cfg.subject_prefix}.hb.{sensor}"


def _secret(path: str, key: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def tls_context(cfg: NatsSettings) -> ssl.SSLContext | None:
    """TLS when a CA or a client certificate is configured (a `tls://` URL alone uses the system CAs)."""
    if not (cfg.tls_ca or cfg.tls_cert or any(s.startswith("tls://") for s in cfg.servers)):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls_cert:
        try:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_cert / tls_key: cannot load the certificate and key: {exc}") from None
    return ctx


def connect_options(cfg: NatsSettings, name: str) -> dict[str, Any]:
    """Keyword arguments of `nats.connect` (credentials read now: a missing file is a config error)."""
    opts: dict[str, Any] = {"servers": list(cfg.servers), "name": name, "connect_timeout": 2,
                            "reconnect_time_wait": RECONNECT_SECONDS, "max_reconnect_attempts": -1,
                            "ping_interval": 5, "max_outstanding_pings": 2}
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = _secret(cfg.password_file, "password_file") if cfg.password_file else ""
    if cfg.token_file:
        opts["token"] = _secret(cfg.token_file, "token_file")
    if cfg.nkey_seed_file:
        opts["nkeys_seed_str"] = _secret(cfg.nkey_seed_file, "nkey_seed_file")
    tls = tls_context(cfg)
    if tls is not None:
        opts["tls"] = tls
    return opts


async def connect(cfg: NatsSettings, name: str, on_error: Callable[[str], Awaitable[None] | None] | None = None,
                  **callbacks: Callable[[], Awaitable[None]]) -> Client:
    """One connection that reconnects forever once up; the first attempt's failure is raised.
    `callbacks`: nats-py's `disconnected_cb`, `reconnected_cb`."""

    async def error_cb(exc: Exception) -> None:
        if on_error is not None:
            result = on_error(describe_error(exc))
            if result is not None:
                await result

    return await nats.connect(error_cb=error_cb, **callbacks, **connect_options(cfg, name))


def describe_error(exc: BaseException) -> str:
    """One line for a NATS failure; refused credentials are named as such."""
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower() or "authentication" in text.lower():
        return f"NATS refused the credentials ({text.strip()})"
    if "permissions violation" in text.lower():
        return f"NATS refused a subject ({text.strip()})"
    return f"NATS: {type(exc).__name__}: {text.strip()}"


def sensor_permissions(cfg: NatsSettings, sensor: str) -> dict[str, Any]:
    """The nats-server `permissions` block of one sensor: publish only its own event and heartbeat
    subjects, and read (never write) the trail object store; replies come on its inboxes."""
    obj = f"OBJ_{cfg.trails_bucket}"
    return {
        "publish": {"allow": [events_subject(cfg, sensor), heartbeat_subject(cfg, sensor), "$JS.API.INFO",
                              "$JS.API.STREAM.NAMES", f"$JS.API.STREAM.INFO.{obj}", f"$JS.API.STREAM.MSG.GET.{obj}",
                              f"$JS.API.DIRECT.GET.{obj}.>", f"$JS.API.CONSUMER.CREATE.{obj}",
                              f"$JS.API.CONSUMER.CREATE.{obj}.>", f"$JS.API.CONSUMER.DELETE.{obj}.>",
                              f"$JS.FC.{obj}.>"]},
        "subscribe": {"allow": ["_INBOX.>"]},
    }
