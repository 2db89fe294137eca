"""IP and `IP:port` trail matching for a parsed batch, and the events of the hits.

Which packets are checked follows Maltrail: TCP packets whose flags are exactly SYN, UDP that is
not DNS, ICMP echo requests (types 8 / 128), and every other IP protocol. The destination side is
tried first (`IP:port` before bare IP), then the source side. Lookups run over the whole batch in
numpy; Python code runs only for the few packets that hit.
"""

from __future__ import annotations

import numpy as np

from engine.eventlog import Event
from engine.index.mapped import TrailIndex
from engine.index.schema import F_ATTACKER, F_MALWARE, F_PARKING_SITE
from engine.ipaddr import ip4_text, ip6_text
from workers.batch import PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, Parsed

TCP_SYN = 0x02
_LOOPBACK4 = 0x7F000001
_LOOPBACK6 = b"\0" * 15 + b"\1"

PROTO_NAMES = {
    0: "IP", 1: "ICMP", 2: "IGMP", 4: "IPIP", 6: "TCP", 8: "EGP", 17: "UDP", 41: "IPV6", 43: "ROUTING",
    44: "FRAGMENT", 46: "RSVP", 47: "GRE", 50: "ESP", 51: "AH", 58: "ICMPV6", 59: "NONE", 60: "DSTOPTS",
    88: "EIGRP", 89: "OSPF", 103: "PIM", 112: "VRRP", 115: "L2TP", 132: "SCTP", 136: "UDPLITE",
}

# Check kinds (per checked row).
_SYN, _UDP, _PLAIN = 1, 2, 3


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


_L4_KNOWN = np.zeros(256, bool)  # protocols with rules of their own (a table lookup beats np.isin)
_L4_KNOWN[[PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMP6]] = True


def checked_rows(p: Parsed) -> tuple[np.ndarray, np.ndarray]:
    """Rows that get IP trail checks and their check kind."""
    proto = p.proto
    syn = p.tcp_flags == TCP_SYN  # flags are 0 but on TCP rows
    udp = (proto == PROTO_UDP) & (p.sport != 53) & (p.dport != 53)
    echo = ((proto == PROTO_ICMP) & (p.icmp_type == 8)) | ((proto == PROTO_ICMP6) & (p.icmp_type == 128))
    other = (p.version != 0) & ~_L4_KNOWN.take(proto, mode="clip")  # an IP row's protocol is a byte
    mask = p.first_frag & (syn | udp | echo) | (other & ~p.malformed)
    rows = mask.nonzero()[0]
    kind = np.where(syn[rows], _SYN, np.where(udp[rows], _UDP, _PLAIN))
    return rows, kind


class IpMatcher:
    """Matches parsed batches against a mapped index."""

    def __init__(self, index: TrailIndex) -> None:
        self.index = index

    def events(self, p: Parsed) -> list[tuple[int, Event]]:
        """(row, event) for every packet that hits an IP or `IP:port` trail, in row order."""
        rows, kind = checked_rows(p)
        if not rows.size:
            return []
        ix = self.index
        n = len(rows)
        d = np.full(n, -1, dtype=np.int32)
        s = np.full(n, -1, dtype=np.int32)
        dp = np.full(n, -1, dtype=np.int32)
        sp = np.full(n, -1, dtype=np.int32)
        is4 = p.version[rows] == 4
        syn = kind == _SYN
        r4 = rows[is4]
        if r4.size:
            d[is4] = ix.lookup_ip4(p.dst4[r4])
            s[is4] = ix.lookup_ip4(p.src4[r4])
            syn4 = syn[is4]
            dp4 = np.full(r4.size, -1, dtype=np.int32)
            sp4 = np.full(r4.size, -1, dtype=np.int32)
            if syn4.any():
                rs = r4[syn4]
                dp4[syn4] = ix.lookup_ip4port(p.dst4[rs], p.dport[rs].astype(np.uint32))
                sp4[syn4] = ix.lookup_ip4port(p.src4[rs], p.sport[rs].astype(np.uint32))
            dp[is4], sp[is4] = dp4, sp4
        is6 = ~is4
        if is6.any():
            r6 = rows[is6]
            pos = p.v6_rows.searchsorted(r6)
            dst6, src6 = p.dst6[pos], p.src6[pos]
            d[is6] = ix.lookup_ip6(dst6)
            s[is6] = ix.lookup_ip6(src6)
            syn6 = syn[is6]
            if syn6.any():
                dp6 = np.full(r6.size, -1, dtype=np.int32)
                sp6 = np.full(r6.size, -1, dtype=np.int32)
                dp6[syn6] = ix.lookup_ip6port(dst6[syn6], p.dport[r6[syn6]].astype(np.uint16))
                sp6[syn6] = ix.lookup_ip6port(src6[syn6], p.sport[r6[syn6]].astype(np.uint16))
                dp[is6], sp[is6] = dp6, sp6
        hit = ((d >= 0) | (s >= 0) | (dp >= 0) | (sp >= 0)).nonzero()[0]
        out: list[tuple[int, Event]] = []
        for h in hit.tolist():
            ev = self._event(p, int(rows[h]), int(kind[h]), int(d[h]), int(s[h]), int(dp[h]), int(sp[h]))
            if ev is not None:
                out.append((int(rows[h]), ev))
        return out

    def _event(self, p: Parsed, row: int, kind: int, d: int, s: int, dp: int, sp: int) -> Event | None:
        ix = self.index
        if p.version[row] == 4:
            src, dst = ip4_text(int(p.src4[row])), ip4_text(int(p.dst4[row]))
            dst_loopback = int(p.dst4[row]) == _LOOPBACK4
        else:
            pos = int(p.v6_rows.searchsorted(row))
            src, dst = ip6_text(bytes(p.src6[pos]).ljust(16, b"\0")), ip6_text(bytes(p.dst6[pos]).ljust(16, b"\0"))
            dst_loopback = bytes(p.dst6[pos]).ljust(16, b"\0") == _LOOPBACK6
        proto = int(p.proto[row])
        sport: int | None = int(p.sport[row]) if kind != _PLAIN else None
        dport: int | None = int(p.dport[row]) if kind != _PLAIN else None
        entry, trail, etype = -1, "", "IP"
        if dp >= 0 or d >= 0:
            entry = dp if dp >= 0 else d
            trail, etype = (ix.key(dp), "IPORT") if dp >= 0 else (dst, "IP")
            flags = int(ix.entry_flags[entry])
            if kind in (_SYN, _UDP) and flags & F_ATTACKER:
                return None
            if kind == _SYN and flags & F_PARKING_SITE and dport not in (80, 443):
                return None
        elif (sp >= 0 or s >= 0) and not dst_loopback:
            entry = sp if sp >= 0 else s
            trail, etype = (ix.key(sp), "IPORT") if sp >= 0 else (src, "IP")
            if kind in (_SYN, _UDP) and int(ix.entry_flags[entry]) & F_MALWARE:
                return None
        else:
            return None
        return (
            int(p.sec[row]), int(p.usec[row]), src, sport, dst, dport, proto_name(proto), etype, trail,
            ix.info(entry), ix.reference(entry),
        )
