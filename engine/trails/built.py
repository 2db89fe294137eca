"""A built trail set as columns, and a ``trails.csv`` read straight into them.

``trails build --from trails.csv`` compiles 1.5 M rows. Held as a ``dict`` of ``(info, reference)``
tuples, the rows were stored, merged and looked up again key by key (about 2 s of the build). A
usual ``trails.csv`` (Maltrail's own output: lower-case keys, plain three-field rows) needs none of
that: its keys keep their rows, so they are cut from the file's bytes with numpy and hashed once
(the index reuses the hashes); the few repeated keys are found among equal hashes, ``www.``
prefixes are cut in bulk. A file where Maltrail's merge rules or lower-casing would decide takes
``load_sources``'s path, whose result the columns then hold unchanged.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import xxhash

from engine.index.ip4columns import ip4_columns
from engine.index.schema import K_IP4
from engine.trails.sources import Trails, _load_built_csv, _read_text, _value, wildcard_trails
from engine.trails.whitelist import Whitelist

T = TypeVar("T")


@dataclass
class TrailColumns:
    """A trail set in insertion order: keys, the id of each key's ``(info, reference)`` pair (ids
    numbered by first use) and the pairs; ``hashes`` holds each key's xxh64 when known."""

    keys: list[str]
    pair_ids: np.ndarray
    pairs: list[tuple[str, str]]
    hashes: np.ndarray | None = None

    @classmethod
    def from_trails(cls, trails: Trails) -> TrailColumns:
        pairs, pair_ids = _numbered(trails.values())
        return cls(list(trails), pair_ids, pairs)

    @classmethod
    def from_rows(cls, keys: list[str], value_ids: np.ndarray, values: list[tuple[str, str]],
                  hashes: np.ndarray | None) -> TrailColumns:
        """Rows whose ``value_ids`` index ``values`` (any numbering), pair ids renumbered by first use."""
        running = np.maximum.accumulate(value_ids)
        if len(value_ids) and value_ids[0] == 0 and (value_ids[1:] <= running[:-1] + 1).all():  # by first use
            return cls(keys, value_ids, values[: int(running[-1]) + 1], hashes)
        used, first = np.unique(value_ids, return_index=True)
        used = used[np.argsort(first)]
        renumber = np.zeros(len(values), dtype=np.int32)
        renumber[used] = np.arange(len(used), dtype=np.int32)
        return cls(keys, renumber[value_ids], [values[i] for i in used.tolist()], hashes)

    def without(self, dropped: np.ndarray) -> TrailColumns:
        """The set less the rows where ``dropped`` (bool) is set, order kept; takes over the key list."""
        if not dropped.any():
            return self
        kept = ~dropped
        hashes = None if self.hashes is None else self.hashes[kept]
        keys = _without(self.keys, np.flatnonzero(dropped).tolist())
        return TrailColumns.from_rows(keys, self.pair_ids[kept], self.pairs, hashes)

    def without_info(self, pattern: re.Pattern[str]) -> TrailColumns:
        """Maltrail's DISABLED_TRAILS_INFO_REGEX (``drop_disabled_info``): rows whose info matches dropped."""
        disabled = np.flatnonzero([pattern.search(info) is not None for info, _ in self.pairs])
        return self.without(np.isin(self.pair_ids, disabled))

    def wildcards(self) -> list[tuple[str, str, str]]:
        """``wildcard_trails`` of the set, given only the keys that can be one (a ``]``, ``*`` or ``+`` in them)."""
        keys = self.keys
        joined = "".join(keys)
        if "]" not in joined and "*" not in joined and "+" not in joined:
            return []
        marked = [i for i, key in enumerate(keys) if "]" in key or "*" in key or "+" in key]
        return wildcard_trails({keys[i]: self.pairs[self.pair_ids[i]] for i in marked})

    def to_trails(self) -> Trails:
        return dict(zip(self.keys, map(self.pairs.__getitem__, self.pair_ids.tolist()), strict=True))


