"""What the aggregator's stateful heuristics need from a batch, extracted with numpy.

Second ticks (a packet whose second is later than the previous packet's: Maltrail's sweep
moment) and scan probes: TCP SYN / NULL / FIN / XMAS and non-DNS UDP towards a non-loopback
destination. Scan state only changes at a sweep, and between two sweeps the accumulators are
sets, so the probes of one segment (the rows between two ticks) are sent grouped: one item per
(source, destination) with the distinct ports in capture order, one per (source, infection port)
with the distinct targets. Each item sits at the row of its group's first probe, so keys reach
the accumulators in the order they would one probe at a time, and a scan costs the aggregator
one item instead of one per port.
"""

from __future__ import annotations

import numpy as np

from engine.heuristics import INFECTION_PORTS
from workers.batch import PROTO_TCP, PROTO_UDP, Parsed

TICK, TCP_SCAN, INFECTION, UDP_SCAN = "tick", "tcpscan", "infection", "udpscan"
_STEALTH_AND_SYN = (0x02, 0x00, 0x01, 0x29)
_LOOPBACK4 = 0x7F000001
_LOOPBACK6 = bytes(15) + b"\x01"
_INFECTION_PORTS = np.array(sorted(INFECTION_PORTS))


def tick_rows(p: Parsed) -> np.ndarray:
    sec = p.sec.astype(np.int64)
    return np.concatenate(([True], sec[1:] > sec[:-1])) if p.n else np.zeros(0, bool)


def tick_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    rows = np.flatnonzero(tick_rows(p))
    return [(r, TICK, (s, u)) for r, s, u in zip(rows.tolist(), p.sec[rows].tolist(), p.usec[rows].tolist(),
                                                 strict=True)]


def _ids(column: np.ndarray) -> tuple[np.ndarray, int]:
    """A small integer per distinct value of the column, and how many there are."""
    values, ids = np.unique(column, return_inverse=True)
    return ids.ravel().astype(np.int64), len(values)


def _groups(rows: np.ndarray, segment: np.ndarray, a: np.ndarray, b: np.ndarray, value: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Rows grouped by (segment, a, b): (first row of each group, its position in `rows`, the group's
    distinct values in capture order). Keys become small integers first, so that grouping is a
    sort of int64s rather than of wide records."""
    a_id, na = _ids(a)
    b_id, nb = _ids(b)
    v_id, nv = _ids(value)
    group = (segment.astype(np.int64) * na + a_id) * nb + b_id
    first = np.sort(np.unique(group * nv + v_id, return_index=True)[1])  # first of each value, capture order
    order = first[np.argsort(group[first], kind="stable")]
    g = group[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    values = value[order].tolist()
    bounds = np.append(starts, order.size).tolist()
    groups = [tuple(values[i:j]) for i, j in zip(bounds[:-1], bounds[1:], strict=True)]
    return rows[order[starts]], order[starts], groups


def probe_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    if not p.n:
        return []
    segment = np.cumsum(tick_rows(p)).astype(np.uint32)
    tcp = (p.proto == PROTO_TCP) & np.isin(p.tcp_flags, _STEALTH_AND_SYN)
    udp = (p.proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    wanted = p.first_frag & (tcp | udp)
    v4 = p.version == 4
    out: list[tuple[int, str, tuple]] = []
    rows = np.flatnonzero(wanted & v4 & (p.dst4 != _LOOPBACK4))
    if rows.size:
        _scan_items(out, p, rows, segment[rows], p.src4[rows], p.dst4[rows], p.src4[rows].tolist(),
                    p.dst4[rows].tolist())
    rows6 = np.flatnonzero(wanted & (p.version == 6))
    if rows6.size:
        pos = np.searchsorted(p.v6_rows, rows6)
        src6, dst6 = p.src6[pos], p.dst6[pos]
        keep = dst6 != _LOOPBACK6
        rows6, src6, dst6 = rows6[keep], src6[keep], dst6[keep]
        if rows6.size:
            _scan_items(out, p, rows6, segment[rows6], src6, dst6, [a.ljust(16, b"\0") for a in src6.tolist()],
                        [a.ljust(16, b"\0") for a in dst6.tolist()])
    return out  # in row order once the worker sorts all of a batch's items


def _scan_items(out: list, p: Parsed, rows: np.ndarray, segment: np.ndarray, src: np.ndarray, dst: np.ndarray,
                src_list: list, dst_list: list) -> None:
    """Grouped TCP scan, infection and UDP scan items of one address family. `src_list` and
    `dst_list` are the addresses as the aggregator keys them (IPv4 integers, IPv6 16 bytes)."""
    proto = p.proto[rows]
    dport = p.dport[rows].astype(np.uint16)
    sport = p.sport[rows].tolist()
    ports = dport.tolist()
    for kind, mask in ((TCP_SCAN, proto == PROTO_TCP), (UDP_SCAN, proto == PROTO_UDP)):
        at = np.flatnonzero(mask)
        if at.size:
            first, where, groups = _groups(rows[at], segment[at], src[at], dst[at], dport[at])
            for r, i, ports_seen in zip(first.tolist(), at[where].tolist(), groups, strict=True):
                out.append((r, kind, (src_list[i], dst_list[i], sport[i], ports[i], ports_seen)))
    at = np.flatnonzero((proto == PROTO_TCP) & (p.tcp_flags[rows] == 0x02) & np.isin(dport, _INFECTION_PORTS))
    if at.size:
        first, where, groups = _groups(rows[at], segment[at], src[at], dport[at], dst[at])
        for r, i, targets in zip(first.tolist(), at[where].tolist(), groups, strict=True):
            if isinstance(targets[0], bytes):
                targets = tuple(t.ljust(16, b"\0") for t in targets)
            out.append((r, INFECTION, (src_list[i], ports[i], sport[i], dst_list[i], targets)))
