"""Lookups over a mapped index file: batch lookups for workers, single ones for `check`.

All arrays are read-only views of one mmap; nothing here copies the trail set, so a process's
private memory stays the same whatever the number of trails.
"""

from __future__ import annotations

import gc
import itertools
import re
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from engine.index.fileformat import map_arrays
from engine.index.namefilter import NameBytes, suffixes_maybe_listed
from engine.index.schema import K_CIDR4, K_CIDR6, K_IP4, K_IP6, STRING_PREFILTER_BITS
from engine.ipaddr import parse_cidr, parse_ip4, parse_ip6, parse_ip_port

_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]*")
WHITELIST_CACHE_SIZE = 65_536


@dataclass(frozen=True)
class CheckResult:
    """One answer of `maltrail check`."""

    query: str
    found: bool
    trail: str | None
    info: str | None
    reference: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "query": self.query,
            "found": self.found,
            "trail": self.trail,
            "info": self.info,
            "reference": self.reference,
        }


class _Strings:
    """Strings stored as an arena + offsets, decoded on demand."""

    def __init__(self, arena: np.ndarray, offsets: np.ndarray) -> None:
        self._arena = arena
        self._off = offsets
        self._cache: dict[int, str] = {}

    def raw(self, i: int) -> bytes:
        return self._arena[int(self._off[i]) : int(self._off[i + 1])].tobytes()

    def __getitem__(self, i: int) -> str:
        s = self._cache.get(i)
        if s is None:
            s = self._cache[i] = self.raw(i).decode("utf-8", "surrogateescape")
        return s

    def __len__(self) -> int:
        return len(self._off) - 1

    def all(self) -> list[str]:
        """Every string, from one copy of the arena (a third of the cost of indexing them one by one)."""
        off = self._off.tolist()
        text = self._arena[off[0] : off[-1]].tobytes()
        return [text[a - off[0] : b - off[0]].decode("utf-8", "surrogateescape") for a, b in itertools.pairwise(off)]


def _int_sequence(hashes: np.ndarray) -> Sequence[int]:
    """A sorted hash column as a sequence of Python ints for `bisect`: a single lookup through a
    memoryview costs a third of a numpy `searchsorted` call on one value."""
    if hashes.dtype == np.dtype("=u8") and hashes.flags.c_contiguous:
        return memoryview(hashes).cast("B").cast("Q")
    return hashes.astype(np.uint64).tolist()


def _dots(name: str) -> Iterator[int]:
    """-1, then the position of each dot of `name`: where its label-boundary suffixes start, less one."""
    dot = -1
    while True:
        yield dot
        dot = name.find(".", dot + 1)
        if dot < 0:
            return


