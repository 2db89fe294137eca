"""`GET /api/blocklist`: addresses a firewall or fail2ban should block, for automation.

Maltrail's `/fail2ban` and `/blacklist` idea: the sources of events that name the source itself
(a listed attacker or scanner, a scan heuristic: the trail is the source address) or whose info
is attacker behaviour (Maltrail's FAIL2BAN_REGEX), since a time and at or above a severity. Every
address inside `[server] blocklist_allowlist` is left out whatever the events say. Reached with a
bearer token holding the `blocklist` scope (webui/tokens.py), never with a browser session.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from typing import Any

from aiohttp import web

from engine.config import ConfigError, parse_period
from engine.severity import LEVELS, NAMES

# Maltrail's FAIL2BAN_REGEX (shipped value): events whose info shows the source attacking.
ATTACK_INFO = re.compile(r"attacker|reputation|potential[^\"]*(web scan|directory traversal|injection|remote code|"
                         r"iot-malware download)|spammer|mass scanner", re.IGNORECASE)
DEFAULT_SINCE = "24h"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_since(text: str, now: float) -> float:
    """Epoch seconds, an ISO date or date-time (UTC unless it says otherwise), or a duration back
    from now ("24h", "7d", "30m", "3600")."""
    text = text.strip()
    if re.fullmatch(r"\d{9,}(\.\d+)?", text):
        return float(text)
    try:
        return now - parse_period(text)
    except ConfigError:
        pass
    try:
        return _iso(text)
    except ValueError:
        raise ValueError(f"since: {text!r} is not a time (epoch seconds, ISO date or date-time, or a "
                         "duration such as 24h)") from None


def _iso(text: str) -> float:
    when = dt.datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowlist: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in allowlist)


def _names_source(src: str, trail: str) -> bool:
    return trail == src or trail.startswith((f"{src}:", f"[{src}]:"))


def blocklist_rows(conn: Any, since: float, min_level: int, allowlist: tuple[Network, ...]) -> list[dict[str, Any]]:
    """One row per address to block: last seen, events, highest severity, reasons (infos)."""
    day = time.strftime("%Y-%m-%d", time.localtime(since - 86400))  # days are local: one day of margin
    rows: dict[str, dict[str, Any]] = {}
    for src, trail, info, sev, when in conn.execute(
            "SELECT src_ip, trail, info, sev, time FROM events WHERE day >= ? AND time >= ? AND sev >= ?",
            (day, since, min_level)):
        if not src or not (_names_source(src, trail) or ATTACK_INFO.search(info or "")):
            continue
        try:
            address = ipaddress.ip_address(src)
        except ValueError:  # several addresses (X-Forwarded-For) or none
            continue
        if allowed(address, allowlist):
            continue
        row = rows.setdefault(address.compressed, {"ip": address.compressed, "last_seen": when, "events": 0,
                                                   "severity": sev, "reasons": set()})
        row["last_seen"] = max(row["last_seen"], when)
        row["events"] += 1
        row["severity"] = max(row["severity"], sev)
        row["reasons"].add(info)
    out = []
    for key in sorted(rows, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a))):
        row = rows[key]
        out.append({**row, "severity": NAMES[row["severity"]], "reasons": sorted(row["reasons"])[:20]})
    return out


async def blocklist(request: web.Request) -> web.Response:
    from webui.app import ctx_of

    ctx = ctx_of(request)
    now = time.time()
    try:
        since = parse_since(request.query.get("since", DEFAULT_SINCE), now)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    severity = request.query.get("severity", "low")
    fmt = request.query.get("format", "plain")
    if severity not in LEVELS:
        return web.json_response({"error": "severity: one of low, medium, high"}, status=400)
    if fmt not in ("plain", "json"):
        return web.json_response({"error": "format: plain or json"}, status=400)

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return blocklist_rows(conn, since, LEVELS[severity], ctx.settings.blocklist_allowlist)

    rows = await ctx.read(run)
    if fmt == "plain":
        return web.Response(text="".join(f"{r['ip']}\n" for r in rows), content_type="text/plain")
    return web.json_response({"since": since, "severity": severity, "addresses": rows})
