"""Addresses as sortable 16-byte keys, networks as key ranges, and per-user network scopes.

IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one BLOB column orders both families and a
CIDR is a `BETWEEN lo AND hi` that SQLite answers from an index. Fields that hold a comma list
(Maltrail's condensed events) have no key and are checked value by value.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"


def ip_key(text: str) -> bytes | None:
    """The 16-byte key of one address, None for anything else (lists, names, empty)."""
    try:
        return _V4_PREFIX + socket.inet_aton(text) if text.count(".") == 3 and ":" not in text else \
            socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None


class NetworkError(ValueError):
    """Not an address or CIDR."""


@dataclass(frozen=True, slots=True)
class Network:
    """An inclusive key range, with the text it was written as."""

    text: str
    lo: bytes
    hi: bytes

    def contains_key(self, key: bytes | None) -> bool:
        return key is not None and self.lo <= key <= self.hi


def parse_network(text: str) -> Network:
    """`10.0.0.0/8`, `10.1.2.3`, `2001:db8::/32`; host bits are masked off like Maltrail does."""
    text = text.strip()
    if not text or len(text) > 64:
        raise NetworkError(f"{text[:64]!r} is not an address or CIDR")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise NetworkError(f"{text!r} is not an address or CIDR") from None
    if net.version == 4:
        lo = _V4_PREFIX + net.network_address.packed
        hi = _V4_PREFIX + net.broadcast_address.packed
    else:
        lo, hi = net.network_address.packed, net.broadcast_address.packed
    return Network(str(net), lo, hi)


class Scope:
    """A user's visible networks; empty means everything. An event is visible when its source or
    its destination is inside one of them."""

    def __init__(self, networks: list[Network]) -> None:
        self.networks = networks

    @classmethod
    def parse(cls, items: list[str]) -> Scope:
        return cls([parse_network(i) for i in items])

    @property
    def unrestricted(self) -> bool:
        return not self.networks

    @property
    def cache_key(self) -> str:
        return ",".join(sorted(n.text for n in self.networks))

    def texts(self) -> list[str]:
        return [n.text for n in self.networks]

    def contains_text(self, text: str) -> bool:
        """One address or a comma list of them (any inside = inside)."""
        if self.unrestricted:
            return True
        for part in text.split(",") if "," in text else (text,):
            key = ip_key(part.strip())
            if key is not None and any(n.contains_key(key) for n in self.networks):
                return True
        return False

    def sql(self, key_col: str, text_col: str | None = None) -> tuple[str, list[object]]:
        """A SQL test that the column's address is in scope: a flat OR of key ranges, which SQLite
        can answer from an index on the key. NULL for a row without a key: negate it only as
        `NOT COALESCE(test, 0)`. With `text_col`, rows without a key (comma lists) are checked by
        the `mt_in_scope` function."""
        if self.unrestricted:
            return "1", []
        parts = [f"{key_col} BETWEEN ? AND ?" for _ in self.networks]
        params: list[object] = [v for n in self.networks for v in (n.lo, n.hi)]
        if text_col:
            parts.append(f"({key_col} IS NULL AND instr({text_col}, ',') > 0 AND mt_in_scope({text_col}, ?))")
            params.append(self.cache_key)
        return f"({' OR '.join(parts)})", params


_SCOPES: dict[str, Scope] = {}


def in_scope_text(text: str | None, scope_key: str) -> int:
    """SQLite function `mt_in_scope(text, scope)` for comma-list fields."""
    if not text:
        return 0
    scope = _SCOPES.get(scope_key)
    if scope is None:
        if len(_SCOPES) > 1024:
            _SCOPES.clear()
        scope = _SCOPES[scope_key] = Scope.parse(scope_key.split(",")) if scope_key else Scope([])
    return int(scope.contains_text(text))


_TRAIL_HOST = re.compile(r"\[?([0-9A-Fa-f:.]+)\]?(?::\d+)?(?:/.*)?\Z")


def trail_in_range(trail: str | None, lo: bytes, hi: bytes) -> int:
    """SQLite function `mt_trail_in_range(trail, lo, hi)`: an address trail (with a port or a
    path: `1.2.3.4:80`, `[2001:db8::1]/x`) inside [lo, hi]."""
    m = _TRAIL_HOST.match(trail or "")
    key = ip_key(m.group(1)) if m else None
    return int(key is not None and lo <= key <= hi)


def in_range_text(text: str | None, lo: bytes, hi: bytes) -> int:
    """SQLite function `mt_in_range(text, lo, hi)`: any address of a comma list inside [lo, hi]."""
    if not text:
        return 0
    for part in text.split(","):
        key = ip_key(part.strip())
        if key is not None and lo <= key <= hi:
            return 1
    return 0
