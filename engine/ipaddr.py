"""Address text as Maltrail writes and reads it.

Trail keys and event lines must agree with Maltrail byte for byte, so IPv6 is rendered with its
own rule (the first longest run of whole zero groups, single runs included, `::` -> `::0`) rather
than RFC 5952. Matching itself is done on binary addresses, so any valid spelling of a key works.
"""

from __future__ import annotations

import ipaddress
import re
import socket

_V4_MAX = 0xFFFFFFFF


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def parse_ip4(text: str) -> int | None:
    """A strict dotted quad (4 decimal octets <= 255) as an int, else None."""
    if _QUAD.fullmatch(text):
        return int.from_bytes(socket.inet_aton(text), "big")
    return _parse_ip4_leading_zeros(text)


def _parse_ip4_leading_zeros(text: str) -> int | None:
    """Octets like `010` are decimal to Maltrail (inet_aton would read them as octal)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3:
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


def parse_ip6(text: str) -> bytes | None:
    """16 packed bytes of an IPv6 address, or None (IPv4 and scoped forms are refused)."""
    if ":" not in text or "%" in text:
        return None
    try:
        return socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        return None


def ip4_text(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def ip6_text(packed: bytes) -> str:
    """Maltrail's `inet_ntoa6` rendering of 16 packed bytes."""
    groups = [packed[i : i + 2].hex() for i in range(0, 16, 2)]
    best_start, best_len = -1, 0
    i = 0
    while i < 7:  # only groups followed by ':' can be part of the replaced run
        if groups[i] == "0000":
            j = i
            while j < 7 and groups[j] == "0000":
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    parts = [g.lstrip("0") or "0" for g in groups]
    if not best_len:
        return ":".join(parts)
    return ":".join(parts[:best_start]) + "::" + ":".join(parts[best_start + best_len :])


Addr = int | bytes | str  # IPv4 integer, IPv6 packed bytes, or text


def addr_text(addr: Addr) -> str:
    """An address as workers hand it over (IPv4 integer, IPv6 packed bytes, or text), as text."""
    if isinstance(addr, int):
        return ip4_text(addr)
    if isinstance(addr, bytes):
        return ip6_text(addr)
    return addr


def ip4_private(ip: int, link_local: bool = False) -> bool:
    """10/8, 127/8, 172.16/12, 192.168/16 and, when asked, 169.254/16: the private-address rules
    of the heuristics, on an IPv4 integer (no text to build)."""
    return ip >> 24 in (10, 127) or ip >> 20 == 0xAC1 or ip >> 16 == 0xC0A8 or (link_local and ip >> 16 == 0xA9FE)


def addr_port_text(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_ip_port(text: str) -> tuple[int | bytes, int] | None:
    """`1.2.3.4:80` -> (int, port); `[v6]:443` -> (16 bytes, port); else None."""
    if text.startswith("["):
        end = text.find("]:")
        if end < 0:
            return None
        packed = parse_ip6(text[1:end])
        port_text = text[end + 2 :]
        if packed is None or not port_text.isdigit() or int(port_text) > 65535:
            return None
        return packed, int(port_text)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        return None
    ip = parse_ip4(host)
    return None if ip is None else (ip, int(port_text))


def parse_cidr(text: str) -> tuple[int, int, int] | None:
    """`a.b.c.d/n` or `v6/n` -> (version, first, last) as ints; None when not a network."""
    if "/" not in text:
        return None
    addr, _, bits = text.partition("/")
    if not bits.isdigit():
        return None
    try:
        net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    except ValueError:
        return None
    return net.version, int(net.network_address), int(net.broadcast_address)
