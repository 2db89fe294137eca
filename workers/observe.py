"""What the aggregator's stateful heuristics need from a batch, extracted with numpy.

Second ticks (a packet whose second is later than the previous packet's: Maltrail's sweep
moment) and scan probes: TCP SYN / NULL / FIN / XMAS and non-DNS UDP towards a non-loopback
destination. Scan state only changes at a sweep, and between two sweeps the accumulators are
sets: so the probes of one segment (the rows between two ticks) are sent as one item of columns,
in capture order, without repeats (the same protocol, addresses, destination port and SYN-ness
again adds nothing). The aggregator then adds them one by one, exactly as it would have.
"""

from __future__ import annotations

import numpy as np

from workers.batch import PROTO_TCP, PROTO_UDP, Parsed, row_addresses

TICK, PROBES = "tick", "probes"
_XMAS = 0x29  # FIN, PSH, URG; the other probes' flags are NULL, FIN and SYN: 0 to 2
_LOOPBACK4 = 0x7F000001
_LOOPBACK6 = bytes(15) + b"\x01"
_MIX = np.uint64(0x9E3779B97F4A7C15)  # the golden-ratio multiplier of Fibonacci hashing


def tick_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    rows = p.new_second.nonzero()[0]
    return [(r, TICK, (s, u)) for r, s, u in zip(rows.tolist(), p.sec[rows].tolist(), p.usec[rows].tolist(),
                                                 strict=True)]


def _first_per_key(rows: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """The first row of each distinct combination of the per-row columns, in row order.

    Rows are grouped by a 64-bit hash of their key, sorted stably, so each group's first is its
    earliest row; then every row's key is compared with its group's first, and any collision
    (two keys, one hash) falls back to sorting the keys themselves. `np.unique` over the key bytes
    as one value cost several times more: it compares them byte by byte."""
    if rows.size < 2:
        return rows
    words = [w for c in columns for w in _words(c)]
    mixed = np.zeros(len(rows), np.uint64)
    for w in words:
        mixed ^= w
        mixed *= _MIX
        mixed ^= mixed >> np.uint64(29)
    order = mixed.argsort(kind="stable")
    ranked = mixed[order]
    new = np.empty(len(rows), bool)
    new[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=new[1:])
    firsts = order[new]
    leader = firsts[new.cumsum() - 1]  # per sorted position: the first row of its group
    if any((w[order] != w[leader]).any() for w in words):
        firsts = np.lexsort(words[::-1])  # a collision: by the keys themselves (never seen in practice)
        ranked_words = [w[firsts] for w in words]
        new[1:] = False
        for w in ranked_words:
            new[1:] |= w[1:] != w[:-1]
        firsts = firsts[new]
    firsts.sort()
    return rows[firsts]


def _words(column: np.ndarray) -> list[np.ndarray]:
    """A key column as 64-bit words: integers widened, anything else (16-byte IPv6 addresses)
    cut into 8-byte words."""
    if column.ndim == 1 and column.dtype.kind in "biu":
        return [column.astype(np.uint64)]
    raw = np.ascontiguousarray(column).reshape(len(column), -1).view(np.uint8)
    raw = np.concatenate((raw, np.zeros((len(raw), -raw.shape[1] % 8), np.uint8)), axis=1) if raw.shape[1] % 8 else raw
    return list(np.ascontiguousarray(raw).view(np.uint64).T)


def probe_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    """One item per segment with probes, at the row of its first probe: columns (protocols,
    sources, destinations, source ports, destination ports, SYN flags). Addresses are as the
    aggregator keys them: IPv4 integers, IPv6 16 bytes."""
    if not p.n:
        return []
    tcp = (p.proto == PROTO_TCP) & ((p.tcp_flags <= 0x02) | (p.tcp_flags == _XMAS))  # flags: a byte
    udp = (p.proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    wanted = p.first_frag & (tcp | udp)
    rows = (wanted & (p.version == 4) & (p.dst4 != _LOOPBACK4)).nonzero()[0]
    rows6 = (wanted & (p.version == 6)).nonzero()[0] if p.v6_rows.size else rows[:0]
    if not rows.size and not rows6.size:
        return []
    segment = p.new_second.cumsum(dtype=np.uint32)
    syn = p.tcp_flags == 0x02
    pair = (p.src4[rows].astype(np.uint64) << np.uint64(32)) | p.dst4[rows]  # both addresses, one word
    rows = _first_per_key(rows, [_probe_key(p, rows, segment, syn), pair])
    if rows6.size:
        pos = p.v6_rows.searchsorted(rows6)
        rows6 = rows6[p.dst6[pos] != _LOOPBACK6]
        pos = p.v6_rows.searchsorted(rows6)
        rows6 = _first_per_key(rows6, [_probe_key(p, rows6, segment, syn), p.src6[pos], p.dst6[pos]])
        rows = np.sort(np.concatenate((rows, rows6)))
    if not rows.size:
        return []
    src, dst = row_addresses(p, rows)
    columns = (p.proto[rows].tolist(), src, dst, p.sport[rows].tolist(), p.dport[rows].tolist(), syn[rows].tolist())
    seg = segment[rows]
    bounds = np.concatenate(([True], seg[1:] != seg[:-1], [True])).nonzero()[0].tolist()
    first_rows = rows.tolist()
    return [(first_rows[a], PROBES, tuple(column[a:b] for column in columns))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _probe_key(p: Parsed, rows: np.ndarray, segment: np.ndarray, syn: np.ndarray) -> np.ndarray:
    """What makes a probe new within a segment, besides its addresses, packed into one word
    (segment, protocol, destination port, SYN-ness side by side): `_first_per_key` hashes a word
    per pass, so one word costs a quarter of four."""
    u64 = np.uint64
    key = segment[rows].astype(u64) << u64(32)
    key |= (p.proto[rows] & 0xFF).astype(u64) << u64(17)
    key |= (p.dport[rows] & 0xFFFF).astype(u64) << u64(1)
    key |= syn[rows]
    return key
