"""What the aggregator's stateful heuristics need from a batch, extracted with numpy.

Second ticks (a packet whose second is later than the previous packet's: Maltrail's sweep
moment) and scan probes: TCP SYN / NULL / FIN / XMAS and non-DNS UDP towards a non-loopback
destination. Scan state only changes at a sweep, and between two sweeps the accumulators are
sets, so the probes of one segment (the rows between two ticks) are sent grouped: a group per
(source, destination) with the distinct ports in capture order, a group per (source, infection
port) with the distinct targets, all of a segment's groups in one item, in the order of their
first probes. Keys reach the accumulators in the order they would one probe at a time, and the
aggregator gets two items a segment instead of one per probe.
"""

from __future__ import annotations

import numpy as np

from engine.heuristics import INFECTION_PORTS
from workers.batch import PROTO_TCP, PROTO_UDP, Parsed

TICK, TCP_SCANS, UDP_SCANS = "tick", "tcpscans", "udpscans"
_PROBE_FLAGS = np.zeros(256, bool)  # SYN, NULL, FIN, XMAS (a table lookup beats np.isin 6x)
_PROBE_FLAGS[[0x02, 0x00, 0x01, 0x29]] = True
_LOOPBACK4 = 0x7F000001
_LOOPBACK6 = bytes(15) + b"\x01"
_INFECTION_PORT = np.zeros(65536, bool)
_INFECTION_PORT[sorted(INFECTION_PORTS)] = True


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
    """At most one TCP and one UDP scan item per segment, each at the row of the segment's first
    probe: columns (tags, sources, destinations or ports, first source ports, first destination
    ports or targets, distinct values) of the segment's groups, in the order of their first probes."""
    if not p.n:
        return []
    segment = np.cumsum(tick_rows(p)).astype(np.uint32)
    tcp = (p.proto == PROTO_TCP) & _PROBE_FLAGS[p.tcp_flags & 0xFF]
    udp = (p.proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    wanted = p.first_frag & (tcp | udp)
    parts: dict[str, list[_Part]] = {TCP_SCANS: [], UDP_SCANS: []}
    rows = np.flatnonzero(wanted & (p.version == 4) & (p.dst4 != _LOOPBACK4))
    if rows.size:
        _family_parts(parts, p, rows, segment[rows], p.src4[rows], p.dst4[rows], p.src4[rows].tolist(),
                      p.dst4[rows].tolist())
    rows6 = np.flatnonzero(wanted & (p.version == 6))
    if rows6.size:
        pos = np.searchsorted(p.v6_rows, rows6)
        src6, dst6 = p.src6[pos], p.dst6[pos]
        keep = dst6 != _LOOPBACK6
        rows6, src6, dst6 = rows6[keep], src6[keep], dst6[keep]
        if rows6.size:
            _family_parts(parts, p, rows6, segment[rows6], src6, dst6, [a.ljust(16, b"\0") for a in src6.tolist()],
                          [a.ljust(16, b"\0") for a in dst6.tolist()])
    out: list[tuple[int, str, tuple]] = []
    for kind, kind_parts in parts.items():
        if kind_parts:
            _segment_items(out, kind, kind_parts, segment)
    return out  # in row order once the worker sorts all of a batch's items


# first rows, then the columns: tags, a (source), b (destination or port), first sport, first x, values
_Part = tuple[np.ndarray, list, list, list, list, list, list]


def _family_parts(parts: dict[str, list[_Part]], p: Parsed, rows: np.ndarray, segment: np.ndarray,
                  src: np.ndarray, dst: np.ndarray, src_list: list, dst_list: list) -> None:
    """Port-scan groups (per source and destination) and infection groups (per source and
    infection port) of one address family. `src_list` and `dst_list` are the addresses as the
    aggregator keys them (IPv4 integers, IPv6 16 bytes)."""
    proto = p.proto[rows]
    dport = p.dport[rows].astype(np.uint16)
    sport = p.sport[rows].tolist()
    ports = dport.tolist()
    for kind, tag, mask in ((TCP_SCANS, "p", proto == PROTO_TCP), (UDP_SCANS, "u", proto == PROTO_UDP)):
        at = np.flatnonzero(mask)
        if at.size:
            first, where, groups = _groups(rows[at], segment[at], src[at], dst[at], dport[at])
            idx = at[where].tolist()
            parts[kind].append((first, [tag] * len(idx), [src_list[i] for i in idx], [dst_list[i] for i in idx],
                                [sport[i] for i in idx], [ports[i] for i in idx], groups))
    at = np.flatnonzero((proto == PROTO_TCP) & (p.tcp_flags[rows] == 0x02) & _INFECTION_PORT[dport])
    if at.size:
        first, where, groups = _groups(rows[at], segment[at], src[at], dport[at], dst[at])
        if isinstance(groups[0][0], bytes):
            groups = [tuple(t.ljust(16, b"\0") for t in targets) for targets in groups]
        idx = at[where].tolist()
        parts[TCP_SCANS].append((first, ["i"] * len(idx), [src_list[i] for i in idx], [ports[i] for i in idx],
                                 [sport[i] for i in idx], [dst_list[i] for i in idx], groups))


def _segment_items(out: list, kind: str, parts: list[_Part], segment: np.ndarray) -> None:
    """Merge the parts in first-probe order (port scans before infections on the same row, as one
    probe at a time would add them) and cut them into one item per segment."""
    first = np.concatenate([part[0] for part in parts])
    order = np.argsort(first, kind="stable")
    columns = [[v for part in parts for v in part[k]] for k in range(1, 7)]
    rows = first[order]
    seg = segment[rows]
    bounds = np.flatnonzero(np.concatenate(([True], seg[1:] != seg[:-1], [True]))).tolist()
    picks = order.tolist()
    starts = rows.tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        chosen = picks[lo:hi]
        out.append((starts[lo], kind, tuple([column[i] for i in chosen] for column in columns)))
