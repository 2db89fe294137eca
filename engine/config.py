"""`maltrail.toml`: loading, defaults and validation.

Every option has a default here (the shipped `maltrail.toml` documents the same values). A bad
value is reported as one line naming the key and the problem; unknown keys are refused so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.heuristic_settings import HeuristicSettings

if TYPE_CHECKING:
    from engine.outputs.spec import OutputSpec


class ConfigError(Exception):
    """One-line description of a configuration problem, naming the key."""


@dataclass
class SensorConfig:
    name: str = ""
    trails: str = ""
    custom_trails: list[str] = field(default_factory=list)
    whitelist: list[str] = field(default_factory=list)
    default_whitelist: bool = True
    ignore: list[str] = field(default_factory=list)
    default_ignore: bool = True
    log_dir: str = "/var/log/maltrail"
    workers: int = 1
    interface: str = ""
    bpf: str = ""
    snaplen: int = 65535
    promisc: bool = True
    capture_buffer_mb: int = 64
    batch_packets: int = 32768
    ring_slots: int = 4
    ring_slot_kb: int = 8192
    status_file: str = ""
    report_seconds: int = 5
    use_heuristics: bool = True
    disabled_heuristics: list[str] = field(default_factory=list)
    check_missing_host: bool = False
    check_host_domains: bool = False
    scan_window: int = HeuristicSettings.scan_window
    port_scan_threshold: int = HeuristicSettings.port_scan_threshold
    udp_scan_threshold: int = HeuristicSettings.udp_scan_threshold
    web_scan_threshold: int = HeuristicSettings.web_scan_threshold
    infection_threshold: int = HeuristicSettings.infection_threshold
    dns_exhaustion_threshold: int = HeuristicSettings.dns_exhaustion_threshold
    nxdomain_threshold: int = HeuristicSettings.nxdomain_threshold
    disable_local_log: bool = False
    metrics: str = ""
    ignore_events_regex: str = ""
    disabled_trails_info_regex: str = ""
    # Not [sensor] keys: the [[output]] tables and [server] severity_rules (the outputs' severity).
    outputs: list[OutputSpec] = field(default_factory=list)
    severity_rules: list[dict[str, str]] = field(default_factory=list)

    @property
    def sensor_name(self) -> str:
        return self.name or socket.gethostname()


_LIMITS: dict[str, tuple[int, int]] = {
    "workers": (1, 64),
    "snaplen": (64, 262144),
    "capture_buffer_mb": (1, 4096),
    "batch_packets": (1, 65536),
    "ring_slots": (2, 1024),
    "ring_slot_kb": (512, 262144),
    "report_seconds": (0, 86400),
    "scan_window": (1, 3600),
    "port_scan_threshold": (1, 1024),
    "udp_scan_threshold": (1, 1024),
    "web_scan_threshold": (1, 1024),
    "infection_threshold": (1, 1024),
    "dns_exhaustion_threshold": (1, 100_000),
    "nxdomain_threshold": (1, 100_000),
}
HEURISTIC_NAMES = ("port_scanning", "udp_scanning", "infection", "web_scanning", "dns_exhaustion", "long_domain")


def _check_type(section: str, key: str, value: Any, expected: Any) -> None:
    where = f"[{section}] {key}"
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is str:
        ok = isinstance(value, str)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # list[str]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not ok:
        name = {list: "list of strings", float: "number"}.get(expected, getattr(expected, "__name__", ""))
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    if key in _LIMITS:
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: {value} is out of range ({lo}..{hi})")


DERIVED_FIELDS = frozenset({"outputs", "severity_rules"})


def _section_items(data: dict[str, Any], name: str, cls: type, source: str) -> list[tuple[str, Any, str]]:
    """(key, value, declared type) of a section's entries; a key the dataclass lacks is refused."""
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    derived = DERIVED_FIELDS if cls is SensorConfig else frozenset()
    types = {f.name: str(f.type) for f in fields(cls) if f.name not in derived}
    for key in section:
        if key not in types:
            raise ConfigError(f"{source}: [{name}] {key}: unknown key")
    return [(key, value, types[key]) for key, value in section.items()]


def sensor_config_from(data: dict[str, Any], source: str = "maltrail.toml") -> SensorConfig:
    unknown_sections = set(data) - {"sensor", "server", "update", "output", "ship", "collect"}
    if unknown_sections:
        raise ConfigError(f"{source}: unknown section [{sorted(unknown_sections)[0]}]")
    cfg = SensorConfig()
    for key, value, declared in _section_items(data, "sensor", SensorConfig, source):
        expected = {"str": str, "int": int, "bool": bool}.get(declared, list)
        _check_type("sensor", key, value, expected)
        if key == "disabled_heuristics":
            unknown = [v for v in value if v not in HEURISTIC_NAMES]
            if unknown:
                raise ConfigError(f"{source}: [sensor] disabled_heuristics: unknown heuristic {unknown[0]!r} "
                                  f"(known: {', '.join(HEURISTIC_NAMES)})")
        if key in ("ignore_events_regex", "disabled_trails_info_regex") and value:
            check_regex(f"{source}: [sensor] {key}", value)
        if key == "metrics" and value:
            listen_address(value, f"{source}: [sensor] metrics")
        setattr(cfg, key, value)
    if "output" in data:
        from engine.outputs.spec import output_specs

        cfg.outputs = output_specs(data["output"], source)
    rules = data.get("server", {}).get("severity_rules", []) if isinstance(data.get("server"), dict) else []
    cfg.severity_rules = rules if isinstance(rules, list) else []
    if cfg.disable_local_log and not cfg.outputs:
        raise ConfigError(f"{source}: [sensor] disable_local_log: true with no [[output]] would keep no event")
    return cfg


