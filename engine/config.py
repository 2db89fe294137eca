"""`maltrail.toml`: loading, defaults and validation.

Every option has a default here (the shipped `maltrail.toml` documents the same values). A bad
value is reported as one line naming the key and the problem; unknown keys are refused so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.heuristics import HeuristicSettings


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
    batch_packets: int = 4096
    ring_slots: int = 8
    ring_slot_kb: int = 4096
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
    else:  # list[str]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not ok:
        name = "list of strings" if expected is list else expected.__name__
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    if key in _LIMITS:
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: {value} is out of range ({lo}..{hi})")


def sensor_config_from(data: dict[str, Any], source: str = "maltrail.toml") -> SensorConfig:
    unknown_sections = set(data) - {"sensor"}
    if unknown_sections:
        raise ConfigError(f"{source}: unknown section [{sorted(unknown_sections)[0]}]")
    section = data.get("sensor", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [sensor] must be a table")
    cfg = SensorConfig()
    types = {f.name: f.type for f in fields(SensorConfig)}
    for key, value in section.items():
        if key not in types:
            raise ConfigError(f"{source}: [sensor] {key}: unknown key")
        expected = {"str": str, "int": int, "bool": bool}.get(str(types[key]), list)
        _check_type("sensor", key, value, expected)
        if key == "disabled_heuristics":
            unknown = [v for v in value if v not in HEURISTIC_NAMES]
            if unknown:
                raise ConfigError(f"{source}: [sensor] disabled_heuristics: unknown heuristic {unknown[0]!r} "
                                  f"(known: {', '.join(HEURISTIC_NAMES)})")
        setattr(cfg, key, value)
    return cfg


def load_config(path: Path | None) -> SensorConfig:
    """Read `path` (None: defaults only)."""
    if path is None:
        return SensorConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return sensor_config_from(data, str(path))
