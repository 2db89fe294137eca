"""`maltrail config import maltrail.conf [-o maltrail.toml]`: a Maltrail configuration translated.

Every option of the file is reported once: `mapped` (with the TOML key it became), `n/a` (this
sensor has no such setting, and why) or `unsupported` (a Maltrail feature not here, or a value
that cannot be carried over). The TOML written is checked by the same loader the commands use.
The file is read as Maltrail's `read_config` reads it: `#` to the end of a line is a comment, a
line with one word starts an array whose indented lines are its items, otherwise `NAME value`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import HEURISTIC_NAMES, ConfigError, sensor_config_from, server_config_from, update_config_from

BOOL_PREFIXES = ("USE_", "SET_", "CHECK_", "ENABLE_", "SHOW_", "DISABLE_")
SHIPPED_FAIL2BAN_REGEX = (r"attacker|reputation|potential[^\"]*(web scan|directory traversal|injection|remote code|"
                          r"iot-malware download)|spammer|mass scanner")


@dataclass
class Imported:
    """The TOML tables being built and the report, one line per option."""

    source: Path
    tables: dict[str, dict[str, Any]] = field(default_factory=lambda: {"sensor": {}, "server": {}, "update": {}})
    outputs: list[dict[str, Any]] = field(default_factory=list)
    report: list[tuple[str, str, str]] = field(default_factory=list)  # (status, option, text)

    def set(self, option: str, section: str, key: str, value: Any, note: str = "") -> None:
        self.tables[section][key] = value
        self.report.append(("mapped", option, f"[{section}] {key} = {value!r}" + (f" ({note})" if note else "")))

    def na(self, option: str, why: str) -> None:
        self.report.append(("n/a", option, why))

    def unsupported(self, option: str, why: str) -> None:
        self.report.append(("unsupported", option, why))

    def output(self, option: str, table: dict[str, Any], note: str = "") -> None:
        self.outputs.append(table)
        shown = ", ".join(f"{k} = {v!r}" for k, v in table.items())
        self.report.append(("mapped", option, f"[[output]] {shown}" + (f" ({note})" if note else "")))


def read_maltrail_conf(text: str) -> dict[str, str | list[str]]:
    """NAME -> value (str) or items (list) for arrays, in file order; `$VAR`s are left as written."""
    options: dict[str, str | list[str]] = {}
    array: str | None = None
    for raw in text.splitlines():
        line = re.sub(r"\s*#.*", "", raw)
        if not line.strip():
            continue
        if array is not None and line[:1].isspace():
            options[array].append(line.strip())  # type: ignore[union-attr]
            continue
        array = None
        stripped = line.strip()
        if " " not in stripped and re.fullmatch(r"\w+", stripped):
            array = stripped.upper()
            options[array] = []
            continue
        name, _, value = stripped.partition(" ")
        options[name.upper()] = value.strip().strip("'\"")
    return options


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true")


def _expand(value: str) -> str:
    return value.replace("$SYSTEM_LOG_DIR", "/var/log").replace("${SYSTEM_LOG_DIR}", "/var/log")


def _path(imp: Imported, value: str) -> str:
    """Maltrail makes relative paths absolute from its own folder, where maltrail.conf lives."""
    path = Path(_expand(value)).expanduser()
    return str(path if path.is_absolute() else (imp.source.parent / path).resolve())


def _int(imp: Imported, option: str, value: str, section: str, key: str, lo: int, hi: int) -> None:
    if not value.strip().isdigit():
        imp.unsupported(option, f"{value!r} is not a whole number; {key} keeps its default")
    elif not lo <= int(value) <= hi:
        imp.set(option, section, key, min(hi, max(lo, int(value))), f"{value} clamped to {lo}..{hi}")
    else:
        imp.set(option, section, key, int(value))


def _endpoints(value: str) -> list[str]:
    return [v for v in re.split(r"[,;\s]+", value.strip()) if v]


def _host_port(value: str) -> str | None:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)(%\w+)?\]:(\d+)|([^:\[\]%]+):(\d+)", value)
    if not m or m.group(2):
        return None
    return f"[{m.group(1)}]:{m.group(3)}" if m.group(1) else f"{m.group(4)}:{m.group(5)}"


def _listen(imp: Imported, options: dict[str, Any]) -> None:
    address, port = str(options.get("HTTP_ADDRESS", "0.0.0.0")), str(options.get("HTTP_PORT", "8338"))
    if "%" in address:
        imp.unsupported("HTTP_ADDRESS", f"{address!r}: a scoped (%interface) address cannot be bound here")
        return
    host = f"[{address}]" if ":" in address else address
    imp.set("HTTP_ADDRESS", "server", "listen", f"{host}:{port}",
            "with HTTP_PORT; Maltrail listens on every address by default, this server on loopback unless told")
    if "HTTP_PORT" in options:
        imp.report.append(("mapped", "HTTP_PORT", "into [server] listen (above)"))


def _capture_buffer(imp: Imported, option: str, value: str) -> None:
    m = re.fullmatch(r"(\d+)\s*(%|[kKmMgG][bB]?)?", value.strip())
    if not m:
        imp.unsupported(option, f"{value!r} is not a size")
        return
    number, unit = int(m.group(1)), (m.group(2) or "").upper()[:1]
    if unit == "%":
        size = number * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 100
    else:
        size = number << {"": 0, "K": 10, "M": 20, "G": 30}[unit]
    mb = min(4096, max(1, size >> 20))
    imp.set(option, "sensor", "capture_buffer_mb", mb, f"{value} of this machine as the kernel capture buffer, "
            "at most 4096 MiB (Maltrail's is its own ring; ring_slots / ring_slot_kb size ours)")


def _users(imp: Imported, option: str, value: Any) -> None:
    names = [str(v).split(":", 1)[0] for v in value] if isinstance(value, list) else []
    imp.na(option, "Maltrail stores unsalted SHA-256 password hashes, which cannot become this server's scrypt "
           f"hashes: create the users again with `maltrail user add NAME` ({', '.join(names) or 'none listed'}; "
           "a netmask becomes --scope, UID >= 1000 means no --admin)")


def _feeds_off(imp: Imported, option: str, value: str) -> None:
    if _bool(value):
        imp.na(option, "feeds are used by default")
        return
    from engine.update.feeds import load_feeds

    imp.set(option, "update", "disabled_feeds", sorted(load_feeds()), "every feed off")


def _disabled_feeds(imp: Imported, option: str, value: str) -> None:
    from engine.update.feeds import load_feeds

    known = load_feeds()
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    kept = [n for n in names if n in known]
    if kept:
        imp.set(option, "update", "disabled_feeds", kept)
    if unknown:
        imp.unsupported(option, f"feeds not known here (engine/data/feeds.toml): {', '.join(unknown)}")


def _custom_urls(imp: Imported, option: str, value: str) -> None:
    urls = [u if "://" in u else f"http://{u}" for u in re.split(r"[;,]\s*", value) if u.strip()]
    imp.set(option, "update", "custom_urls", urls)


def _sensor_name(imp: Imported, option: str, value: str) -> None:
    if value in ("$HOSTNAME", "${HOSTNAME}"):
        imp.na(option, "the default: an empty [sensor] name is this machine's host name")
    else:
        name = value.replace("${HOSTNAME}", socket.gethostname()).replace("$HOSTNAME", socket.gethostname())
        imp.set(option, "sensor", "name", name, "$HOSTNAME expanded now" if name != value else "")


def _update_period(imp: Imported, option: str, value: str) -> None:
    if not value.isdigit():
        imp.unsupported(option, f"{value!r} is not a number of seconds")
        return
    imp.set(option, "update", "period", value)
    imp.set(option, "update", "sensor_updates", int(value) > 0, "Maltrail's sensor updates its trails itself")
    if "trails" not in imp.tables["sensor"]:
        imp.set(option, "sensor", "trails", "/var/lib/maltrail/trails.mtidx", "the index the update writes")


def _disabled_heuristics(imp: Imported, option: str, value: str) -> None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in HEURISTIC_NAMES]
    if unknown:
        imp.unsupported(option, f"heuristics not known here: {', '.join(unknown)} "
                        f"(known: {', '.join(HEURISTIC_NAMES)})")
    if [n for n in names if n in HEURISTIC_NAMES]:
        imp.set(option, "sensor", "disabled_heuristics", [n for n in names if n in HEURISTIC_NAMES])


def _monitor_interface(imp: Imported, option: str, value: str) -> None:
    if "," in value:
        imp.unsupported(option, f"{value!r}: one interface (or any) per sensor here; run one sensor per "
                        "interface or capture on any")
    else:
        imp.set(option, "sensor", "interface", value)


def _server_output(kind: str, note: str) -> Callable[[Imported, str, str], None]:
    def apply(imp: Imported, option: str, value: str) -> None:
        for endpoint in _endpoints(value):
            address = _host_port(endpoint)
            if address is None:
                imp.unsupported(option, f"{endpoint!r} is not HOST:PORT (a scoped IPv6 address cannot be used)")
            else:
                imp.output(option, {"type": kind, "address": address, "protocol": "udp"}, note)
    return apply


def _alert_webhook(imp: Imported, options: dict[str, Any]) -> None:
    table: dict[str, Any] = {"type": "webhook", "url": str(options["ALERT_WEBHOOK_URL"])}
    severity = str(options.get("ALERT_SEVERITY", "high")).lower()
    if severity in ("low", "medium", "high"):
        table["min_severity"] = severity
    throttle = str(options.get("ALERT_THROTTLE", "300"))
    if throttle.isdigit():
        table["throttle_seconds"] = int(throttle)
    imp.output("ALERT_WEBHOOK_URL", table, "with ALERT_SEVERITY and ALERT_THROTTLE; sent by the sensor")
    for name in ("ALERT_SEVERITY", "ALERT_THROTTLE"):
        if name in options:
            imp.report.append(("mapped", name, "into the webhook [[output]] (above)"))
    if "ALERT_FORMAT" in options:
        imp.unsupported("ALERT_FORMAT", "Maltrail's format string is not carried over: set the webhook's template "
                        "($severity $trail $info $src_ip ...)")


def _simple(section: str, key: str, kind: str = "str") -> Callable[[Imported, str, str], None]:
    def apply(imp: Imported, option: str, value: str) -> None:
        if kind == "bool":
            imp.set(option, section, key, _bool(value))
        elif kind == "path":
            imp.set(option, section, key, _path(imp, value))
        elif kind == "paths":
            imp.set(option, section, key, [_path(imp, value)])
        elif kind == "float":
            try:
                imp.set(option, section, key, float(value))
            except ValueError:
                imp.unsupported(option, f"{value!r} is not a number")
        else:
            imp.set(option, section, key, _expand(value))
    return apply


def _ranged(section: str, key: str, lo: int, hi: int) -> Callable[[Imported, str, str], None]:
    return lambda imp, option, value: _int(imp, option, value.split(".")[0], section, key, lo, hi)


N_A = {
    "DISABLE_CPU_AFFINITY": "no schedtool pinning; the kernel schedules the workers",
    "DISABLE_RIPE_LOOKUPS": "this server makes no outbound lookups at all",
    "MAX_REQUEST_THREADS": "the server is asynchronous; no thread per request",
    "FAIL2BAN_ALLOWLIST": "GET /api/blocklist is reached with bearer tokens (maltrail token add NAME --scope "
                          "blocklist), not by client address; [server] blocklist_allowlist lists addresses never "
                          "emitted",
    "BLACKLIST_ALLOWLIST": "as FAIL2BAN_ALLOWLIST: bearer tokens instead of client addresses",
    "USE_FAST_PREFILTER": "the workers always parse TLS and QUIC handshakes (SNI) in batches",
    "FAST_FLOW_CUTOFF": "no per-flow prefilter",
    "FAST_ADMIT_LEVEL": "no load-shedding tiers: a full ring drops whole batches and counts them",
    "FAST_ADMIT_ADAPTIVE": "no load-shedding tiers",
    "CAPTURE_FANOUT": "one capture process feeds every worker's ring (flows hash to workers)",
    "CAPTURE_FANOUT_MODE": "no PACKET_FANOUT",
    "CAPTURE_FANOUT_DEFRAG": "no PACKET_FANOUT",
    "CAPTURE_FANOUT_GROUP": "no PACKET_FANOUT",
    "CAPTURE_WORKERS": "one capture process",
    "CAPTURE_TIMEOUT": "libpcap is polled without blocking",
    "CAPTURE_IMMEDIATE": "libpcap is polled without blocking",
    "USE_CAPTURE_AFFINITY": "flows always hash to workers",
    "USE_CONDENSED_STORAGE": "events are indexed by the server (LOG_DIR/.webui)",
    "EVENT_THROTTLE_MODE": "one throttle: identical events within a second collapse and are counted",
    "EVENT_THROTTLE_WINDOW": "see EVENT_THROTTLE_MODE",
    "EVENT_THROTTLE_BURST": "see EVENT_THROTTLE_MODE",
    "EVENT_THROTTLE_MAX_KEYS": "see EVENT_THROTTLE_MODE",
    "DOMAIN_CACHE_ENTRIES": "no negative domain cache to size",
    "REPAIR_TRUNCATED_TRAILS": "the trail compiler validates patterns itself",
    "OFFLINE_TIMESTAMPS": "replays keep the capture's timestamps",
    "METRICS_INTERVAL": "metrics are scraped (--metrics), not printed periodically; live capture prints a "
                        "report every [sensor] report_seconds",
    "SHOW_DEBUG": "no debug switch; `maltrail status` and the metrics show the internals",
    "DISABLE_CHECK_SUDO": "no root check: capture rights are checked by `maltrail selftest`",
    "TRAILS_FILE": "the sensor maps a trail index ([sensor] trails), written by `maltrail update`, not trails.csv",
    "ALLOW_EMPTY_TRAILS": "an empty index fails `maltrail selftest`",
    "USE_SERVER_UPDATE_TRAILS": "the server does not serve /trails; share updates with `maltrail update --bundle` "
                                "and `--from-bundle`, or [update] mirror",
}
UNSUPPORTED = {
    "UDP_ADDRESS": "the server has no UDP log collector: point sensors' [[output]] type = \"maltrail\" at a "
                   "Maltrail server, or share LOG_DIR",
    "UDP_PORT": "see UDP_ADDRESS",
    "IP_ALIASES": "the dashboard shows no address aliases",
    "HEADER_LOGO": "the dashboard has no custom logo",
    "HOME_LAT": "the dashboard has no attack map",
    "HOME_LON": "the dashboard has no attack map",
    "ENABLE_MASK_CUSTOM": "custom trail names are not masked per user",
    "BLACKLIST": "rule-based /blacklist lists are not implemented; /api/blocklist lists attackers and scanners",
    "CHECK_TLS_CERTIFICATES": "no certificate SHA-1 trails",
    "UPDATE_SERVER": "trails are not pulled from a Maltrail server; use `maltrail update --from-bundle` or "
                     "[update] mirror",
    "REMOTE_SEVERITY_REGEX": "severity comes from [server] severity_rules (ordered regex rules on type, trail, "
                             "info, reference); write the equivalent rules there",
}
MAPPED: dict[str, Callable[[Imported, str, str], None]] = {
    "MAX_LIVE_STREAMS": _ranged("server", "max_live_streams", 1, 1000),
    "HUNT_TIME_BUDGET": _ranged("server", "hunt_budget_seconds", 1, 600),
    "PROCESS_COUNT": lambda imp, o, v: imp.na(o, "$CPU_CORES: size [sensor] workers with `maltrail bench` (the "
                                               "capture and the aggregator need cores too)")
    if v.strip() in ("$CPU_CORES", "${CPU_CORES}") else _ranged("sensor", "workers", 1, 64)(imp, o, v),
    "STATS_ADDRESS": _simple("sensor", "metrics"),
    "USE_FEED_UPDATES": _feeds_off,
    "DISABLED_FEEDS": _disabled_feeds,
    "IP_MINIMUM_FEEDS": _ranged("update", "ip_minimum_feeds", 1, 100),
    "DISABLED_TRAILS_INFO_REGEX": _simple("sensor", "disabled_trails_info_regex"),
    "UPDATE_PERIOD": _update_period,
    "DISABLE_TRAIL_UPDATES": lambda imp, o, v: imp.set(o, "update", "sensor_updates", not _bool(v)),
    "CUSTOM_TRAILS_URL": _custom_urls,
    "CUSTOM_TRAILS_DIR": lambda imp, o, v: imp.set(o, "sensor", "custom_trails", [_path(imp, v)]),
    "CAPTURE_BUFFER": _capture_buffer,
    "CAPTURE_BUFFER_SIZE": _capture_buffer,
    "CAPTURE_SNAPLEN": _ranged("sensor", "snaplen", 64, 262144),
    "MONITOR_INTERFACE": _monitor_interface,
    "CAPTURE_FILTER": _simple("sensor", "bpf"),
    "SENSOR_NAME": _sensor_name,
    "LOG_SERVER": _server_output("maltrail", "Maltrail's datagram to its server"),
    "SYSLOG_SERVER": _server_output("syslog", "CEF in RFC 5424 with ArcSight's extension keys, not Maltrail's "
                                              "bare CEF line"),
    "LOGSTASH_SERVER": _server_output("json", "ECS field names (source.ip, threat.indicator.*), not Maltrail's "
                                              "flat keys"),
    "USE_HEURISTICS": _simple("sensor", "use_heuristics", "bool"),
    "SCAN_WINDOW": _ranged("sensor", "scan_window", 1, 3600),
    "DISABLED_HEURISTICS": _disabled_heuristics,
    "CHECK_MISSING_HOST": _simple("sensor", "check_missing_host", "bool"),
    "CHECK_HOST_DOMAINS": _simple("sensor", "check_host_domains", "bool"),
    "USER_WHITELIST": _simple("sensor", "whitelist", "paths"),
    "USER_IGNORELIST": _simple("sensor", "ignore", "paths"),
    "IGNORE_EVENTS_REGEX": lambda imp, o, v: imp.set(o, "sensor", "ignore_events_regex", v,
                                                     "matched against the log line, not Python's repr of the event"),
    "LOG_DIR": _simple("sensor", "log_dir", "path"),
    "PROXY_ADDRESS": _simple("update", "proxy"),
    "TRAIL_RELOAD_MIN_RATIO": _simple("update", "min_ratio", "float"),
}
HANDLED_TOGETHER = {"HTTP_ADDRESS", "HTTP_PORT", "USE_SSL", "SSL_PEM", "USERS", "ALERT_WEBHOOK_URL",
                    "ALERT_SEVERITY", "ALERT_THROTTLE", "ALERT_FORMAT", "DISABLE_LOCAL_LOG_STORAGE", "FAIL2BAN_REGEX"}


def import_config(path: Path) -> Imported:
    """Translate the file; ConfigError if the result does not load (a bug: every value is checked)."""
    try:
        options = read_maltrail_conf(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    imp = Imported(path)
    if "HTTP_ADDRESS" in options or "HTTP_PORT" in options:
        _listen(imp, options)
    if "USERS" in options:
        _users(imp, "USERS", options["USERS"])
    if _bool(str(options.get("USE_SSL", "false"))):
        if options.get("SSL_PEM"):
            pem = _path(imp, str(options["SSL_PEM"]))
            imp.set("USE_SSL", "server", "tls_cert", pem, "with SSL_PEM")
            imp.set("SSL_PEM", "server", "tls_key", pem, "the same PEM holds key and certificate")
        else:
            imp.unsupported("USE_SSL", "true without SSL_PEM: no certificate to use")
    else:
        for name in ("USE_SSL", "SSL_PEM"):
            if name in options:
                imp.na(name, "TLS is off in the source (USE_SSL false)")
    if options.get("ALERT_WEBHOOK_URL"):
        _alert_webhook(imp, options)
    if "FAIL2BAN_REGEX" in options:
        if options["FAIL2BAN_REGEX"] == SHIPPED_FAIL2BAN_REGEX:
            imp.na("FAIL2BAN_REGEX", "the shipped value is what /api/blocklist applies")
        else:
            imp.unsupported("FAIL2BAN_REGEX", "/api/blocklist applies Maltrail's shipped regex only")
    for name, value in options.items():
        if name in HANDLED_TOGETHER:
            continue
        if name in MAPPED:
            if isinstance(value, list):
                imp.unsupported(name, "given as an array; a single value is expected")
            else:
                MAPPED[name](imp, name, value)
        elif name in N_A:
            imp.na(name, N_A[name])
        elif name in UNSUPPORTED:
            imp.unsupported(name, UNSUPPORTED[name])
        else:
            imp.unsupported(name, "not a Maltrail option this importer knows")
    if "DISABLE_LOCAL_LOG_STORAGE" in options:
        if not _bool(str(options["DISABLE_LOCAL_LOG_STORAGE"])):
            imp.na("DISABLE_LOCAL_LOG_STORAGE", "false: the default (the daily log is written)")
        elif imp.outputs:
            imp.set("DISABLE_LOCAL_LOG_STORAGE", "sensor", "disable_local_log", True)
        else:
            imp.unsupported("DISABLE_LOCAL_LOG_STORAGE", "true with no output to send events to would keep none")
    check(imp)
    return imp


def toml_data(imp: Imported) -> dict[str, Any]:
    data: dict[str, Any] = {k: v for k, v in imp.tables.items() if v}
    if imp.outputs:
        data["output"] = imp.outputs
    return data


def check(imp: Imported) -> None:
    data = toml_data(imp)
    where = f"translation of {imp.source}"
    sensor_config_from(data, where)
    server_config_from(data, where)
    update_config_from(data, where)


def render(imp: Imported) -> str:
    import tomli_w

    header = (f"# maltrail.toml translated from {imp.source} by `maltrail config import`.\n"
              "# Options not set here keep the defaults documented in the shipped maltrail.toml.\n\n")
    return header + tomli_w.dumps(toml_data(imp))


def report_lines(imp: Imported) -> list[str]:
    return [f"{status:<12} {option:<28} {text}" for status, option, text in imp.report]
