"""What each output sends for one event: CEF in RFC 5424 syslog, ECS JSON, Maltrail's datagram,
a webhook body.

Pure functions of the event, so the formats are tested without sockets. Severity comes from
`engine.severity`, the rule set the dashboard uses.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import socket
import struct
import time
from string import Template
from typing import Any

from engine.eventlog import Event, format_event
from engine.severity import HIGH, LOW, MEDIUM, NAMES
from engine.version import package_version

# CEF severity is 0..10 (ArcSight: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high).
CEF_SEVERITY = {LOW: 3, MEDIUM: 5, HIGH: 8}
# RFC 5424 severity: notice, warning, critical.
SYSLOG_SEVERITY = {LOW: 5, MEDIUM: 4, HIGH: 2}
# ECS event.severity is numeric; Elastic's risk scale (low 21, medium 47, high 73).
ECS_SEVERITY = {LOW: 21, MEDIUM: 47, HIGH: 73}
# Maltrail's event type -> ECS threat.indicator.type (ECS allowed values).
INDICATOR_TYPES = {"DNS": "domain-name", "HTTP": "domain-name", "URL": "url", "PATH": "url", "UA": "software",
                   "PORT": "port", "CERT": "x509-certificate"}
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _packed(text: str) -> bytes | None:
    """The address in network byte order (4 or 16 bytes), None if `text` is not one address."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, text)
        except (OSError, ValueError):
            pass
    return None


def _ip(text: str) -> int:
    """4 or 6 for an IP address, 0 for anything else (several X-Forwarded-For addresses)."""
    packed = _packed(text)
    return 0 if packed is None else 4 if len(packed) == 4 else 6


@functools.lru_cache(maxsize=4096)
def _utc_second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def iso_time(sec: int, usec: int) -> str:
    return f"{_utc_second(sec)}.{usec:06d}Z"


