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


def probe_items(p: Parsed) -> list[tuple[int, str, tuple]]:
    tcp = (p.proto == PROTO_TCP) & np.isin(p.tcp_flags, _STEALTH_AND_SYN)
    udp = (p.proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    v4 = p.version == 4
    wanted = p.first_frag & (tcp | udp) & ~(v4 & (p.dst4 == _LOOPBACK4))
    rows = np.flatnonzero(wanted & v4)
    if rows.size:
        key = np.stack([p.sec[rows].astype(np.uint64), p.proto[rows].astype(np.uint64), p.src4[rows].astype(np.uint64),
                        p.dst4[rows].astype(np.uint64), p.dport[rows].astype(np.uint64)], axis=1)
        _, first = np.unique(key, axis=0, return_index=True)
        rows = rows[np.sort(first)]
    out: list[tuple[int, str, tuple]] = []
    for r in rows.tolist():
        src, dst, sport, dport = int(p.src4[r]), int(p.dst4[r]), int(p.sport[r]), int(p.dport[r])
        if p.proto[r] == PROTO_TCP:
            out.append((r, TCP_PROBE, (src, sport, dst, dport, int(p.tcp_flags[r]) == 0x02)))
        else:
            out.append((r, UDP_PROBE, (src, sport, dst, dport)))
    for r in np.flatnonzero(wanted & (p.version == 6)).tolist():
        pos = int(np.searchsorted(p.v6_rows, r))
        src6 = ip6_text(bytes(p.src6[pos]).ljust(16, b"\0"))
        dst6 = ip6_text(bytes(p.dst6[pos]).ljust(16, b"\0"))
        if dst6 == "::1":
            continue
        if p.proto[r] == PROTO_TCP:
            out.append((r, TCP_PROBE, (src6, int(p.sport[r]), dst6, int(p.dport[r]), int(p.tcp_flags[r]) == 0x02)))
        else:
            out.append((r, UDP_PROBE, (src6, int(p.sport[r]), dst6, int(p.dport[r]))))
    return out
