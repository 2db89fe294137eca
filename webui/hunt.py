"""Retro hunt: one indicator over every retained daily log, newest day first, within a time budget.

It reads the log files themselves (the source of truth, including days the index no longer has).
A literal indicator is a case-insensitive substring of the line; an address or CIDR matches the
source, destination or trail address of an event. The budget is checked after each 4 MiB chunk
(so a hunt always makes some progress); when it is spent, the day being read is reported with
`complete: false` and the hits found so far, the days never reached are listed as such, and
nothing partial is ever merged into a complete count.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.severity import NAMES, Severity
from webui.logparse import ParsedEvent, parse_line
from webui.netaddr import Network, NetworkError, Scope, ip_key, parse_network
from webui.queries import port_value
from webui.store import DAY_FILE

MAX_SAMPLES = 200
MIN_LITERAL = 3
MAX_INDICATOR = 256
CHUNK = 4 << 20
_TRAIL_HOST = re.compile(r"\[?([0-9A-Fa-f:.]+)\]?(?::\d+)?(?:/.*)?\Z")


class HuntError(ValueError):
    """Unusable indicator."""


def _prefilter(net: Network, text: str) -> bytes | None:
    """Bytes every matching line must contain (the fixed leading octets of an IPv4 network)."""
    if ":" in text:
        return b":"
    addr, _, bits = text.partition("/")
    prefix = int(bits) if bits else 32
    octets = addr.split(".")[: prefix // 8]
    if not octets:
        return None
    return (".".join(octets) + ("." if len(octets) < 4 else "")).encode()


def _trail_address(trail: str) -> bytes | None:
    m = _TRAIL_HOST.match(trail)
    return ip_key(m.group(1)) if m else None


def _net_match(ev: ParsedEvent, net: Network) -> bool:
    for text in (ev.src_ip, ev.dst_ip):
        for part in text.split(",") if "," in text else (text,):
            if net.contains_key(ip_key(part.strip())):
                return True
    return net.contains_key(_trail_address(ev.trail))


def _visible(ev: ParsedEvent, scope: Scope) -> bool:
    return scope.unrestricted or scope.contains_text(ev.src_ip) or scope.contains_text(ev.dst_ip)


def _event_json(ev: ParsedEvent, severity: Severity) -> dict[str, Any]:
    return {"id": None, "time": ev.time, "sensor": ev.sensor, "src_ip": ev.src_ip, "src_port": port_value(ev.src_port),
            "dst_ip": ev.dst_ip, "dst_port": port_value(ev.dst_port), "proto": ev.proto, "type": ev.type,
            "trail": ev.trail, "info": ev.info, "reference": ev.reference,
            "severity": NAMES[severity.of(ev.type, ev.trail, ev.info, ev.reference)]}


def check_indicator(indicator: str) -> Network | None:
    """The network of an address / CIDR indicator, None for text; HuntError when unusable."""
    if "\n" in indicator or "\r" in indicator or "\x00" in indicator or len(indicator) > MAX_INDICATOR:
        raise HuntError("must be one line of at most 256 characters")
    try:
        return parse_network(indicator)
    except NetworkError:
        pass
    if len(indicator) < MIN_LITERAL:
        raise HuntError(f"give an address, a CIDR or at least {MIN_LITERAL} characters")
    return None


def hunt(log_dir: Path, indicator: str, budget: float, scope: Scope, severity: Severity,
         day_from: str | None = None, day_to: str | None = None,
         stopping: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """`stopping()` true (the server is shutting down) ends the hunt like a spent budget."""
    indicator = indicator.strip()
    net = check_indicator(indicator)
    needle = _prefilter(net, net.text) if net else indicator.lower().encode()
    deadline = time.monotonic() + budget
    started = time.monotonic()

    def expired() -> bool:
        return stopping() or time.monotonic() >= deadline

    try:
        names = sorted((e.name for e in os.scandir(log_dir) if DAY_FILE.match(e.name)
                        and e.is_file(follow_symlinks=False)), reverse=True)  # as the index does
    except OSError:
        names = []
    dates = [n[:10] for n in names if (day_from is None or n[:10] >= day_from) and (day_to is None or n[:10] <= day_to)]
    days: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    unscanned: list[str] = []
    for date in dates:
        if days and expired():  # the first day always starts: some progress
            unscanned.append(date)
            continue
        hits, complete = _scan_day(log_dir / f"{date}.log", net, needle, scope, severity, expired, samples)
        days.append({"date": date, "hits": hits, "complete": complete})
    return {"indicator": indicator, "kind": "network" if net else "text",
            "complete": not unscanned and all(d["complete"] for d in days), "days": days,
            "unscanned_days": unscanned, "events": samples, "capped": len(samples) >= MAX_SAMPLES,
            "elapsed": round(time.monotonic() - started, 3)}


def _scan_day(path: Path, net: Network | None, needle: bytes | None, scope: Scope, severity: Severity,
              expired: Callable[[], bool], samples: list[dict[str, Any]]) -> tuple[int, bool]:
    hits = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError:
        return 0, True
    with f:
        size = os.fstat(f.fileno()).st_size
        rest = b""
        while True:
            data = f.read(CHUNK)
            if not data:
                return hits, True
            data = rest + data
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            block = data[:end]
            for line in _candidate_lines(block, needle, net is None):
                ev = parse_line(line.decode("utf-8", "replace"))
                if ev is None or (net is not None and not _net_match(ev, net)) or not _visible(ev, scope):
                    continue
                hits += 1
                if len(samples) < MAX_SAMPLES:
                    samples.append(_event_json(ev, severity))
            if expired():  # checked after each chunk: every started day progresses
                return hits, f.tell() >= size and not rest


def _candidate_lines(block: bytes, needle: bytes | None, lower: bool) -> list[bytes]:
    """Lines of `block` that contain the needle (all lines without one)."""
    if needle is None:
        return block.split(b"\n")[:-1]
    hay = block.lower() if lower else block
    out = []
    pos = hay.find(needle)
    while pos >= 0:
        start = block.rfind(b"\n", 0, pos) + 1
        end = block.find(b"\n", pos)
        out.append(block[start:end])
        pos = hay.find(needle, end)
    return out