def load_built_csv(path: str, whitelist: Whitelist | None) -> TrailColumns:
    """``load_sources([path], whitelist)`` for a lone ``trails.csv``, as columns."""
    if Path(path).suffix.lower() != ".csv":  # the error load_sources gives
        return TrailColumns.from_trails(_load_built_csv(path, whitelist))
    text = _read_text(Path(path))
    plain = _plain_csv_columns(text)
    if plain is None:
        return TrailColumns.from_trails(_load_built_csv(path, whitelist, text))
    columns, quad_like = plain
    if whitelist is not None:
        columns = columns.without(_whitelisted(columns, quad_like, whitelist))
    return columns


def _plain_csv_columns(text: str) -> tuple[TrailColumns, np.ndarray] | None:
    """The rows of a text where Maltrail's rules change nothing but ``www.`` prefixes: no quotes or
    carriage returns, three fields on every line, keys lower-case ASCII that stay distinct once
    ``www.`` is cut, with the rows whose key starts with a digit and has no colon (all that a
    whitelisted range can hold). None for any other text.

    Lines are measured on the UTF-8 bytes (commas and newlines are never part of a longer
    character); one split makes the key and ``info,reference`` strings.
    """
    if '"' in text or "\r" in text or not text:
        return None
    body = text[:-1] if text.endswith("\n") else text
    data = np.frombuffer(body.encode(), dtype=np.uint8)
    ends = np.append(np.flatnonzero(data == ord("\n")), len(data))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if int((ends - starts).max()) > csv.field_size_limit():
        return None
    comma_at = np.flatnonzero(data == ord(","))
    # two commas on every line: as many as that, and the 2i-th and (2i+1)-th on line i
    if len(comma_at) != 2 * len(starts) or not ((comma_at[0::2] >= starts).all() and (comma_at[1::2] < ends).all()):
        return None
    key_ends = comma_at[0::2]
    # upper-case or non-ASCII bytes in a key: lower-casing could merge keys
    if _in_keys(np.flatnonzero(((data - ord("A")) < 26) | (data >= 0x80)), starts, key_ends).size:
        return None
    padded = np.append(data, np.zeros(8, dtype=np.uint8))
    www = _starting(padded, starts, b"www.")
    if www.any():
        www[_in_keys(np.flatnonzero(data == ord("/")), starts, key_ends)] = False  # Maltrail keeps www. before a path
        if (www & _starting(padded, starts + 4, b"www.")).any():  # a www. key's bare form is one too
            return None
    first = padded[starts + 4 * www]
    quad_like = (first >= ord("0")) & (first <= ord("9"))
    quad_like[_in_keys(np.flatnonzero(data == ord(":")), starts, key_ends)] = False
    split = data.copy()
    split[key_ends] = ord("\n")
    if www.any():  # the keys' bare forms: their www. bytes cut
        kept = np.ones(len(split), dtype=bool)
        kept[(starts[www, None] + np.arange(4)).ravel()] = False
        split = split[kept]
    parts = split.tobytes().decode().split("\n")
    keys = parts[0::2]
    suffixes, suffix_ids = _numbered(parts[1::2])
    values, value_of_suffix = _numbered([_value(*suffix.split(",")) for suffix in suffixes])  # two may agree
    value_ids = value_of_suffix[suffix_ids]
    hashes = np.fromiter(map(xxhash.xxh64_intdigest, keys), dtype=np.uint64, count=len(keys))
    sorted_hashes = np.sort(hashes)
    repeated = sorted_hashes[1:][sorted_hashes[1:] == sorted_hashes[:-1]]
    if len(repeated):
        later = _later_duplicates(keys, hashes, repeated, www, value_ids)
        if later is None:
            return None
        dropped = np.zeros(len(keys), dtype=bool)
        dropped[later] = True
        return TrailColumns.from_rows(keys, value_ids, values, hashes).without(dropped), quad_like[~dropped]
    return TrailColumns.from_rows(keys, value_ids, values, hashes), quad_like


