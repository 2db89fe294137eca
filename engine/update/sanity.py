"""Sanity filters on fetched trails: what must never become a trail, and the counts of what was dropped.

Maltrail's last updater step drops every trail that starts with an IPv4 address (followed by ``:``,
``/``, a space or the end) inside its bogon or CDN ranges, unless the info says parking or sinkhole.
Fetched rows (feeds, custom URLs) are also screened one source at a time, so ``--status`` can say
how many rows of each the whitelist, those ranges and the public-suffix rule removed: a feed that
lists ``co.uk`` or ``github.io`` must not turn every site under it into a threat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
from publicsuffixlist import PublicSuffixList

from engine.index.ip4columns import ip4_columns
from engine.index.schema import K_IP4
from engine.resources import data_file
from engine.trails.sources import BAD_TRAIL_PREFIXES, Trails
from engine.trails.whitelist import Whitelist

_CIDR4_LINE = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})/(\d{1,2})")
_KEEP_INFO = ("parking", "sinkhole")
_HEAD_WIDTH = len("255.255.255.255") + 1  # the address and the character after it


class AddressRanges:
    """Disjoint inclusive IPv4 ranges as sorted numpy arrays: one `searchsorted` tests many addresses."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
            else:
                merged.append((first, last))
        self.first = np.array([r[0] for r in merged], dtype=np.uint32)
        self.last = np.array([r[1] for r in merged], dtype=np.uint32)

    @classmethod
    def from_texts(cls, texts: list[str]) -> AddressRanges:
        """CIDR lines of Maltrail's ``bogon_ranges.txt`` / ``cdn_ranges.txt`` (comments and IPv6 skipped)."""
        ranges = []
        for text in texts:
            for line in text.splitlines():
                match = _CIDR4_LINE.fullmatch(line.strip())
                if match is None:
                    continue
                octets = [int(o) for o in match.group(1).split(".")]
                bits = int(match.group(2))
                if max(octets) > 255 or bits > 32:
                    continue
                start = int.from_bytes(bytes(octets), "big") & ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF
                ranges.append((start, start | ((1 << (32 - bits)) - 1)))
        return cls(ranges)

    def contains(self, addresses: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these uint32 addresses fall in a range."""
        if not len(self.first):
            return np.zeros(len(addresses), dtype=bool)
        at = np.searchsorted(self.first, addresses, side="right") - 1
        return (at >= 0) & (addresses <= self.last[np.maximum(at, 0)])


@cache
def drop_ranges() -> AddressRanges:
    """The bundled bogon and CDN ranges (Maltrail's ``data/``, shipped in ``engine/data``)."""
    texts = [data_file(name).read_text(encoding="utf-8") for name in ("bogon_ranges.txt", "cdn_ranges.txt")]
    return AddressRanges.from_texts(texts)


@cache
def public_suffixes() -> PublicSuffixList:
    """The Public Suffix List as packaged (ICANN and private sections; no network at run time)."""
    return PublicSuffixList()


def _leading_ip4(keys: list[str]) -> tuple[list[str], np.ndarray]:
    """The keys that start with an IPv4 address (then ``:``, ``/``, a space or the end), and those
    addresses. Runs over every digit-led key of the static set (~400 k): each key is cut at its first
    ``:``, ``/`` or space and parsed by the index builder's column parser."""
    if not keys:
        return [], np.zeros(0, dtype=np.uint32)
    encoded = [key.encode("utf-8", "surrogateescape") for key in keys]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    arena = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    width = _HEAD_WIDTH
    padded = np.concatenate([arena, np.full(width, ord("/"), dtype=np.uint8)])
    chars = padded[starts[:, None] + np.arange(width)]
    cut = (chars == ord("/")) | (chars == ord(" ")) | (chars == ord(":"))
    lengths = np.minimum(lengths, np.where(cut.any(axis=1), cut.argmax(axis=1), width + 1))
    kind, value = ip4_columns(arena, starts, lengths)
    found = np.flatnonzero(kind == K_IP4)
    return [keys[i] for i in found.tolist()], value[found].astype(np.uint32)


def drop_in_ranges(trails: Trails, ranges: AddressRanges) -> int:
    """Maltrail's bogon/CDN step over a whole trail set; returns the number of trails dropped.

    Maltrail buckets its ranges by first octet, so its ``224.0.0.0/3`` only covers ``224.*``; here a
    range covers what its prefix says (docs/DIFFERENCES.md)."""
    keys, addresses = _leading_ip4([key for key in trails if key[:1].isdigit()])
    dropped = 0
    for key, inside in zip(keys, ranges.contains(addresses).tolist(), strict=True):
        if inside and not any(word in trails[key][0] for word in _KEEP_INFO):
            del trails[key]
            dropped += 1
    return dropped


@dataclass
class Screened:
    """A fetched source's rows after screening, with what each rule removed."""

    rows: Trails
    whitelisted: int = 0
    bogon_cdn: int = 0
    public_suffix: int = 0

    @property
    def dropped(self) -> int:
        return self.whitelisted + self.bogon_cdn + self.public_suffix


def screen(rows: Trails, whitelist: Whitelist) -> Screened:
    """Drop a fetched source's whitelisted rows, rows in bogon/CDN ranges and bare public suffixes.

    Keys are tested as Maltrail will finally store them (lower case, no leading ``www.``)."""
    out = Screened({})
    suffixes = public_suffixes()
    normal = {}
    for key, value in rows.items():
        name = key.strip().lower()
        if name.startswith("www.") and "/" not in name:
            name = name[4:]
        if name in whitelist.exact or name.startswith(BAD_TRAIL_PREFIXES) or (
            name[:1].isdigit() and whitelist.is_ip_whitelisted(name)
        ):
            out.whitelisted += 1
        elif "/" not in name and ":" not in name and not name[:1].isdigit() and suffixes.is_public(name.strip(".")):
            out.public_suffix += 1
        else:
            normal[key] = (name, value)
    keys, addresses = _leading_ip4([name for name, _ in normal.values() if name[:1].isdigit()])
    banned = {key for key, inside in zip(keys, drop_ranges().contains(addresses).tolist(), strict=True) if inside}
    for key, (name, value) in normal.items():
        if name in banned and not any(word in value[0] for word in _KEEP_INFO):
            out.bogon_cdn += 1
        else:
            out.rows[key] = value
    return out
