"""Maltrail whitelist files (`data/whitelist.txt` + `USER_WHITELIST`) and the two whitelist tests.

File format (Maltrail `read_whitelist`): one entry per line, surrounding whitespace stripped, blank
lines and lines starting with `#` skipped (no inline comments). A line that is exactly an IPv4 CIDR
`a.b.c.d/n` becomes an address range (an unaligned prefix is masked to its network; Maltrail's
test would never match it); every other line is an exact entry, kept as written (not lower-cased).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path

from engine.resources import data_file, read_texts

_CIDR4 = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)/([0-9]+)")
_DOTTED_QUAD = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_OUTSIDE_DNS_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_ADDRESS_END = 0xFFFFFFFF


class WhitelistError(Exception):
    """A whitelist file that cannot be used; the message is one line naming the file."""


def _quad_to_int(octets: Iterable[str]) -> int | None:
    """Dotted-quad octets to a 32-bit integer; None when an octet exceeds 255 (not an address)."""
    value = 0
    for octet in octets:
        number = int(octet)
        if number > 255:
            return None
        value = (value << 8) | number
    return value


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges covering the same addresses."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class Whitelist:
    """Exact whitelist entries plus inclusive IPv4 ranges from the CIDR lines.

    ``ranges4`` is kept sorted and merged so that a lookup is one binary search (the IP test runs
    for every trail candidate at load and for every event).
    """

    def __init__(self, exact: set[str] | None = None, ranges4: Iterable[tuple[int, int]] = ()) -> None:
        self.exact: set[str] = exact if exact is not None else set()
        self.ranges4: list[tuple[int, int]] = merge_ranges(ranges4)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> Whitelist:
        """Merge several whitelist files (e.g. the bundled one and the user's); a missing file is an error."""
        return cls.from_texts(read_texts(paths, "whitelist file", WhitelistError))

    @classmethod
    def default(cls) -> Whitelist:
        """The bundled `engine/data/whitelist.txt` (read as a package resource so it works installed)."""
        return cls.from_texts([data_file("whitelist.txt").read_text(encoding="utf-8")])

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Whitelist:
        """Parse whitelist contents already in memory."""
        exact: set[str] = set()
        ranges: list[tuple[int, int]] = []
        for text in texts:
            for raw in text.split("\n"):
                line = raw.strip()
                if not line or line[0] == "#":
                    continue
                cidr = _CIDR4.fullmatch(line)
                if cidr is not None:
                    start = _quad_to_int(cidr.group(1, 2, 3, 4))
                    bits = int(cidr.group(5))
                    if start is not None and bits <= 32:
                        host_mask = (1 << (32 - bits)) - 1
                        start &= ~host_mask
                        ranges.append((start, start | host_mask))
                        continue
                exact.add(line)
        return cls(exact, ranges)

    def is_ip_whitelisted(self, text: str) -> bool:
        """Maltrail `check_whitelisted`: an exact entry, or a bare dotted quad inside a CIDR range.

        Only a bare quad is range-tested, so `10.0.0.1.evil.com` cannot ride on a whitelisted range.
        """
        if text in self.exact:
            return True
        if not self.ranges4:
            return False
        quad = _DOTTED_QUAD.fullmatch(text)
        if quad is None:
            return False
        value = _quad_to_int(quad.groups())
        if value is None:
            return False
        index = bisect_right(self.ranges4, (value, _ADDRESS_END)) - 1
        return index >= 0 and value <= self.ranges4[index][1]

    def is_domain_whitelisted(self, name: str) -> bool:
        """Maltrail `_check_domain_whitelisted`: cut at the first non-DNS character, then walk parents.

        `a.b.c` is tested as `a.b.c`, `b.c`, `c`, so entries such as `local` cover whole suffixes.
        """
        cut = _OUTSIDE_DNS_CHARS.search(name)
        if cut is not None:
            name = name[: cut.start()]
        name = name.lower()
        exact = self.exact
        while True:
            if name in exact:
                return True
            dot = name.find(".")
            if dot < 0:
                return False
            name = name[dot + 1 :]