def _hash_present(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    if not len(sorted_hashes) or not len(hashes):
        return np.zeros(len(hashes), dtype=bool)
    i = sorted_hashes.searchsorted(hashes)
    np.minimum(i, len(sorted_hashes) - 1, out=i)
    return sorted_hashes[i] == hashes


class TrailIndex:
    """A mapped trail index."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        a, self.meta, self._mm = map_arrays(self.path)
        self._a = a
        self.entry_info = a["entry_info"]
        self.entry_ref = a["entry_ref"]
        self.entry_kind = a["entry_kind"]
        self.entry_flags = a["entry_flags"]
        self.keys = _Strings(a["key_arena"], a["key_off"])
        self.infos = _Strings(a["info_arena"], a["info_off"])
        self.refs = _Strings(a["ref_arena"], a["ref_off"])
        self.pf4 = a["pf4"]
        self._pf4_bytes = memoryview(self.pf4)
        self.ip4_keys, self.ip4_entry = a["ip4_keys"], a["ip4_entry"]
        self.ip4p_keys, self.ip4p_entry = a["ip4p_keys"], a["ip4p_entry"]
        self.ip6_keys, self.ip6_entry = a["ip6_keys"], a["ip6_entry"]
        self.ip6p_keys, self.ip6p_entry = a["ip6p_keys"], a["ip6p_entry"]
        self.r4_first, self.r4_last, self.r4_entry = a["r4_first"], a["r4_last"], a["r4_entry"]
        self.r6_first, self.r6_last, self.r6_entry = a["r6_first"], a["r6_last"], a["r6_entry"]
        self.str_hash, self.str_entry = a["str_hash"], a["str_entry"]
        self._str_pf = memoryview(a["str_pf"]) if "str_pf" in a else None
        self._str_pf_mask = (1 << STRING_PREFILTER_BITS) - 1
        self._str_pf_two = self.meta.get("string_prefilter_probes", 1) == 2  # older indexes have one
        self._name_filter = a.get("name_filter")
        self._url_hosts = a.get("url_host_hash")  # absent from indexes built before it existed
        self.wl_hash, self.wl_entry = a["wl_hash"], a["wl_entry"]
        self.wl_strings = _Strings(a["wl_arena"], a["wl_off"])
        self._str_hash_seq, self._wl_hash_seq = _int_sequence(self.str_hash), _int_sequence(self.wl_hash)
        self.wl4_first, self.wl4_last = a["wl4_first"], a["wl4_last"]
        self._mask = (1 << int(self.meta["hash_bits"])) - 1
        self.wildcards = [(pattern, int(e)) for pattern, e in self.meta["wildcards"]]
        self._wildcard_re: re.Pattern[str] | None = None
        self._wl_domain_cache: dict[str, bool] = {}
        self._wl_names: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self.entry_info)

    def close(self) -> bool:
        """Unmap the file, so a replaced generation really leaves memory: every view held here goes
        first. True once unmapped; a view still held elsewhere keeps the map until it is dropped."""
        mm, meta, path = self._mm, self.meta, self.path
        self.__dict__.clear()
        self.meta, self.path = meta, path
        for attempt in range(2):
            try:
                mm.close()
                return True
            except BufferError:  # a view in a reference cycle: collect it, then try once more
                if attempt == 0:
                    gc.collect()
        return False

    # ---- entries -------------------------------------------------------------------------
    def info(self, e: int) -> str:
        return self.infos[int(self.entry_info[e])]

    def reference(self, e: int) -> str:
        return self.refs[int(self.entry_ref[e])]

    def key(self, e: int) -> str:
        return self.keys[int(e)]

    # ---- batch lookups (hot path) ------------------------------------------------------------
    def ip4_candidates(self, ips: np.ndarray) -> np.ndarray:
        """Positions whose /24 is covered by any IPv4 trail, exact, `IP:port` or range."""
        bits = self.pf4[ips >> 11] >> (ips >> 8 & 7).astype(np.uint8)
        return (bits & 1).nonzero()[0]

    def lookup_ip4(self, ips: np.ndarray) -> np.ndarray:
        """Entry id per address (exact before range), -1 where none. `ips` is uint32."""
        out = np.full(len(ips), -1, dtype=np.int32)
        cand = self.ip4_candidates(ips)
        if cand.size:
            v = ips[cand]
            out[cand] = self._exact(self.ip4_keys, self.ip4_entry, v)
            miss = out[cand] < 0
            if miss.any() and len(self.r4_first):
                out[cand[miss]] = self._range(self.r4_first, self.r4_last, self.r4_entry, v[miss])
        return out

    def lookup_ip4port(self, ips: np.ndarray, ports: np.ndarray) -> np.ndarray:
        out = np.full(len(ips), -1, dtype=np.int32)
        if not len(self.ip4p_keys):
            return out
        cand = self.ip4_candidates(ips)
        if cand.size:
            v = ips[cand].astype(np.uint64) << np.uint64(16) | ports[cand].astype(np.uint64)
            out[cand] = self._exact(self.ip4p_keys, self.ip4p_entry, v)
        return out

    def lookup_ip6(self, addrs: np.ndarray) -> np.ndarray:
        """`addrs` is an S16 array of packed addresses."""
        out = self._exact(self.ip6_keys, self.ip6_entry, addrs)
        miss = out < 0
        if miss.any() and len(self.r6_first):
            out[miss] = self._range(self.r6_first, self.r6_last, self.r6_entry, addrs[miss])
        return out

    def lookup_ip6port(self, addrs: np.ndarray, ports: np.ndarray) -> np.ndarray:
        if not len(self.ip6p_keys) or not len(addrs):
            return np.full(len(addrs), -1, dtype=np.int32)
        raw = np.empty((len(addrs), 18), dtype=np.uint8)
        raw[:, :16] = addrs.view(np.uint8).reshape(-1, 16)
        raw[:, 16] = ports >> 8
        raw[:, 17] = ports & 0xFF
        return self._exact(self.ip6p_keys, self.ip6p_entry, raw.view("S18").ravel())

    @staticmethod
    def _exact(keys: np.ndarray, entries: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(keys) or not len(values):
            return np.full(len(values), -1, dtype=np.int32)
        i = keys.searchsorted(values)
        np.minimum(i, len(keys) - 1, out=i)
        return np.where(keys[i] == values, entries[i], -1).astype(np.int32, copy=False)

    @staticmethod
    def _range(first: np.ndarray, last: np.ndarray, entries: np.ndarray, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return _EMPTY_I32
        j = first.searchsorted(values, side="right") - 1
        jj = np.maximum(j, 0)
        return np.where((j >= 0) & (last[jj] >= values), entries[jj], -1).astype(np.int32, copy=False)

    # ---- single lookups ----------------------------------------------------------------------
    def lookup_string(self, text: str) -> int:
        """Exact string key (domain, URL, path, `ua:` ...) -> entry id or -1. Collisions verified."""
        raw = text.encode("utf-8", "surrogateescape")
        h = xxhash.xxh64_intdigest(raw) & self._mask
        if not self._string_may_hold(h):
            return -1
        return self._string_in(self._str_hash_seq, self.str_entry, self.keys, raw, h)

    def _string_may_hold(self, h: int) -> bool:
        """The string prefilter: one bit from the hash's low bits, and on indexes built with two
        probes a second from its high half (a quarter of the misses that one bit lets through)."""
        pf = self._str_pf
        if pf is None:
            return True
        bit = h & self._str_pf_mask
        if not pf[bit >> 3] >> (bit & 7) & 1:
            return False
        bit = h >> 32 & self._str_pf_mask
        return not self._str_pf_two or bool(pf[bit >> 3] >> (bit & 7) & 1)

    def _string_in(self, hashes: Sequence[int], entries: np.ndarray, strings: _Strings, raw: bytes,
                   h: int | None = None) -> int:
        if h is None:
            h = xxhash.xxh64_intdigest(raw) & self._mask
        i = bisect_left(hashes, h)
        while i < len(hashes) and hashes[i] == h:
            e = int(entries[i])
            if strings.raw(e) == raw:
                return e
            i += 1
        return -1

    def string_maybe_positions(self, keys: list[str]) -> list[int]:
        """Positions of the keys that may be string trails, from the prefilter bitmap alone (a hash
        and the prefilter's bits each, no numpy call): for the dozen keys of one request, cheaper
        than `lookup_string` on each, which then confirms the few that pass."""
        may_hold, mask = self._string_may_hold, self._mask
        return [i for i, key in enumerate(keys)
                if may_hold(xxhash.xxh64_intdigest(key.encode("utf-8", "surrogateescape")) & mask)]

    # ---- batch string checks (many keys per numpy call) -----------------------------------------
    def hash_keys(self, keys: list[str]) -> np.ndarray:
        """The index's hash of each key (valid UTF-8 strings: the callers pass plain names)."""
        return np.fromiter(map(xxhash.xxh64_intdigest, keys), np.uint64, len(keys)) & np.uint64(self._mask)

    def strings_maybe(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hashed key may be a string trail (False is certain; True nearly so): the
        prefilter bitmap, then the hash column for what passes it. `lookup_string` is exact."""
        if self._str_pf is None:
            return _hash_present(self.str_hash, hashes)
        pf = np.frombuffer(self._str_pf, np.uint8)
        mask = np.uint64(self._str_pf_mask)
        maybe = np.ones(len(hashes), bool)
        for bits in (hashes & mask, hashes >> np.uint64(32) & mask)[: 2 if self._str_pf_two else 1]:
            maybe &= (pf[bits >> np.uint64(3)] >> (bits & np.uint64(7)).astype(np.uint8) & 1).astype(bool)
        passed = maybe.nonzero()[0]
        maybe[passed] = _hash_present(self.str_hash, hashes[passed])
        return maybe

    def url_hosts_maybe(self, hosts: list[str]) -> np.ndarray:
        """Whether some string trail may start with each host and a `/` (False is certain): a
        request's `host/...` keys need hashing only then. Older indexes answer True."""
        if self._url_hosts is None:
            return np.ones(len(hosts), bool)
        return _hash_present(self._url_hosts, self.hash_keys(hosts))

    def suffixes_maybe_listed(self, names: list[str], laid_out: NameBytes | None = None) -> np.ndarray:
        """For plain lowercase ASCII names: whether the name or a suffix after one of its dots may
        be a string trail or whitelisted (False is certain): the parent walks of a whole batch in a
        few numpy calls (`engine.index.namefilter`). `laid_out`: the names' bytes, when the caller
        has them already. Indexes built before the name filter existed take one xxhash per suffix
        instead."""
        if self._name_filter is not None:
            if laid_out is None:
                laid_out = NameBytes.of("\n".join(names), len(names))
            return suffixes_maybe_listed(self._name_filter, laid_out)
        suffixes = [name[dot + 1 :] for name in names for dot in _dots(name)]
        if not suffixes:
            return np.zeros(len(names), bool)
        hashes = self.hash_keys(suffixes)
        counts = np.fromiter((name.count(".") + 1 for name in names), np.int64, len(names))
        maybe = self.strings_maybe(hashes) | _hash_present(self.wl_hash, hashes)
        return np.logical_or.reduceat(maybe, counts.cumsum() - counts)

    def lookup_domain(self, name: str) -> tuple[int, str]:
        """Parent walk on label boundaries: (entry, matched key) of the longest listed suffix."""
        name = name.lower().rstrip(".")
        labels = name.split(".")
        for k in range(len(labels)):
            suffix = ".".join(labels[k:])
            e = self.lookup_string(suffix)
            if e >= 0:
                return e, suffix
        return -1, ""

    def may_hold_ip4(self, ip: int) -> bool:
        """The /24 prefilter for one address, without a numpy call (a few hundred ns)."""
        return bool(self._pf4_bytes[ip >> 11] >> (ip >> 8 & 7) & 1)

    def lookup_ip_text(self, text: str) -> int:
        ip = parse_ip4(text)
        if ip is not None:
            return int(self.lookup_ip4(np.array([ip], dtype=np.uint32))[0])
        packed = parse_ip6(text)
        if packed is not None:
            return int(self.lookup_ip6(np.array([packed], dtype="S16"))[0])
        return -1

    def lookup_ip_port_text(self, ip: str, port: int) -> int:
        """`IP:port` trail of an address in text form and a port, or -1."""
        ip4 = parse_ip4(ip)
        if ip4 is not None:
            return int(self.lookup_ip4port(np.array([ip4], np.uint32), np.array([port], np.uint32))[0])
        packed = parse_ip6(ip)
        if packed is None:
            return -1
        return int(self.lookup_ip6port(np.array([packed], dtype="S16"), np.array([port], np.uint16))[0])

    def is_whitelisted_ip(self, text: str) -> bool:
        raw = text.encode("utf-8", "surrogateescape")
        if self._string_in(self._wl_hash_seq, self.wl_entry, self.wl_strings, raw) >= 0:
            return True
        ip = parse_ip4(text)
        if ip is None or not len(self.wl4_first):
            return False
        j = int(self.wl4_first.searchsorted(np.uint32(ip), side="right")) - 1
        return j >= 0 and int(self.wl4_last[j]) >= ip

    def is_whitelisted_domain(self, name: str) -> bool:
        """Parent walk over the whitelist; answers are cached (bounded): names repeat."""
        cached = self._wl_domain_cache.get(name)
        if cached is None:
            if len(self._wl_domain_cache) >= WHITELIST_CACHE_SIZE:
                self._wl_domain_cache.clear()
            cached = self._wl_domain_cache[name] = self._whitelisted_domain(name)
        return cached

    def whitelist_names(self) -> frozenset[str]:
        """The whitelist's strings as a set, made at the first use: a few thousand short strings,
        where a set beats hashing into the arrays."""
        if self._wl_names is None:
            self._wl_names = frozenset(self.wl_strings.all())
        return self._wl_names

    def _whitelisted_domain(self, name: str) -> bool:
        names = self.whitelist_names()
        m = _NAME_CHARS.match(name)
        text = (m.group(0) if m else "").lower()  # ASCII: whitelist strings compare as text
        if text and text in names:
            return True
        dot = text.find(".")
        while dot >= 0:  # each parent on a label boundary
            if dot + 1 < len(text) and text[dot + 1 :] in names:
                return True
            dot = text.find(".", dot + 1)
        return False

    # ---- check ---------------------------------------------------------------------------
    def check(self, indicator: str) -> CheckResult:
        """Answer one indicator the way the sensor would match it."""
        query = indicator
        text = indicator.strip()
        low = text.lower()
        e, trail = self._check_entry(text, low)
        if e < 0:
            return CheckResult(query, False, None, None, None)
        return CheckResult(query, True, trail or self.key(e), self.info(e), self.reference(e))

    def _check_entry(self, text: str, low: str) -> tuple[int, str]:
        e = self.lookup_string(low)
        if e >= 0:
            return e, ""
        ipp = parse_ip_port(low)
        if ipp is not None:
            addr, port = ipp
            if isinstance(addr, int):
                e = int(self.lookup_ip4port(np.array([addr], np.uint32), np.array([port], np.uint32))[0])
                if e < 0:
                    e = int(self.lookup_ip4(np.array([addr], np.uint32))[0])
            else:
                arr = np.array([addr], dtype="S16")
                e = int(self.lookup_ip6port(arr, np.array([port], np.uint32))[0])
                if e < 0:
                    e = int(self.lookup_ip6(arr)[0])
            return e, ""
        if parse_ip4(low) is not None or parse_ip6(low) is not None:
            return self.lookup_ip_text(low), ""
        cidr = parse_cidr(low)
        if cidr is not None:
            return self._check_cidr(cidr), ""
        if low.startswith("ua:"):
            return -1, ""
        if "/" in low:
            return self._check_url(low)
        e, key = self.lookup_domain(low)
        if e >= 0:
            return e, key
        return self._check_wildcard(low)

    def _check_cidr(self, cidr: tuple[int, int, int]) -> int:
        """A range query is found when one range trail covers all of it."""
        version, lo, hi = cidr
        if version == 4:
            e = int(self._range(self.r4_first, self.r4_last, self.r4_entry, np.array([lo], np.uint32))[0])
            if e >= 0 and int(self.r4_last[self.r4_first.searchsorted(lo, side="right") - 1]) >= hi:
                return e
            return -1
        first = np.array([lo.to_bytes(16, "big")], dtype="S16")
        e = int(self._range(self.r6_first, self.r6_last, self.r6_entry, first)[0])
        j = int(self.r6_first.searchsorted(first, side="right")[0]) - 1
        return e if e >= 0 and int.from_bytes(self.r6_last[j], "big") >= hi else -1

    def _check_url(self, url: str) -> tuple[int, str]:
        for scheme in ("http://", "https://"):
            if url.startswith(scheme):
                url = url[len(scheme) :]
        e = self.lookup_string(url.rstrip("/") or url)
        if e >= 0:
            return e, ""
        host, _, path = url.partition("/")
        path = "/" + path
        for candidate in (path.rstrip("/"), path.split("?")[0].rstrip("/"), host + "/"):
            if candidate:
                e = self.lookup_string(candidate)
                if e >= 0:
                    return e, ""
        e, key = self.lookup_domain(host.split(":")[0])
        return (e, key) if e >= 0 else (-1, "")

    def _check_wildcard(self, name: str) -> tuple[int, str]:
        if not self.wildcards:
            return -1, ""
        if self._wildcard_re is None:
            self._wildcard_re = re.compile("|".join(f"(?P<g{i}>{p})" for i, (p, _) in enumerate(self.wildcards)))
        m = self._wildcard_re.search(name)
        if not m or not m.lastgroup:
            return -1, ""
        return self.wildcards[int(m.lastgroup[1:])][1], ""

    def kinds_summary(self) -> dict[str, int]:
        counts = np.bincount(self.entry_kind, minlength=7)
        return {
            "ip4": int(counts[K_IP4]),
            "ip6": int(counts[K_IP6]),
            "cidr4": int(counts[K_CIDR4]),
            "cidr6": int(counts[K_CIDR6]),
        }
