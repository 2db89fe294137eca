"""Compile a trail set and a whitelist into the index file, once.

Every trail kind becomes a flat sorted array so that a lookup is a `searchsorted`:
IPv4 as sorted uint32 (plus the same set as a roaring bitmap, the compact canonical form),
`IP:port` as sorted uint64 `ip << 16 | port`, IPv6 and `[IPv6]:port` as sorted fixed-width bytes,
CIDR ranges as disjoint sorted intervals (the most specific range wins), and every string key
(domains, URLs, paths, User-Agents) as xxh64 hashes verified against a byte arena. A /24 bitmap
in front of the IPv4 tables lets workers discard almost every packet with two numpy operations.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
import pyroaring
import xxhash

from engine.index.fileformat import write_arrays
from engine.index.ip4columns import ip4_columns
from engine.index.namefilter import build_name_filter
from engine.index.provenance import describe
from engine.index.schema import (
    K_CIDR4,
    K_CIDR6,
    K_IP4,
    K_IP4PORT,
    K_IP6,
    K_IP6PORT,
    STRING_PREFILTER_BITS,
    info_flags,
)
from engine.ipaddr import parse_cidr, parse_ip4, parse_ip6, parse_ip_port
from engine.resources import data_file
from engine.trails.built import TrailColumns, load_built_csv
from engine.trails.sources import CUSTOM_SPEC_PREFIX, Trails, is_built_set, load_sources
from engine.trails.whitelist import Whitelist, merge_ranges

FORMAT_VERSION = 1

_ADDRESS_START = np.frombuffer(b"0123456789[", dtype=np.uint8)
_IP4ISH = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")  # server certificate trails (type CERT)


class IndexBuildError(Exception):
    """The trail set cannot be compiled (e.g. it is empty)."""


def hash_strings(keys: Sequence[str | bytes], mask: int) -> np.ndarray:
    """xxh64 of each key (str keys hash as their UTF-8 bytes), cut to the index's hash width."""
    hashes = np.fromiter(map(xxhash.xxh64_intdigest, keys), dtype=np.uint64, count=len(keys))
    return hashes & np.uint64(mask)


def url_host_hashes(arena: np.ndarray, starts: np.ndarray, lengths: np.ndarray, ids: np.ndarray,
                    mask: int) -> np.ndarray:
    """Sorted hashes of the host part (before the first `/`) of the string keys `ids` that have
    one: a request's `host/...` keys can only be trails when its host is among them (few are),
    which spares hashing them for the others."""
    slashes = np.flatnonzero(arena == ord("/"))
    owner = np.searchsorted(starts, slashes, side="right") - 1
    owner, first = np.unique(owner, return_index=True)  # slashes ascend: each key's first one
    cut = slashes[first] - starts[owner]
    keep = (cut > 0) & (cut < lengths[owner]) & np.isin(owner, ids)
    hosts = [arena[a : a + c].tobytes() for a, c in zip(starts[owner[keep]].tolist(), cut[keep].tolist(), strict=True)]
    return np.unique(hash_strings(hosts, mask))