def check_regex(where: str, pattern: str) -> re.Pattern[str]:
    """Compiled case-insensitively (as Maltrail does), or ConfigError naming the key."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: not a regular expression ({exc})") from None


def listen_address(text: str, where: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[ADDR]:PORT`) to listen on."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m or not 0 < int(m.group(2) or m.group(4)) < 65536:
        raise ConfigError(f"{where}: {text!r} is not HOST:PORT (IPv6 as [ADDR]:PORT)")
    return m.group(1) or m.group(3), int(m.group(2) or m.group(4))


def load_config(path: Path | None) -> SensorConfig:
    """Read `path` (None: defaults only)."""
    if path is None:
        return SensorConfig()
    return sensor_config_from(_read_toml(path), str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return data


# Never in /api/blocklist: loopback, private, link-local (Maltrail's FAIL2BAN_ALLOWLIST idea).
DEFAULT_BLOCKLIST_ALLOWLIST = ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                               "::1/128", "fc00::/7", "fe80::/10")


@dataclass
class ServerConfig:
    """`[server]`: the web dashboard (`maltrail server`). Empty paths fall back as documented."""

    listen: str = "127.0.0.1:8338"
    log_dir: str = ""
    users: str = ""
    index_dir: str = ""
    trails: str = ""
    status_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    allowed_hosts: list[str] = field(default_factory=list)
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    hunt_budget_seconds: int = 10
    max_live_streams: int = 32
    flood_sources: int = 50
    severity_rules: list[dict[str, str]] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)
    pivot_links: list[dict[str, Any]] = field(default_factory=list)
    tokens: str = ""
    blocklist_allowlist: list[str] = field(default_factory=lambda: list(DEFAULT_BLOCKLIST_ALLOWLIST))


_SERVER_LIMITS: dict[str, tuple[float, float]] = {
    "session_idle_minutes": (1, 1440),
    "session_max_hours": (1, 720),
    "hunt_budget_seconds": (1, 600),
    "max_live_streams": (1, 1000),
    "flood_sources": (0, 1_000_000),
}


def check_value(section: str, source: str, key: str, value: Any, declared: str,
                 limits: dict[str, tuple[float, float]]) -> None:
    """Type (from the dataclass field) and range of one key, the error naming file, section and key."""
    expected = {"str": str, "int": int, "bool": bool, "float": float}.get(declared, list)
    try:
        _check_type(section, key, value, expected)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if key in limits and not limits[key][0] <= value <= limits[key][1]:
        lo, hi = limits[key]
        raise ConfigError(f"{source}: [{section}] {key}: {value} is out of range ({lo}..{hi})")


def server_config_from(data: dict[str, Any], source: str = "maltrail.toml") -> ServerConfig:
    """Types and ranges here; listen addresses and severity regexes are checked by `webui.settings`."""
    cfg = ServerConfig()
    for key, value, declared in _section_items(data, "server", ServerConfig, source):
        where = f"{source}: [server] {key}"
        if key in ("severity_rules", "pivot_links"):
            if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
                raise ConfigError(f"{where}: expected a list of tables")
        else:
            check_value("server", source, key, value, declared, _SERVER_LIMITS)
        setattr(cfg, key, value)
    return cfg


def load_configs(path: Path | None) -> tuple[SensorConfig, ServerConfig]:
    """Both sections of `path` (None: defaults only)."""
    if path is None:
        return SensorConfig(), ServerConfig()
    data = _read_toml(path)
    return sensor_config_from(data, str(path)), server_config_from(data, str(path))


DEFAULT_STATIC_URL = "https://codeload.github.com/stamparm/maltrail/tar.gz/refs/heads/master"
_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class UpdateConfig:
    """`[update]`: `maltrail update` (static trails, feeds, custom URLs) and the sensor's own timer."""

    period: str = "1d"
    sensor_updates: bool = False
    static_url: str = DEFAULT_STATIC_URL
    feeds: list[str] = field(default_factory=list)
    disabled_feeds: list[str] = field(default_factory=list)
    custom_urls: list[str] = field(default_factory=list)
    timeout: int = 30
    retries: int = 3
    max_bytes: int = 256 << 20
    min_ratio: float = 0.5
    proxy: str = ""
    ip_minimum_feeds: int = 3
    disabled_info_regex: str = ""
    cache_dir: str = ""
    mirror: str = ""

    @property
    def period_seconds(self) -> int:
        return parse_period(self.period)


