"""`[[output]]` tables of `maltrail.toml`: one validated, picklable spec per output.

Each output names its `type`; network outputs give `address = "HOST:PORT"` and `protocol`, the
webhook a `url`, a file output a `path`. A key that does not apply to the output's type is refused
with a message (never silently ignored), as is a protocol the type cannot speak.

The aggregator imports this module for the specs alone, on the sensor's start-up path: the
configuration code (about 15 ms of imports) is imported by the functions that read tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from shm.ring import RingSpec

TYPES = ("syslog", "json", "webhook", "maltrail")
SEVERITIES = ("low", "medium", "high")

# Which keys each type takes (besides `type`, `name` and the common ones).
COMMON = {"type", "name", "queue_size", "retries", "timeout", "drain_seconds", "min_severity"}
NETWORK = {"address", "protocol", "tls_ca", "tls_verify", "tls_server_name"}
PER_TYPE: dict[str, set[str]] = {
    "syslog": COMMON | NETWORK | {"facility", "hostname"},
    "json": COMMON | NETWORK | {"path"},
    "webhook": COMMON | {"url", "template", "throttle_seconds", "tls_ca", "tls_verify"},
    "maltrail": COMMON | {"address", "protocol"},
}
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "syslog": ("udp", "tcp", "tls"),
    "json": ("tcp", "udp", "tls"),
    "maltrail": ("udp",),  # Maltrail's server reads LOG_SERVER datagrams on UDP only
}
_LIMITS: dict[str, tuple[float, float]] = {
    "queue_size": (1, 1_000_000),
    "retries": (0, 100),
    "timeout": (0.1, 300),
    "drain_seconds": (0, 600),
    "facility": (0, 23),
    "throttle_seconds": (0, 86400),
}


@dataclass(frozen=True)
class OutputSpec:
    """One output; `host`/`port` are parsed from `address`."""

    type: str
    name: str
    address: str = ""
    protocol: str = "udp"
    path: str = ""
    url: str = ""
    template: str = ""
    min_severity: str = "low"
    throttle_seconds: int = 300
    queue_size: int = 10_000
    retries: int = 3
    timeout: float = 5.0
    drain_seconds: float = 5.0
    facility: int = 1
    hostname: str = ""
    tls_ca: str = ""
    tls_verify: bool = True
    tls_server_name: str = ""
    host: str = field(default="", compare=False)
    port: int = field(default=0, compare=False)

    @property
    def target(self) -> str:
        """Where events go, for status lines."""
        if self.url:
            return self.url
        if self.path:
            return self.path
        return f"{self.protocol}://{self.address}"


def output_spec(table: Any, position: int, source: str = "maltrail.toml") -> OutputSpec:
    """One `[[output]]` table (0-based `position`, for messages) -> spec, or ConfigError."""
    from engine.config import ConfigError, check_value, listen_address  # noqa: PLC0415 - see the docstring
    where = f"{source}: [[output]] #{position + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    kind = table.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where} type: expected one of {', '.join(TYPES)}, got {kind!r}")
    defaults = {f.name: f.default for f in fields(OutputSpec) if f.name not in ("type", "host", "port")}
    defaults["name"] = ""
    allowed = PER_TYPE[kind]
    values: dict[str, Any] = {"name": f"{kind}-{position + 1}"}
    for key, value in table.items():
        if key == "type":
            continue
        if key not in defaults:
            raise ConfigError(f"{where} {key}: unknown key")
        if key not in allowed:
            raise ConfigError(f"{where} {key}: does not apply to type = {kind!r} "
                              f"(it takes: {', '.join(sorted(allowed - {'type'}))})")
        check_value(f"output #{position + 1}", source, key, value, type(defaults[key]).__name__, _LIMITS)
        values[key] = float(value) if isinstance(defaults[key], float) else value
    where = f"{source}: [[output]] {values['name']!r}"
    if values.get("min_severity", "low") not in SEVERITIES:
        raise ConfigError(f"{where} min_severity: expected one of {', '.join(SEVERITIES)}")
    if kind == "webhook":
        values.setdefault("min_severity", "high")
        url = values.get("url", "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where} url: expected an http:// or https:// URL, got {url!r}")
        return OutputSpec(type=kind, **values)
    if kind == "json" and values.get("path"):
        if "address" in values or "protocol" in values:
            raise ConfigError(f"{where}: give path (a file) or address/protocol (the network), not both")
        return OutputSpec(type=kind, **values)
    if "address" not in values:
        raise ConfigError(f"{where} address: required (HOST:PORT)" + (" or path" if kind == "json" else ""))
    protocol = values.get("protocol", PROTOCOLS[kind][0])
    if protocol not in PROTOCOLS[kind]:
        raise ConfigError(f"{where} protocol: {protocol!r} is not available for type = {kind!r} "
                          f"(available: {', '.join(PROTOCOLS[kind])})")
    values["protocol"] = protocol
    host, port = listen_address(values["address"], f"{where} address")
    if protocol != "tls" and any(k in values for k in ("tls_ca", "tls_verify", "tls_server_name")):
        raise ConfigError(f"{where}: tls_* keys apply to protocol = \"tls\" only")
    return OutputSpec(type=kind, host=host, port=port, **values)


def output_specs(tables: Any, source: str = "maltrail.toml") -> list[OutputSpec]:
    """The `output` array of tables; names must be unique (they key the counters)."""
    from engine.config import ConfigError  # noqa: PLC0415 - see the module's docstring
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: output must be an array of tables ([[output]])")
    specs = [output_spec(t, i, source) for i, t in enumerate(tables)]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{source}: [[output]] name {name!r} is used twice")
    return specs


@dataclass(frozen=True)
class EventSettings:
    """Where the aggregator sends events and what it drops first (picklable; light to import for
    the sensor process)."""

    outputs: tuple[OutputSpec, ...] = ()
    severity_rules: tuple[dict[str, str], ...] = ()
    local_log: bool = True
    ignore_regex: str = ""
    feed: RingSpec | None = None  # into the outputs process (engine/outputs/process.py)
    stats: Connection | None = None  # its counters, back to the aggregator
