"""What the aggregator's stateful heuristics need from a batch, extracted with numpy.

Second ticks (a packet whose second is later than the previous packet's: Maltrail's sweep
moment) and scan probes: TCP SYN / NULL / FIN / XMAS and non-DNS UDP towards a non-loopback
destination. Probes repeated within one second are sent once (the first): the scan accumulators
are sets, so nothing the heuristics decide changes, and a flood costs the aggregator far less.
"""

from __future__ import annotations

import numpy as np

from engine.ipaddr import ip6_text
from workers.batch import PROTO_TCP, PROTO_UDP, Parsed

TICK, TCP_PROBE, UDP_PROBE = "tick", "tcpscan", "udpscan"
_STEALTH_AND_SYN = (0x02, 0x00, 0x01, 0x29)
_LOOPBACK4 = 0x7F000001


def tick_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    if not p.n:
        return []
    sec = p.sec.astype(np.int64)
    rows = np.flatnonzero(np.concatenate(([True], sec[1:] > sec[:-1])))
    return [(r, TICK, (int(sec[r]), int(p.usec[r]))) for r in rows.tolist()]


def _first_per_key(rows: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """The first row of each distinct combination of the given per-row columns, in row order."""
    if rows.size < 2:
        return rows
    key = np.ascontiguousarray(np.concatenate([c.reshape(len(rows), -1).view(np.uint8) for c in columns], axis=1))
    _, first = np.unique(key.view(f"V{key.shape[1]}").ravel(), return_index=True)
    return rows[np.sort(first)]


def probe_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    tcp = (p.proto == PROTO_TCP) & np.isin(p.tcp_flags, _STEALTH_AND_SYN)
    udp = (p.proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    v4 = p.version == 4
    wanted = p.first_frag & (tcp | udp) & ~(v4 & (p.dst4 == _LOOPBACK4))
    out: list[tuple[int, str, tuple]] = []
    rows = np.flatnonzero(wanted & v4)
    if rows.size:
        rows = _first_per_key(rows, [p.sec[rows].astype(np.uint32), p.proto[rows].astype(np.uint8),
                                     p.src4[rows], p.dst4[rows], p.dport[rows].astype(np.uint16)])
        _append(out, rows.tolist(), p.src4[rows].tolist(), p.dst4[rows].tolist(), p, rows)
    rows6 = np.flatnonzero(wanted & (p.version == 6))
    if rows6.size:
        pos = np.searchsorted(p.v6_rows, rows6)
        rows6 = _first_per_key(rows6, [p.sec[rows6].astype(np.uint32), p.proto[rows6].astype(np.uint8),
                                       p.src6[pos], p.dst6[pos], p.dport[rows6].astype(np.uint16)])
        pos = np.searchsorted(p.v6_rows, rows6)
        texts: dict[bytes, str] = {}
        srcs = [texts.get(a) or texts.setdefault(a, ip6_text(a.ljust(16, b"\0"))) for a in p.src6[pos].tolist()]
        dsts = [texts.get(a) or texts.setdefault(a, ip6_text(a.ljust(16, b"\0"))) for a in p.dst6[pos].tolist()]
        keep = [i for i, d in enumerate(dsts) if d != "::1"]
        rows6 = rows6[keep]
        _append(out, rows6.tolist(), [srcs[i] for i in keep], [dsts[i] for i in keep], p, rows6)
        out.sort(key=lambda item: item[0])
    return out


def _append(out: list, rows: list[int], srcs: list, dsts: list, p: Parsed, idx: np.ndarray) -> None:
    """One item per probe, built from columns (numpy scalar reads per row would cost more)."""
    columns = zip(rows, p.proto[idx].tolist(), srcs, p.sport[idx].tolist(), dsts, p.dport[idx].tolist(),
                  p.tcp_flags[idx].tolist(), strict=True)
    for r, proto, src, sport, dst, dport, flags in columns:
        if proto == PROTO_TCP:
            out.append((r, TCP_PROBE, (src, sport, dst, dport, flags == 0x02)))
        else:
            out.append((r, UDP_PROBE, (src, sport, dst, dport)))