def parse_period(text: str) -> int:
    """`"1d"`, `"12h"`, `"30m"`, `"90s"` or plain seconds `"3600"` -> seconds (0 = never)."""
    value = text.strip().lower()
    unit = _PERIOD_UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit else value
    if not number.isdigit():
        raise ConfigError(f"[update] period: {text!r} is not a duration (e.g. 1d, 12h, 30m, 3600)")
    return int(number) * (unit or 1)


_UPDATE_LIMITS: dict[str, tuple[float, float]] = {
    "timeout": (1, 600),
    "retries": (0, 10),
    "max_bytes": (1024, 1 << 34),
    "min_ratio": (0.0, 1.0),
    "ip_minimum_feeds": (1, 100),
}


def update_config_from(data: dict[str, Any], source: str = "maltrail.toml") -> UpdateConfig:
    """Types, ranges, the period and the regex here; feed names are checked against the definitions
    by `engine.update`, which knows them."""
    cfg = UpdateConfig()
    for key, value, declared in _section_items(data, "update", UpdateConfig, source):
        where = f"{source}: [update] {key}"
        check_value("update", source, key, value, declared, _UPDATE_LIMITS)
        if key == "period":
            try:
                parse_period(value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        if key == "disabled_info_regex" and value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(f"{where}: not a regular expression ({exc})") from None
        setattr(cfg, key, value)
    return cfg


def load_update_config(path: Path | None) -> UpdateConfig:
    """`[update]` of `path` (None: defaults only)."""
    return UpdateConfig() if path is None else update_config_from(_read_toml(path), str(path))


@dataclass
class NatsSettings:
    """How to reach NATS (`[ship]` on a sensor, `[collect]` on the server): servers, credentials, TLS."""

    servers: list[str] = field(default_factory=list)
    subject_prefix: str = "maltrail"
    stream: str = "MALTRAIL_EVENTS"
    trails_bucket: str = "maltrail-trails"
    user: str = ""
    password_file: str = ""
    token_file: str = ""
    nkey_seed_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


@dataclass
class ShipConfig(NatsSettings):
    """`[ship]`: the sensor's shipper (`maltrail ship`, started by `maltrail sensor` when present)."""

    heartbeat_seconds: int = 5
    publish_window: int = 256
    events_per_message: int = 64
    follow_trails: bool = False
    trails_poll_seconds: int = 10
    state_dir: str = ""


@dataclass
class CollectConfig(NatsSettings):
    """`[collect]`: the server's durable consumer, heartbeats, trail publishing and UDP intake."""

    durable: str = "maltrail-server"
    replicas: int = 1
    duplicate_window_seconds: int = 600
    batch: int = 1000
    stale_seconds: int = 15
    publish_trails: str = ""
    udp_listen: str = ""
    udp_allow: list[str] = field(default_factory=list)
    udp_max_age_days: int = 1


_NATS_LIMITS: dict[str, tuple[float, float]] = {
    "heartbeat_seconds": (1, 3600),
    "publish_window": (1, 65536),
    "events_per_message": (1, 1024),
    "trails_poll_seconds": (1, 86400),
    "replicas": (1, 5),
    "duplicate_window_seconds": (10, 86400),
    "batch": (1, 100_000),
    "stale_seconds": (2, 86400),
    "udp_max_age_days": (0, 3650),
}
SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _nats_section(data: dict[str, Any], name: str, cls: type, source: str) -> Any:
    """`[ship]` / `[collect]`, or None when the section is absent (nothing of NATS starts then)."""
    if name not in data:
        return None
    cfg = cls()
    for key, value, declared in _section_items(data, name, cls, source):
        check_value(name, source, key, value, declared, _NATS_LIMITS)
        setattr(cfg, key, value)
    if not cfg.servers:
        raise ConfigError(f"{source}: [{name}] servers: give at least one NATS URL, e.g. [\"nats://127.0.0.1:4222\"]")
    for key in ("subject_prefix", "stream", "trails_bucket"):
        if not SUBJECT_TOKEN.fullmatch(getattr(cfg, key)):
            raise ConfigError(f"{source}: [{name}] {key}: {getattr(cfg, key)!r} may hold only letters, digits, _ and -")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError(f"{source}: [{name}] tls_cert / tls_key: give both or neither")
    if sum(bool(x) for x in (cfg.password_file, cfg.token_file, cfg.nkey_seed_file)) > 1:
        raise ConfigError(f"{source}: [{name}]: give one of password_file, token_file, nkey_seed_file")
    if cfg.password_file and not cfg.user:
        raise ConfigError(f"{source}: [{name}] password_file: needs user")
    return cfg


def load_nats_configs(path: Path | None) -> tuple[ShipConfig | None, CollectConfig | None]:
    """`[ship]` and `[collect]` of `path`; each None when absent."""
    if path is None:
        return None, None
    data = _read_toml(path)
    return (_nats_section(data, "ship", ShipConfig, str(path)),
            _nats_section(data, "collect", CollectConfig, str(path)))