def _text_arena(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Arena of many strings; one encode when they are all ASCII (trail keys nearly always are)."""
    joined = "".join(texts)
    if not joined.isascii():
        return _arena([t.encode("utf-8", "surrogateescape") for t in texts])
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.uint64, count=len(texts)), out=offsets[1:])
    return np.frombuffer(joined.encode("ascii"), dtype=np.uint8), _narrow(offsets)


def _narrow(offsets: np.ndarray) -> np.ndarray:
    """u32 offsets when the arena allows (it always does for trail sets): half the size."""
    return offsets.astype(np.uint32) if not len(offsets) or int(offsets[-1]) < 1 << 32 else offsets


def _arena(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes and n+1 offsets."""
    lengths = np.fromiter((len(b) for b in items), dtype=np.uint64, count=len(items))
    offsets = np.zeros(len(items) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    return np.frombuffer(b"".join(items), dtype=np.uint8), _narrow(offsets)


def flatten_ranges(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Overlapping (first, last, entry) ranges -> disjoint ones, the narrowest covering range wins."""
    if not ranges:
        return []
    ranges = sorted(ranges)
    points = sorted({r[0] for r in ranges} | {r[1] + 1 for r in ranges})
    out: list[tuple[int, int, int]] = []
    heap: list[tuple[int, int, int]] = []  # (size, last, entry)
    k = 0
    for i, start in enumerate(points[:-1]):
        while k < len(ranges) and ranges[k][0] <= start:
            first, last, entry = ranges[k]
            heapq.heappush(heap, (last - first, last, entry))
            k += 1
        while heap and heap[0][1] < start:
            heapq.heappop(heap)
        if not heap:
            continue
        end = points[i + 1] - 1
        entry = heap[0][2]
        if out and out[-1][2] == entry and out[-1][1] + 1 == start:
            out[-1] = (out[-1][0], end, entry)
        else:
            out.append((start, end, entry))
    return out


def string_prefilter(hashes: np.ndarray) -> np.ndarray:
    """Two bits per key, from the hash's low bits and from its high half
    (`string_prefilter_probes` 2): most string lookups are misses, and byte tests in Python
    (~0.1 µs) reject all but about 2 % of them on the full set (one bit let 8 % through) before
    the hash column is searched (~1.5 µs)."""
    bits = np.zeros(1 << STRING_PREFILTER_BITS, dtype=bool)
    mask = np.uint64((1 << STRING_PREFILTER_BITS) - 1)
    bits[(hashes & mask).astype(np.int64)] = True
    bits[(hashes >> np.uint64(32) & mask).astype(np.int64)] = True
    return np.packbits(bits, bitorder="little")


def _sorted_table(prefix: str, keys: np.ndarray, ids: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Keys sorted for `searchsorted`, with the entry id of each (equal keys by entry id)."""
    ids = np.asarray(ids, dtype=np.int32)
    order = np.lexsort((ids, keys))
    return {f"{prefix}_keys": keys[order], f"{prefix}_entry": ids[order]}


def _v6bytes(values: Iterable[int]) -> np.ndarray:
    return np.array([v.to_bytes(16, "big") for v in values], dtype="S16")


def _string_table(prefix: str, hashes: np.ndarray, ids: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    order = np.argsort(hashes)  # numpy's fast sort; a stable one only when equal hashes need ids in order
    ordered = hashes[order]
    if (ordered[1:] == ordered[:-1]).any():
        order = np.argsort(hashes, kind="stable")
    return {
        f"{prefix}_hash": hashes[order],
        f"{prefix}_entry": np.asarray(ids, dtype=np.int32)[order] if len(ids) else np.zeros(0, np.int32),
    }


def compile_index(
    trails: Trails | TrailColumns,
    whitelist_exact: Iterable[str] = (),
    whitelist_ranges4: Iterable[tuple[int, int]] = (),
    wildcards: Sequence[tuple[str, str, str]] = (),
    hash_bits: int = 64,
    sources: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Trail set -> (arrays, metadata) of the index file."""
    columns = trails if isinstance(trails, TrailColumns) else TrailColumns.from_trails(trails)
    keys, pair_ids, pairs = columns.keys, columns.pair_ids, columns.pairs
    if not keys:
        raise IndexBuildError("no trails to index (the sources gave no trail rows)")
    started = time.perf_counter()
    mask = (1 << hash_bits) - 1
    n = len(keys)
    infos: dict[str, int] = {}
    refs: dict[str, int] = {}
    pair_info = np.array([infos.setdefault(info, len(infos)) for info, _ in pairs], dtype=np.int32)
    pair_ref = np.array([refs.setdefault(ref, len(refs)) for _, ref in pairs], dtype=np.int32)
    entry_info = pair_info[pair_ids]
    entry_ref = pair_ref[pair_ids]
    entry_kind = np.zeros(n, dtype=np.uint8)
    key_arena, key_off = _text_arena(keys)
    starts = key_off[:-1].astype(np.int64)
    lengths = np.diff(key_off).astype(np.int64)
    if not lengths.all():
        raise IndexBuildError("a trail key is empty")
    wl_bytes = [w.encode("utf-8", "surrogateescape") for w in sorted({w.lower() for w in whitelist_exact})]
    wl_arena, wl_off = _arena(wl_bytes)
    # numpy releases the GIL over the filter's large arrays: it is built while the rest compiles
    background = ThreadPoolExecutor(1, thread_name_prefix="name-filter")
    name_filter = background.submit(build_name_filter, [(key_arena, key_off), (wl_arena, wl_off)])
    background.shutdown(wait=False)  # the thread ends with its one task; `result` below waits for it

    wanted = {pattern for pattern, _, _ in wildcards[:100]}
    hits = np.flatnonzero(np.fromiter(map(wanted.__contains__, keys), dtype=bool, count=n)).tolist() if wanted else []
    found = {keys[e]: e for e in hits}
    missing = wanted - found.keys()
    if missing:
        raise IndexBuildError(f"wildcard trail {sorted(missing)[0]!r} is not in the trail set")
    wildcard_entry = {pattern: found[pattern] for pattern, _, _ in wildcards[:100]}

    # Only keys that can be an address are parsed (a digit or "[" first, or a colon); the rest (most)
    # are strings. Plain IPv4 and IPv4:port keys are parsed as arrays; of the others, only those with
    # a colon, a slash or a non-ASCII character can still be an address (IPv6, CIDR) and are parsed
    # one by one.
    def having(byte_test: np.ndarray) -> np.ndarray:
        found = np.zeros(n, dtype=bool)
        found[np.searchsorted(starts, np.flatnonzero(byte_test), side="right") - 1] = True
        return found

    colon = having(key_arena == ord(":"))
    candidates = np.flatnonzero(np.isin(key_arena[starts], _ADDRESS_START) | colon)
    kinds, values = ip4_columns(key_arena, starts[candidates], lengths[candidates])
    entry_kind[candidates] = kinds
    unusual = colon | having((key_arena == ord("/")) | (key_arena >= 0x80))
    general = candidates[(kinds == 0) & unusual[candidates]]
    tables: dict[int, tuple[list, list[int]]] = {k: ([], []) for k in (K_IP4, K_IP4PORT, K_IP6, K_IP6PORT)}

    def add_address(kind: int, e: int, value: int | bytes) -> None:
        entry_kind[e] = kind
        tables[kind][0].append(value)
        tables[kind][1].append(e)
    cidr4: list[tuple[int, int, int]] = []
    cidr6: list[tuple[int, int, int]] = []

    for e in general.tolist():
        key = keys[e]
        if _IP4ISH.fullmatch(key):
            ip = parse_ip4(key)
            if ip is not None:
                add_address(K_IP4, e, ip)
                continue
        ipp = parse_ip_port(key)
        if ipp is not None:
            addr, port = ipp
            if isinstance(addr, int):
                add_address(K_IP4PORT, e, addr << 16 | port)
            else:
                add_address(K_IP6PORT, e, addr + port.to_bytes(2, "big"))
            continue
        packed = parse_ip6(key)
        if packed is not None:
            add_address(K_IP6, e, packed)
            continue
        cidr = parse_cidr(key) if "/" in key else None
        if cidr is not None:  # also kept as a string: its own text answers `check` exactly
            version, lo, hi = cidr
            entry_kind[e] = K_CIDR4 if version == 4 else K_CIDR6
            (cidr4 if version == 4 else cidr6).append((lo, hi, e))

    def ip4_table(kind: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        """The array-parsed keys of a kind followed by the one-by-one parsed ones, with entry ids."""
        fast = kinds == kind
        return (np.concatenate([values[fast], np.asarray(tables[kind][0], dtype=np.uint64)]).astype(dtype),
                np.concatenate([candidates[fast], np.asarray(tables[kind][1], dtype=np.int64)]))

    ip4_keys, ip4_ids = ip4_table(K_IP4, np.uint32)
    ip4p_keys, ip4p_ids = ip4_table(K_IP4PORT, np.uint64)
    (ip6_keys, ip6_ids), (ip6p_keys, ip6p_ids) = tables[K_IP6], tables[K_IP6PORT]
    # strings: every key but the exact addresses (CIDR keys stay strings too)
    string_ids = (entry_kind != K_IP4) & (entry_kind != K_IP4PORT) & (entry_kind != K_IP6) & (entry_kind != K_IP6PORT)
    str_ids = np.flatnonzero(string_ids)

    info_list = list(infos)
    flags_by_info = np.array([info_flags(s) for s in info_list], dtype=np.uint8)
    arrays: dict[str, np.ndarray] = {
        "entry_info": entry_info,
        "entry_ref": entry_ref,
        "entry_kind": entry_kind,
        "entry_flags": flags_by_info[entry_info],
    }
    arrays["key_arena"], arrays["key_off"] = key_arena, key_off
    arrays["info_arena"], arrays["info_off"] = _arena([s.encode() for s in info_list])
    arrays["ref_arena"], arrays["ref_off"] = _arena([s.encode() for s in refs])

    arrays.update(_sorted_table("ip4", ip4_keys, ip4_ids))
    arrays["ip4_roaring"] = np.frombuffer(pyroaring.BitMap(ip4_keys.tolist()).serialize(), dtype=np.uint8)
    arrays.update(_sorted_table("ip4p", ip4p_keys, ip4p_ids))
    arrays.update(_sorted_table("ip6", np.array(ip6_keys, dtype="S16"), ip6_ids))
    arrays.update(_sorted_table("ip6p", np.array(ip6p_keys, dtype="S18"), ip6p_ids))

    flat4 = flatten_ranges(cidr4)
    arrays["r4_first"] = np.array([r[0] for r in flat4], dtype=np.uint32)
    arrays["r4_last"] = np.array([r[1] for r in flat4], dtype=np.uint32)
    arrays["r4_entry"] = np.array([r[2] for r in flat4], dtype=np.int32)
    flat6 = flatten_ranges(cidr6)
    arrays["r6_first"] = _v6bytes(r[0] for r in flat6)
    arrays["r6_last"] = _v6bytes(r[1] for r in flat6)
    arrays["r6_entry"] = np.array([r[2] for r in flat6], dtype=np.int32)

    # /24 prefilter over everything an IPv4 address can hit: exact IPs, IP:port and ranges.
    covered = np.zeros(1 << 24, dtype=bool)
    covered[arrays["ip4_keys"] >> 8] = True
    covered[(arrays["ip4p_keys"] >> np.uint64(24)).astype(np.int64)] = True
    for first, last, _ in flat4:
        covered[first >> 8 : (last >> 8) + 1] = True
    arrays["pf4"] = np.packbits(covered, bitorder="little")

    if columns.hashes is None:
        str_hashes = hash_strings(list(compress(keys, string_ids.tolist())), mask)
    else:
        str_hashes = columns.hashes[str_ids] & np.uint64(mask)
    arrays.update(_string_table("str", str_hashes, str_ids))
    arrays["str_pf"] = string_prefilter(arrays["str_hash"])
    arrays["url_host_hash"] = url_host_hashes(key_arena, starts, lengths, str_ids, mask)

    arrays["wl_arena"], arrays["wl_off"] = wl_arena, wl_off
    arrays["name_filter"] = name_filter.result()
    arrays.update(_string_table("wl", hash_strings(wl_bytes, mask), list(range(len(wl_bytes)))))
    wl_ranges = merge_ranges(whitelist_ranges4)
    arrays["wl4_first"] = np.array([r[0] for r in wl_ranges], dtype=np.uint32)
    arrays["wl4_last"] = np.array([r[1] for r in wl_ranges], dtype=np.uint32)

    wildcard_rows = [[pattern, e] for pattern, e in wildcard_entry.items()]
    meta = {
        "version": FORMAT_VERSION,
        "hash_bits": hash_bits,
        "string_prefilter_probes": 2,
        "built_at": time.time(),
        "build_seconds": round(time.perf_counter() - started, 3),
        "sources": list(sources),
        "counts": {
            "entries": n,
            "ip4": len(ip4_keys),
            "ip4port": len(ip4p_keys),
            "ip6": len(ip6_keys),
            "ip6port": len(ip6p_keys),
            "cidr4": len(cidr4),
            "cidr6": len(cidr6),
            "strings": len(str_ids),
            "certificates": sum(1 for i in str_ids[lengths[str_ids] == 40].tolist() if _SHA1_HEX.fullmatch(keys[i])),
            "whitelist": len(wl_bytes) + len(wl_ranges),
            "wildcards": len(wildcard_rows),
        },
        "wildcards": wildcard_rows,
    }
    return arrays, meta


def _absolute(spec: str) -> str:
    """A source spec with an absolute path, so that a sensor can rebuild from it later."""
    prefix = CUSTOM_SPEC_PREFIX if spec.startswith(CUSTOM_SPEC_PREFIX) else ""
    return prefix + str(Path(spec[len(prefix):]).resolve())


def build_index_file(
    specs: Sequence[str],
    out: Path,
    whitelist_files: Sequence[Path] = (),
    default_whitelist: bool = True,
    hash_bits: int = 64,
    disabled_info_regex: str = "",
) -> dict[str, Any]:
    """Load trail sources, compile them and publish the index at `out` (atomically). Trails whose
    info matches `disabled_info_regex` (case-insensitive; Maltrail's DISABLED_TRAILS_INFO_REGEX)
    are left out, and the regex is recorded in the metadata."""
    paths = ([data_file("whitelist.txt")] if default_whitelist else []) + list(whitelist_files)
    whitelist = Whitelist.from_files(paths)
    if is_built_set(specs):
        columns = load_built_csv(specs[0], whitelist)
    else:
        columns = TrailColumns.from_trails(load_sources(list(specs), whitelist))
    if disabled_info_regex:
        columns = columns.without_info(re.compile(disabled_info_regex, re.IGNORECASE))
    arrays, meta = compile_index(
        columns, whitelist.exact, whitelist.ranges4, columns.wildcards(), hash_bits, [_absolute(s) for s in specs]
    )
    custom = [Path(s[len(CUSTOM_SPEC_PREFIX):]) for s in specs if s.startswith(CUSTOM_SPEC_PREFIX)]
    meta["provenance"] = describe(list(whitelist_files), default_whitelist, custom)
    meta["disabled_trails_info_regex"] = disabled_info_regex
    write_arrays(Path(out), arrays, meta)
    return meta