def _later_duplicates(keys: list[str], hashes: np.ndarray, repeated: np.ndarray, www: np.ndarray,
                      value_ids: np.ndarray) -> list[int] | None:
    """Rows repeating an earlier row's key (among the rows whose hash is ``repeated``), whose value
    they give to the first row (Maltrail: later rows overwrite, the key keeps its place); None when
    a repeat involves a ``www.`` row (the merge rules decide)."""
    rows: dict[str, list[int]] = {}
    for i in np.flatnonzero(np.isin(hashes, repeated)).tolist():
        rows.setdefault(keys[i], []).append(i)
    later: list[int] = []
    for first, *others in rows.values():
        if others:
            if www[first] or www[others].any():
                return None
            value_ids[first] = value_ids[others[-1]]
            later += others
    return later


def _without(items: list[str], rows: list[int]) -> list[str]:
    """``items`` without the ``rows``: deleted in place when they are few (each deletion moves the
    list's tail, about 1 ms for 1.5 M keys: cheaper than copying the whole list for a handful)."""
    if len(rows) > 16:
        kept = np.ones(len(items), dtype=bool)
        kept[rows] = False
        return list(compress(items, kept.tolist()))
    for i in sorted(rows, reverse=True):
        del items[i]
    return items


class _Ids(dict[Any, int]):
    """Dense ids in first-seen order: ``map(ids.__getitem__, items)`` numbers a column at C speed,
    hashing each item once (tuple hashes are not cached)."""

    def __missing__(self, item: Any) -> int:
        ident = self[item] = len(self)
        return ident


def _numbered(items: Collection[T]) -> tuple[list[T], np.ndarray]:
    """The distinct items in first-seen order and each item's index among them."""
    ids = _Ids()
    numbers = np.fromiter(map(ids.__getitem__, items), dtype=np.int32, count=len(items))
    return list(ids), numbers


def _starting(padded: np.ndarray, starts: np.ndarray, prefix: bytes) -> np.ndarray:
    """Which of the texts at ``starts`` of ``padded`` (at least 3 zero bytes past the last start)
    begin with the 4-byte ``prefix``: one gather of the little-endian words at every byte offset."""
    words = np.ndarray((len(padded) - 3,), dtype="<u4", buffer=padded, strides=(1,))
    return words[starts] == int.from_bytes(prefix, "little")


def _in_keys(at: np.ndarray, starts: np.ndarray, key_ends: np.ndarray) -> np.ndarray:
    """The rows holding one of the byte positions ``at`` in their key."""
    owner = np.searchsorted(starts, at, side="right") - 1
    return owner[at < key_ends[owner]]


def _whitelisted(columns: TrailColumns, quad_like: np.ndarray, whitelist: Whitelist) -> np.ndarray:
    """Rows whose key is an exact whitelist entry (found by hash, then compared) or, among the
    ``quad_like`` rows, a dotted quad in a whitelisted range (``Whitelist.is_ip_whitelisted``)."""
    keys = columns.keys
    entry_hashes = np.fromiter(map(xxhash.xxh64_intdigest, whitelist.exact), dtype=np.uint64,
                               count=len(whitelist.exact))
    dropped = np.zeros(len(keys), dtype=bool)
    for i in np.flatnonzero(np.isin(columns.hashes, entry_hashes)).tolist():
        dropped[i] = keys[i] in whitelist.exact
    if whitelist.ranges4:
        rows = np.flatnonzero(quad_like)
        texts = [keys[i] for i in rows.tolist()]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))  # ASCII keys: bytes
        starts = np.cumsum(lengths) - lengths
        kind, address = ip4_columns(np.frombuffer("".join(texts).encode(), dtype=np.uint8), starts, lengths)
        quads, address = rows[kind == K_IP4], address[kind == K_IP4]
        first, last = (np.array(bound, dtype=np.uint64) for bound in zip(*whitelist.ranges4, strict=True))
        at = np.searchsorted(first, address, side="right") - 1  # ranges4: sorted, disjoint
        dropped[quads[(at >= 0) & (address <= last[np.maximum(at, 0)])]] = True
    return dropped
