"""The server's resolved settings: `[server]` (and `[sensor]` fallbacks) plus command-line overrides,
validated once at start with errors that name the key."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import ConfigError, SensorConfig, ServerConfig
from engine.severity import Severity, compile_rule
from webui.netaddr import NetworkError, Scope

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class Settings:
    host: str
    port: int
    log_dir: Path
    index_dir: Path
    users: Path
    trails: Path | None
    trail_config: SensorConfig  # [sensor] whitelist, default_whitelist, custom_trails: the sensor's index
    status_file: Path
    tls_cert: Path | None
    tls_key: Path | None
    allowed_hosts: frozenset[str]
    session_idle_seconds: float
    session_max_seconds: float
    hunt_budget_seconds: float
    max_live_streams: int
    flood_sources: int
    severity: Severity
    tokens: Path
    blocklist_allowlist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    trusted_proxies: Scope = field(default_factory=lambda: Scope([]))
    pivot_links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_listen(text: str, where: str = "[server] listen") -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT`; HOST must be a literal address (what is bound is what is shown)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8338")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{where}: {host!r} is not an IP address") from None
    return host, int(port)


def resolve(sensor: SensorConfig, server: ServerConfig, log_dir: str | None = None, users: str | None = None,
            listen: str | None = None, trails: str | None = None) -> Settings:
    host, port = parse_listen(listen or server.listen, "--listen" if listen else "[server] listen")
    logs = Path(log_dir or server.log_dir or sensor.log_dir).expanduser()
    index_dir = Path(server.index_dir).expanduser() if server.index_dir else logs / ".webui"
    trails_src = trails or server.trails or sensor.trails
    status = server.status_file or sensor.status_file
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("[server] tls_cert and tls_key: give both or neither")
    for key in ("tls_cert", "tls_key"):
        value = getattr(server, key)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"[server] {key}: {value} is not a readable file")
    hosts = set(LOCAL_NAMES)
    if host not in ("0.0.0.0", "::"):
        hosts.add(host.lower())
    for name in server.allowed_hosts:
        if not name or len(name) > 253 or any(c in name for c in "/ :@") and not _is_v6(name):
            raise ConfigError(f"[server] allowed_hosts: {name!r} is not a host name or address")
        hosts.add(name.lower().strip("[]"))
    allowlist = []
    for text in server.blocklist_allowlist:
        try:
            allowlist.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"[server] blocklist_allowlist: {text!r} is not an address or CIDR") from None
    rules = []
    for i, rule in enumerate(server.severity_rules):
        try:
            compile_rule(rule, f"[server] severity_rules[{i}]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        rules.append(rule)
    try:
        proxies = Scope.parse(list(server.trusted_proxies))
    except NetworkError as exc:
        raise ConfigError(f"[server] trusted_proxies: {exc}") from None
    return Settings(
        trusted_proxies=proxies, pivot_links=[pivot_link(p, i) for i, p in enumerate(server.pivot_links)],
        host=host, port=port, log_dir=logs, index_dir=index_dir,
        users=Path(users or server.users).expanduser() if (users or server.users) else index_dir / "users.json",
        trails=Path(trails_src).expanduser() if trails_src else None,
        trail_config=replace(sensor, trails=str(Path(trails_src).expanduser()) if trails_src else ""),
        status_file=Path(status).expanduser() if status else logs / "sensor-status.json",
        tls_cert=Path(server.tls_cert).expanduser() if server.tls_cert else None,
        tls_key=Path(server.tls_key).expanduser() if server.tls_key else None,
        allowed_hosts=frozenset(hosts),
        session_idle_seconds=server.session_idle_minutes * 60.0,
        session_max_seconds=server.session_max_hours * 3600.0,
        hunt_budget_seconds=float(server.hunt_budget_seconds),
        max_live_streams=server.max_live_streams,
        flood_sources=server.flood_sources,
        severity=Severity(rules),
        tokens=Path(server.tokens).expanduser() if server.tokens else index_dir / "tokens.json",
        blocklist_allowlist=tuple(allowlist),
    )


PIVOT_FIELDS = ("src_ip", "dst_ip", "trail")


def pivot_link(table: dict[str, Any], i: int) -> dict[str, Any]:
    """`[[server.pivot_links]]` name = "...", url = "https://.../{value}", fields = [src_ip, dst_ip, trail]
    (default all): a link shown next to each value of those fields; none unless configured."""
    where = f"[server] pivot_links[{i}]"
    name, url = table.get("name"), table.get("url")
    fields = table.get("fields", list(PIVOT_FIELDS))
    if not isinstance(name, str) or not 1 <= len(name) <= 40:
        raise ConfigError(f"{where} name: give a short label (1-40 characters)")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or "{value}" not in url:
        raise ConfigError(f"{where} url: expected an http(s) URL containing {{value}}")
    if not isinstance(fields, list) or not fields or any(f not in PIVOT_FIELDS for f in fields):
        raise ConfigError(f"{where} fields: expected a list of {', '.join(PIVOT_FIELDS)}")
    unknown = set(table) - {"name", "url", "fields"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return {"name": name, "url": url, "fields": fields}


def _is_v6(name: str) -> bool:
    try:
        return ipaddress.ip_address(name.strip("[]")).version == 6
    except ValueError:
        return False