def community_id(event: Event) -> str | None:
    """Community ID v1 (seed 0) of the event's flow, as Zeek and Suricata compute it; None when the
    event has no single flow (several sources, no ports, other protocols). Computed here rather
    than with the `communityid` package, whose validation costs about 90 µs an event (the tests
    compare the two)."""
    src, sport, dst, dport, proto = event[2], event[3], event[4], event[5], event[6]
    number = PROTOCOL_NUMBERS.get(proto)
    if number is None or not sport or not dport:
        return None
    a, b = _packed(src), _packed(dst)
    if a is None or b is None:
        return None
    if (a, sport) > (b, dport):  # the smaller endpoint first, so both directions hash alike
        a, b, sport, dport = b, a, dport, sport
    data = b"\0\0" + a + b + struct.pack("!BBHH", number, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def cef_message(event: Event, sensor: str, level: int) -> str:
    """ArcSight CEF:0 with standard extension keys (rt, src/dst or c6a2/c6a3 for IPv6, spt, dpt,
    proto, cat, msg, dvchost) and the trail and reference as labelled custom strings."""
    sec, usec, src, sport, dst, dport, proto, kind, trail, info, reference = event
    ext: list[tuple[str, str]] = [("rt", str(sec * 1000 + usec // 1000))]
    for value, v4, v6, label in ((src, "src", "c6a2", "cs3"), (dst, "dst", "c6a3", "cs4")):
        ip = _ip(value)
        if not ip:  # several addresses (X-Forwarded-For): kept as text
            ext += [(f"{label}Label", f"{v4}Addresses"), (label, value)]
        else:
            ext += [(v4 if ip == 4 else v6, value)]
            if ip == 6:
                ext.append((f"{v6}Label", "Source IPv6 Address" if v4 == "src" else "Destination IPv6 Address"))
    if sport:
        ext.append(("spt", str(sport)))
    if dport:
        ext.append(("dpt", str(dport)))
    ext += [("proto", proto), ("cat", kind), ("msg", info), ("cs1Label", "trail"), ("cs1", trail),
            ("cs2Label", "reference"), ("cs2", reference), ("dvchost", sensor)]
    extension = " ".join(f"{k}={_cef_value(str(v))}" for k, v in ext)
    header = "|".join(_cef_header(x) for x in ("Maltrail", "maltrail-ng", package_version(), f"maltrail:{kind}", info,
                                                 str(CEF_SEVERITY[level])))
    return f"CEF:0|{header}|{extension}"


def syslog_frame(message: str, event: Event, level: int, facility: int, hostname: str, octet_counting: bool
                 ) -> bytes:
    """RFC 5424 message (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`); on TCP and TLS with
    RFC 6587 octet counting (`LEN SP MSG`)."""
    pri = facility * 8 + SYSLOG_SEVERITY[level]
    host = (hostname or "-").replace(" ", "_")[:255]
    data = f"<{pri}>1 {iso_time(event[0], event[1])} {host} maltrail - event - {message}".encode()
    return b"%d %s" % (len(data), data) if octet_counting else data


def ecs_document(event: Event, sensor: str, level: int, line: str = "") -> dict[str, Any]:
    """The event with Elastic Common Schema field names (nested objects, as Filebeat ships them);
    `message` is its log line (`line`, when the caller has it already)."""
    sec, usec, src, sport, dst, dport, proto, kind, trail, info, reference = event
    indicator: dict[str, Any] = {"name": trail, "description": info, "provider": reference,
                                 "type": INDICATOR_TYPES.get(kind, "")}
    if kind in ("IP", "IPORT"):
        host = trail.rsplit(":", 1)[0].strip("[]") if kind == "IPORT" else trail
        ip = _ip(host)
        indicator["type"] = f"ipv{ip}-addr" if ip else "ipv4-addr"
        indicator["ip"] = host
        if kind == "IPORT":
            indicator["port"] = int(trail.rsplit(":", 1)[1]) if trail.rsplit(":", 1)[-1].isdigit() else None
    elif kind in ("URL", "PATH"):
        indicator["url"] = {"original": trail}
    elif kind in ("DNS", "HTTP"):
        indicator["url"] = {"domain": trail}
    if not indicator["type"]:
        del indicator["type"]
    network: dict[str, Any] = {"transport": proto.lower()}
    flow = community_id(event)
    if flow:
        network["community_id"] = flow
    source: dict[str, Any] = {"ip": src} if _ip(src) else {"address": src}
    destination: dict[str, Any] = {"ip": dst} if _ip(dst) else {"address": dst}
    if sport:
        source["port"] = sport
    if dport:
        destination["port"] = dport
    return {
        "@timestamp": iso_time(sec, usec),
        "event": {"kind": "alert", "category": ["network", "threat"], "type": ["indicator"], "module": "maltrail",
                  "dataset": "maltrail.event", "severity": ECS_SEVERITY[level]},
        "source": source,
        "destination": destination,
        "network": network,
        "threat": {"indicator": indicator},
        "rule": {"name": info, "category": kind, "reference": reference},
        "observer": {"name": sensor, "type": "ids", "vendor": "maltrail-ng", "version": package_version()},
        "log": {"level": NAMES[level]},
        "message": line or format_event(event, sensor).rstrip("\n"),
    }


def ecs_line(event: Event, sensor: str, level: int, line: str = "") -> bytes:
    return json.dumps(ecs_document(event, sensor, level, line), separators=(",", ":")).encode() + b"\n"


def maltrail_datagram(sec: int, line: bytes) -> bytes:
    """Maltrail's LOG_SERVER datagram: `<sec> <log line>\\n` (`line` without its newline)."""
    return b"%d %s\n" % (sec, line)


def template_fields(event: Event, sensor: str, level: int) -> dict[str, Any]:
    sec, usec, src, sport, dst, dport, proto, kind, trail, info, reference = event
    return {"time": iso_time(sec, usec), "sensor": sensor, "severity": NAMES[level], "src_ip": src,
            "src_port": sport or "-", "dst_ip": dst, "dst_port": dport or "-", "proto": proto, "type": kind,
            "trail": trail, "info": info, "reference": reference}


def webhook_body(event: Event, sensor: str, level: int, template: str) -> bytes:
    """JSON of the event's fields; with a template (`$severity $trail ...`, string.Template), a
    Slack/Teams-style `{"text": ...}`."""
    values = template_fields(event, sensor, level)
    body: dict[str, Any] = {"text": Template(template).safe_substitute(values)} if template else values
    return json.dumps(body).encode()
