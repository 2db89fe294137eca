"""Parse a whole packet batch with numpy: link layer -> IPv4/IPv6 -> TCP/UDP/ICMP columns.

Every field is a gather (`np.take` at per-packet offsets) followed by shifts, so the cost per
packet is a few numpy element operations, not a Python call. Reads past a packet's captured
length are clipped and masked: a truncated or hostile packet is counted as malformed, never
raises. Only first fragments reach L4; IPv6 extension headers (hop-by-hop, routing, destination
options, fragment) are walked.

Tunnels are decapsulated so that the inner packet is matched as if it had been captured directly:
its addresses, ports and payload offsets replace the outer ones in the columns (the outer
addresses, the tunnel endpoints, are not matched). After the first L3/L4 pass the rows whose L4
is a tunnel get their inner offsets computed with numpy, and the same L3/L4 pass runs again on
those rows only: GRE (RFC 2784/2890, inner IP, Ethernet 0x6558, ERSPAN I/II 0x88BE, III 0x22EB,
MPLS), IP-in-IP / IPv6-in-IPv4 / IPv6-in-IPv6 (protocols 4, 41), VXLAN (UDP 4789), Geneve (UDP
6081), Teredo (UDP 3544). MPLS label stacks (EtherType 0x8847 / 0x8848) are walked wherever an
EtherType is read. At most `MAX_TUNNEL_DEPTH` tunnels are taken off one packet; a packet nested
deeper is counted as malformed and not matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_BSD, DLT_LOOP, DLT_RAW_101 = 0, 1, 12, 14, 108, 101
DLT_C_HDLC, DLT_LINUX_SLL, DLT_NFLOG, DLT_LINUX_SLL2, DLT_IPV4, DLT_IPV6 = 104, 113, 239, 276, 228, 229
LINKTYPE_NAMES = {
    DLT_NULL: "NULL", DLT_EN10MB: "EN10MB", DLT_RAW: "RAW", DLT_RAW_BSD: "RAW", DLT_RAW_101: "RAW",
    DLT_C_HDLC: "C_HDLC", DLT_LOOP: "LOOP", DLT_LINUX_SLL: "LINUX_SLL", DLT_NFLOG: "NFLOG",
    DLT_LINUX_SLL2: "LINUX_SLL2", DLT_IPV4: "IPV4", DLT_IPV6: "IPV6",
}
SUPPORTED_LINKTYPES = tuple(LINKTYPE_NAMES)
# a few common types we do not parse, so that a refusal names what the user captured
_OTHER_NAMES = {6: "IEEE802", 9: "PPP", 10: "FDDI", 50: "PPP_SERIAL", 51: "PPP_ETHER", 105: "IEEE802_11",
                119: "PRISM_HEADER", 127: "IEEE802_11_RADIO", 163: "IEEE802_11_RADIO_AVS", 192: "PPI",
                195: "IEEE802_15_4", 201: "BLUETOOTH_HCI_H4_WITH_PHDR", 220: "USB_LINUX_MMAPPED",
                227: "CAN_SOCKETCAN", 249: "USBPCAP", 254: "BLUETOOTH_LE_LL"} | {147 + i: f"USER{i}" for i in range(16)}
NFULA_PAYLOAD = 9
AF_INET_LINUX, AF_INET6_LINUX = 2, 10
_NFLOG_MAX_TLVS = 32  # NFLOG defines fewer attribute types than this: a longer walk is hostile


def linktype_name(linktype: int) -> str:
    """libpcap's name of a link type (DLT_ prefix dropped), or "" when we know no name."""
    return LINKTYPE_NAMES.get(linktype) or _OTHER_NAMES.get(linktype, "")


ETH_IP4, ETH_IP6, ETH_VLAN, ETH_QINQ, ETH_VLAN_OLD, ETH_PPPOE = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x8864
PPP_IP4, PPP_IP6 = 0x21, 0x57
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58
_V6_EXT = np.array((0, 43, 60))  # sorted: `among`
_BSD_INET6 = np.array((10, 24, 28, 30))  # AF_INET6 of the BSDs and Linux in DLT_NULL / DLT_LOOP; sorted
_V6_FRAG = 44
ETH_MPLS, ETH_MPLS_MC, ETH_BRIDGE = 0x8847, 0x8848, 0x6558  # 0x6558: transparent Ethernet bridging
GRE_ERSPAN, GRE_ERSPAN3 = 0x88BE, 0x22EB
PROTO_IPIP, PROTO_IPV6, PROTO_GRE = 4, 41, 47
UDP_VXLAN, UDP_GENEVE, UDP_TEREDO = 4789, 6081, 3544
_INNER_ETYPES = np.sort([ETH_IP4, ETH_IP6, ETH_MPLS, ETH_MPLS_MC, ETH_VLAN, ETH_QINQ, ETH_VLAN_OLD, ETH_PPPOE])
MAX_TUNNEL_DEPTH = 4  # tunnels taken off one packet; one nested deeper is malformed
# Tables: a lookup per row costs one numpy call where comparing with each value costs two
_ETYPE_VERSION = np.zeros(1 << 16, np.int8)  # IP version of an EtherType; -1: walked first (tags, MPLS, PPPoE)
_ETYPE_VERSION[[ETH_IP4, ETH_IP6]] = 4, 6
_ETYPE_VERSION[[ETH_VLAN, ETH_QINQ, ETH_VLAN_OLD, ETH_MPLS, ETH_MPLS_MC, ETH_PPPOE]] = -1
_TUNNEL_PROTO = np.zeros(256, bool)  # IP protocols that carry a tunnel we take apart
_TUNNEL_PROTO[[PROTO_IPIP, PROTO_IPV6, PROTO_GRE]] = True
_TUNNEL_PORT = np.zeros(1 << 16, bool)  # UDP destination ports likewise (Teredo: either port)
_TUNNEL_PORT[[UDP_VXLAN, UDP_GENEVE, UDP_TEREDO]] = True
_MPLS_MAX_LABELS = 8
_L4_ROOM = np.zeros(256, np.int64)  # bytes of its header that a protocol's columns read (ICMP: its type)
_L4_ROOM[[PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMP6]] = 14, 8, 1, 1
# Fixed header layouts read as records (`Heads.fields`, `Gather.fields`); fields are big-endian.
# IPv4 header (IPv6: next header is the high byte of `frag`)
_IP_HEAD = np.dtype({"names": ["b0", "tot", "frag", "proto", "src", "dst"],
                     "formats": ["u1", ">u2", ">u2", "u1", ">u4", ">u4"],
                     "offsets": [0, 2, 6, 9, 12, 16], "itemsize": 20})
_IP_TYPES = (np.int32, np.int32, np.int32, np.int32, np.uint32, np.uint32)
# TCP: ports, data offset, flags (UDP: ports; ICMP: type in the first byte)
_L4_HEAD = np.dtype({"names": ["sport", "dport", "doff", "flags"], "formats": [">u2", ">u2", "u1", "u1"],
                     "offsets": [0, 2, 12, 13], "itemsize": 14})
_L4_TYPES = (np.int32,) * 4
# IPv6 header from its payload length (read for the IPv6 rows only)
_V6_HEAD = np.dtype({"names": ["plen", "src", "dst"], "formats": [">u2", "S16", "S16"], "offsets": [0, 4, 20],
                     "itemsize": 36})
_V6_TYPES = (np.int64, "S16", "S16")
# A packet's first bytes, gathered once per batch (`Heads`): room for Ethernet, a VLAN tag, IPv6,
# TCP with timestamps and a payload's first bytes
HEAD_BYTES = 96


@dataclass
class Parsed:
    """Columns of one batch; rows are packets in capture order."""

    n: int
    sec: np.ndarray
    usec: np.ndarray
    version: np.ndarray  # 4, 6, or 0 when not parsed as IP
    malformed: np.ndarray  # bool: IP-looking but truncated / inconsistent
    first_frag: np.ndarray  # bool: L4 header present (not a non-first fragment)
    proto: np.ndarray  # int32 IP protocol / final IPv6 next header
    src4: np.ndarray  # uint32 (0 for IPv6 rows)
    dst4: np.ndarray
    v6_rows: np.ndarray  # row numbers of IPv6 packets
    src6: np.ndarray  # S16 per v6 row
    dst6: np.ndarray
    sport: np.ndarray  # int32, 0 where not TCP/UDP
    dport: np.ndarray
    tcp_flags: np.ndarray  # int32
    icmp_type: np.ndarray  # int32, -1 where not ICMP
    payload_off: np.ndarray  # int64 absolute offset in the batch data
    payload_len: np.ndarray  # int64 (>= 0)
    heads: Heads  # every packet's first bytes, for the payload's first bytes

    @cached_property
    def new_second(self) -> np.ndarray:
        """bool per row: its second is later than the previous row's (the first row's too): the
        aggregator's sweep moments, which both the ticks and the probes' segments need."""
        new = np.ones(self.n, bool)
        if self.n:
            np.greater(self.sec[1:], self.sec[:-1], out=new[1:])
        return new


def among(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """`np.isin(values, keys)` for a sorted key array: `np.isin` sorts and de-duplicates its keys
    at every call (and its first call imports `numpy.ma`), some 50 µs a batch for a few keys."""
    if not len(keys):
        return np.zeros(len(values), bool)
    return keys.take(keys.searchsorted(values), mode="clip") == values


class WordSet:
    """A small fixed set of 32-bit words, tested by multiplicative hashing: each key has a slot of
    its own in a 64-entry table (the multiplier is searched for once), so membership is a multiply,
    a shift, a table lookup and a compare per value, several times cheaper than `among`'s binary
    search. Empty slots hold the first key, which hashes elsewhere: they never match."""

    _BITS = 6

    def __init__(self, keys: tuple[int, ...]) -> None:
        words = np.unique(np.array(keys, np.uint32))
        self._shift = np.uint32(32 - self._BITS)
        self._mult = next(m for m in map(np.uint32, range(0x9E3779B1, 1 << 32, 2))
                          if np.unique((words * m) >> self._shift).size == words.size)
        self._table = np.full(1 << self._BITS, words[0], np.uint32)
        self._table[(words * self._mult) >> self._shift] = words

    def has(self, values: np.ndarray) -> np.ndarray:
        """Which of these uint32 values are in the set."""
        return self._table.take((values * self._mult) >> self._shift) == values


class Gather:
    """Bounded byte reads at per-packet offsets."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data if len(data) else np.zeros(1, dtype=np.uint8)
        self._words: np.ndarray | None = None
        self._layouts: dict[int, np.ndarray] = {}

    def u8(self, idx: np.ndarray) -> np.ndarray:
        return self.data.take(idx, mode="clip").astype(np.int32)

    def be16(self, idx: np.ndarray) -> np.ndarray:
        d = self.data
        return (d.take(idx, mode="clip").astype(np.int32) << 8) | d.take(idx + 1, mode="clip")

    def le16(self, idx: np.ndarray) -> np.ndarray:
        d = self.data
        return d.take(idx, mode="clip").astype(np.int32) | (d.take(idx + 1, mode="clip").astype(np.int32) << 8)

    def be32(self, idx: np.ndarray) -> np.ndarray:
        """One gather through a view of a big-endian word at every byte (four byte gathers and
        their shifts cost two to four times more). An offset within 3 bytes of the end reads the
        last whole word: what lies past the end is garbage either way, and every caller masks it."""
        d = self.data
        if len(d) >= 4:
            if self._words is None:
                self._words = np.ndarray((len(d) - 3,), ">u4", buffer=d, strides=(1,))
            return self._words[np.minimum(idx, len(d) - 4)].astype(np.uint32)
        out = d.take(idx, mode="clip").astype(np.uint32) << 24
        out |= d.take(idx + 1, mode="clip").astype(np.uint32) << 16
        out |= d.take(idx + 2, mode="clip").astype(np.uint32) << 8
        out |= d.take(idx + 3, mode="clip")
        return out

    def records(self, idx: np.ndarray, layout: np.dtype) -> np.ndarray:
        """A fixed header layout at every offset in one gather (a byte-strided record view): its
        fields cost a conversion each instead of two or four byte gathers. A record that runs
        past the end reads as `u8` does (the last byte repeated)."""
        d, width = self.data, layout.itemsize
        if len(d) < width:
            return self.block(idx, width).view(layout).ravel()
        view = self._layouts.get(width)
        if view is None:  # opaque records: numpy gathers a structured dtype field by field, 8x slower
            view = self._layouts[width] = np.ndarray((len(d) - width + 1,), f"V{width}", buffer=d, strides=(1,))
        last = len(d) - width
        if not idx.size or idx.max() <= last:  # the rule: no record runs past the end
            return view[idx].view(layout)
        out = view[np.minimum(idx, last)].view(layout)
        over = (idx > last).nonzero()[0]
        if over.size:
            out[over] = self.block(idx[over], width).view(layout).ravel()
        return out

    def fields(self, idx: np.ndarray, layout: np.dtype, types: tuple) -> list[np.ndarray]:
        """The fields of a record at every offset, each converted to its type in `types`."""
        rec = self.records(idx, layout)
        return [rec[name].astype(t) for name, t in zip(layout.names, types, strict=True)]

    def block(self, idx: np.ndarray, width: int) -> np.ndarray:
        """`width` bytes per row as an (n, width) uint8 array."""
        return self.data.take(idx[:, None] + np.arange(width), mode="clip")


class Heads:
    """The first `HEAD_BYTES` bytes from an offset of every row (a packet's start, a tunnel's
    inner header), gathered in one pass into a compact array. Any gather over the batch costs
    10-20 ns a row whatever its width (a copy call a row, a cache miss a packet), a view of this
    array next to nothing: the link, IP and L4 headers and the payload's first bytes sit at the
    same offset in most packets of a batch, so a record is read at the usual offset through a
    strided view and only the rows that have it elsewhere are gathered. Reads are what
    `Gather.records` reads at the same offsets, past the batch's end included."""

    def __init__(self, g: Gather, start: np.ndarray) -> None:
        self.g, self.start = g, start
        self._views: dict[int, np.ndarray] = {}
        self.bytes = g.records(start, np.dtype(f"V{HEAD_BYTES}")).view(np.uint8) if len(start) else _NO_HEADS

    def at(self, offset: int, dtype: np.dtype | str) -> np.ndarray:
        """A field at the same offset from every row's start: a view."""
        return np.ndarray((len(self.start),), dtype, self.bytes, offset, (HEAD_BYTES,))

    def fields(self, idx: np.ndarray, layout: np.dtype, types: tuple, rows: np.ndarray | None = None,
               needed: np.ndarray | None = None) -> list[np.ndarray]:
        """`Gather.fields` at offsets `idx` of `rows` (all rows when None); with `needed` (a mask
        over all rows), rows outside it may hold any value."""
        rel = idx - (self.start if rows is None else self.start[rows])
        k = _usual(rel)
        if k is None or not 0 <= k <= HEAD_BYTES - layout.itemsize:
            return self.g.fields(idx, layout, types)
        n = len(self.start)
        out = []
        for dtype, offset, t in _fields_of(layout, types):
            view = self.at(k + offset, dtype)
            if rows is None:
                out.append(view.astype(t))
            elif 8 * rows.size < n:  # a few rows: picked out of the view (unaligned, a call each)
                out.append(view[rows].astype(t))
            else:  # most rows: converted whole, then taken (contiguous and aligned: several times cheaper a row)
                out.append(view.astype(t).take(rows))
        odd = (rel != k if needed is None else (rel != k) & needed).nonzero()[0]
        if odd.size:
            for column, value in zip(out, self._elsewhere(idx[odd], rel[odd], odd if rows is None else rows[odd],
                                                          layout, types), strict=True):
                column[odd] = value
        return out

    def _elsewhere(self, idx: np.ndarray, rel: np.ndarray, rows: np.ndarray, layout: np.dtype, types: tuple
                   ) -> list[np.ndarray]:
        """`fields` of the rows whose record is not at the usual offset: gathered from this array
        where it lies within (its lines are in the cache, the batch's may not be), else from the batch."""
        width = layout.itemsize
        inside = (rel >= 0) & (rel <= HEAD_BYTES - width)
        view = self._views.get(width)
        if view is None:
            view = self._views[width] = np.ndarray((len(self.bytes) - width + 1,), f"V{width}", self.bytes, 0, (1,))
        rec = view[np.where(inside, rows * HEAD_BYTES + rel, 0)].view(layout)
        out = [rec[name].astype(t) for name, t in zip(layout.names, types, strict=True)]
        outside = (~inside).nonzero()[0]
        if outside.size:
            for column, value in zip(out, self.g.fields(idx[outside], layout, types), strict=True):
                column[outside] = value
        return out


_NO_HEADS = np.zeros(HEAD_BYTES, np.uint8)


def _usual(rel: np.ndarray) -> int | None:
    """The most common of 16 evenly spaced values: the offset read through a view."""
    if not rel.size:
        return None
    sample = rel[:: max(1, rel.size // 16)].tolist()
    first = sample[0]
    return first if sample.count(first) == len(sample) else max(sample, key=sample.count)


@cache
def _fields_of(layout: np.dtype, types: tuple) -> tuple[tuple[np.dtype, int, type], ...]:
    """(dtype, offset, column type) of each field of a record layout: looked up once, not per batch."""
    return tuple((*layout.fields[name][:2], t) for name, t in zip(layout.names, types, strict=True))


def _nflog(g: Gather, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NFLOG: 4-byte header (address family first), then netlink TLVs (little-endian length and
    type, each padded to 4 bytes); the packet is the NFULA_PAYLOAD value. Walked for all rows at
    once, one TLV per step."""
    family = g.u8(start)
    pos = start + 4
    l3 = end.copy()
    found = np.zeros(len(start), dtype=bool)
    active = pos + 4 <= end
    for _ in range(_NFLOG_MAX_TLVS):
        if not active.any():
            break
        tlen, ttype = g.le16(pos), g.le16(pos + 2) & 0x3FFF  # top bits: nested / byte-order flags
        hit = active & (ttype == NFULA_PAYLOAD) & (tlen >= 4)
        found |= hit
        l3 = np.where(hit, pos + 4, l3)
        end = np.where(hit, np.minimum(end, pos + tlen), end)
        active &= ~hit & (tlen >= 4)  # a zero length would loop in place
        pos = np.where(active, pos + ((tlen + 3) & ~3), pos)
        active &= pos + 4 <= end
    ver = np.where(family == AF_INET_LINUX, 4, np.where(family == AF_INET6_LINUX, 6, 0))
    return l3, np.where(found, ver, 0), end


def _vlan(g: Gather, etype: np.ndarray, l3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """802.1Q, QinQ: up to two tags skipped."""
    for _ in range(2):
        tagged = (etype == ETH_VLAN) | (etype == ETH_QINQ) | (etype == ETH_VLAN_OLD)
        if not tagged.any():
            break
        etype = np.where(tagged, g.be16(l3 + 2), etype)
        l3 = np.where(tagged, l3 + 4, l3)
    return etype, l3


def _mpls(g: Gather, etype: np.ndarray, l3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MPLS: labels up to the bottom-of-stack bit, then IPv4 / IPv6 by the first nibble, or a
    pseudowire control word (first nibble 0, RFC 4385) followed by an Ethernet frame. A stack
    deeper than `_MPLS_MAX_LABELS` is not IP."""
    mpls = (etype == ETH_MPLS) | (etype == ETH_MPLS_MC)
    if not mpls.any():
        return etype, l3
    pos, active = l3.copy(), mpls.copy()
    for _ in range(_MPLS_MAX_LABELS):
        bottom = (g.u8(pos + 2) & 1) == 1
        pos = np.where(active, pos + 4, pos)
        active &= ~bottom
        if not active.any():
            break
    nibble = g.u8(pos) >> 4
    pw = mpls & ~active & (nibble == 0)
    inner = np.where(nibble == 4, ETH_IP4, np.where(nibble == 6, ETH_IP6, np.where(pw, g.be16(pos + 16), 0)))
    etype = np.where(mpls, np.where(active, 0, inner), etype)
    l3 = np.where(mpls, np.where(pw, pos + 18, pos), l3)
    return _vlan(g, etype, l3) if pw.any() else (etype, l3)


def _ethertype(g: Gather, etype: np.ndarray, l3: np.ndarray, end: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From an EtherType and the offset after it: VLAN tags, MPLS, PPPoE, down to (offset of the IP
    header, expected IP version or 0, end of the IP packet)."""
    ver = _ETYPE_VERSION.take(etype, mode="clip")
    if (ver < 0).any():
        l3, ver, end = _layered(g, etype, l3, end)
    ver *= l3 <= end
    return l3, ver, end


def _layered(g: Gather, etype: np.ndarray, l3: np.ndarray, end: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_ethertype` of a batch in which some EtherTypes are tags, MPLS or PPPoE: walked down to
    (offset of the IP header, expected IP version or 0, end of the IP packet)."""
    etype, l3 = _vlan(g, etype, l3)
    etype, l3 = _mpls(g, etype, l3)
    pppoe = etype == ETH_PPPOE
    if pppoe.any():
        # PPP protocol after the 6-byte session header: 2 bytes, or 1 when compressed (PFC, RFC
        # 1661: a protocol number's first byte is even, so an odd first byte is the whole field)
        first = g.u8(l3 + 6)
        pfc = (first & 1) == 1
        ppp = np.where(pfc, first, g.be16(l3 + 6))
        etype = np.where(pppoe, np.where(ppp == PPP_IP4, ETH_IP4, np.where(ppp == PPP_IP6, ETH_IP6, 0)), etype)
        end = np.where(pppoe, np.minimum(end, l3 + 6 + g.be16(l3 + 4)), end)  # Ethernet padding is not PPP
        l3 = np.where(pppoe, l3 + np.where(pfc, 7, 8), l3)
    return l3, np.maximum(_ETYPE_VERSION.take(etype, mode="clip"), 0), end  # still a tag (a third one): not IP


# Link types whose header is an EtherType at a fixed offset: (its offset, the IP header's)
_ETHERTYPE_AT = {DLT_EN10MB: (12, 14), DLT_LINUX_SLL: (14, 16), DLT_LINUX_SLL2: (0, 20),
                 DLT_C_HDLC: (2, 4)}  # Cisco HDLC: address, control, then an EtherType


def _link(heads: Heads, linktype: int, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset of the IP header, expected IP version or 0 when not IP, end of the IP packet) per
    packet (`heads` from each packet's start); the end is the capture's unless the link layer
    says the packet is shorter (padding)."""
    g, start = heads.g, heads.start
    if linktype in (DLT_RAW, DLT_RAW_BSD, DLT_RAW_101, DLT_IPV4, DLT_IPV6):
        return start.copy(), heads.at(0, np.uint8).astype(np.int32) >> 4, end
    if linktype in (DLT_NULL, DLT_LOOP):
        first, last = heads.at(0, np.uint8).astype(np.int32), heads.at(3, np.uint8).astype(np.int32)
        family = np.where(first != 0, first, last)  # host or network byte order
        ver = np.where(family == 2, 4, np.where(among(family, _BSD_INET6), 6, 0))
        return start + 4, np.where(end - start >= 4, ver, 0), end
    if linktype == DLT_NFLOG:
        return _nflog(g, start, end)
    if linktype not in _ETHERTYPE_AT:
        return start.copy(), np.zeros(len(start), dtype=np.int32), end
    at, l3 = _ETHERTYPE_AT[linktype]
    return _ethertype(g, heads.at(at, ">u2").astype(np.intp), start + l3, end)  # intp: a table index


@dataclass
class _Net:
    """L3/L4 columns of some rows (`Parsed` without the timestamps, plus where L4 starts and the
    IP packet ends, which decapsulation needs); `v6_rows` index these rows."""

    version: np.ndarray
    malformed: np.ndarray
    first_frag: np.ndarray
    proto: np.ndarray
    src4: np.ndarray
    dst4: np.ndarray
    v6_rows: np.ndarray
    src6: np.ndarray
    dst6: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    icmp_type: np.ndarray
    l4: np.ndarray
    ip_end: np.ndarray
    payload_off: np.ndarray
    payload_len: np.ndarray


_ROW_FIELDS = ("version", "malformed", "first_frag", "proto", "src4", "dst4", "sport", "dport", "tcp_flags",
               "icmp_type", "l4", "ip_end", "payload_off", "payload_len")


def _keep(column: np.ndarray, mask: np.ndarray, fill: int) -> np.ndarray:
    """`np.where(mask, column, fill)` in place in a fresh column: three vector passes, where one
    `where` costs about twice as much."""
    column -= fill
    column *= mask
    column += fill
    return column


def _ip_l4(heads: Heads, l3: np.ndarray, want: np.ndarray, end: np.ndarray) -> _Net:
    """IPv4 / IPv6 then TCP / UDP / ICMP columns of the rows whose IP header is at `l3` (`heads`:
    from the same rows' start or header)."""
    g = heads.g
    b0, tot, frag, ip_proto, ip_src, ip_dst = heads.fields(l3, _IP_HEAD, _IP_TYPES)
    nibble = b0 >> 4
    room = end - l3
    is4 = (want == 4) & (nibble == 4)
    is6 = (want == 6) & (nibble == 6)
    malformed = (want != 0) & ~(is4 | is6)  # says IP, is not

    # IPv4
    ihl = (b0 & 0xF) * 4
    bad4 = is4 & ((ihl < 20) | (ihl > room) | ((tot != 0) & (tot < ihl)))  # from 20 on, ihl > room says room < 20
    is4 &= ~bad4
    malformed |= bad4
    proto = _keep(ip_proto, is4, -1)
    src4, dst4 = ip_src, ip_dst  # fresh columns: zeroed in place where not IPv4 (a multiply costs half a `where`)
    src4 *= is4
    dst4 *= is4
    l4 = l3 + _keep(ihl, is4, 40)
    # the IPv4 packet's end (segmentation offload writes a length of 0: the capture's end); a row
    # that is not IPv4 gets a bound nothing reads (IPv6 rows get theirs below)
    ip_end = l3 + tot
    ip_end += (tot == 0) * room
    np.minimum(ip_end, end, out=ip_end)
    first_frag = is4 & ((frag & 0x1FFF) == 0)

    # IPv6
    bad6 = is6 & (room < 40)
    is6 &= ~bad6
    malformed |= bad6
    v6_rows = is6.nonzero()[0]
    if v6_rows.size:
        r = v6_rows
        plen, src6, dst6 = heads.fields(l3[r] + 4, _V6_HEAD, _V6_TYPES, r)
        ends6 = np.minimum(end[r], l3[r] + 40 + plen)
        ip_end[r] = ends6
        nh = frag[r] >> 8
        pos = l3[r] + 40
        first6 = np.ones(len(r), dtype=bool)
        for _ in range(4):
            ext = among(nh, _V6_EXT)
            frag = nh == _V6_FRAG
            if not (ext.any() or frag.any()):
                break
            first6 &= ~(frag & ((g.be16(pos + 2) >> 3) != 0))
            step = np.where(ext, (g.u8(pos + 1) + 1) * 8, 8)
            nxt = g.u8(pos)
            moving = ext | frag
            nh = np.where(moving, nxt, nh)
            pos = np.where(moving, pos + step, pos)
        trunc = pos > ends6
        malformed[r[trunc]] = True
        first6 &= ~trunc
        proto[r] = nh
        l4[r] = pos
        first_frag[r] = first6
    else:
        src6 = dst6 = np.zeros(0, dtype="S16")

    # L4
    l4room = ip_end - l4
    need = _L4_ROOM.take(proto, mode="clip")  # no protocol (-1): entry 0, none
    bad_l4 = first_frag & (need > 0) & (l4room < need)
    malformed |= bad_l4
    first_frag = first_frag & ~bad_l4
    tcp = first_frag & (proto == PROTO_TCP)
    udp = first_frag & (proto == PROTO_UDP)
    icmp = first_frag & (need == 1)
    ports = tcp | udp
    sport, dport, doff, flags = heads.fields(l4, _L4_HEAD, _L4_TYPES)  # fresh columns, zeroed in place
    icmp_type = _keep(sport >> 8, icmp, -1)
    sport *= ports
    dport *= ports
    flags *= tcp
    doff >>= 4
    doff *= 4
    _keep(doff, tcp, 8)
    payload_off = l4 + doff
    payload_len = ip_end - payload_off
    np.maximum(payload_len, 0, out=payload_len)
    payload_len *= ports
    version = is4 * 4
    version[v6_rows] = 6
    return _Net(version, malformed, first_frag, proto, src4, dst4, v6_rows, src6, dst6, sport, dport, flags,
                icmp_type, l4, ip_end, payload_off, payload_len)


_NONE = np.zeros(0, dtype=np.int64)


def _decap(g: Gather, c: _Net) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of `c` that carry a tunnel we take apart, and their inner (IP offset, expected
    version, end). A row whose tunnel header does not check out (unknown GRE version or payload
    type, VXLAN without its I flag, Teredo without IPv6 inside) stays as it is."""
    udp = c.first_frag & (c.proto == PROTO_UDP)
    cand = c.first_frag & _TUNNEL_PROTO.take(c.proto, mode="clip")  # no protocol (-1): entry 0, not a tunnel
    cand |= udp & (_TUNNEL_PORT.take(c.dport) | (c.sport == UDP_TEREDO))
    rows = cand.nonzero()[0]
    if not rows.size:
        return _NONE, _NONE, _NONE, _NONE
    proto, l4, po, end = c.proto[rows], c.l4[rows], c.payload_off[rows], c.ip_end[rows]
    sport, dport = c.sport[rows], c.dport[rows]
    # IP in IP: the inner header right after the outer one
    etype = np.where(proto == PROTO_IPIP, ETH_IP4, np.where(proto == PROTO_IPV6, ETH_IP6, 0))
    pos = l4.copy()
    gre = proto == PROTO_GRE
    if gre.any():
        flags, ptype = g.be16(l4), g.be16(l4 + 2)
        seq = (flags & 0x1000) != 0
        hlen = 4 + 4 * ((flags >> 15) & 1) + 4 * ((flags >> 13) & 1) + 4 * seq  # checksum, key, sequence
        # ERSPAN I has no header (and no GRE sequence number), II an 8-byte one, III 12 bytes and
        # an 8-byte platform subheader when its O bit (last bit of the third word) is set
        erspan3 = 12 + 8 * (g.u8(l4 + hlen + 11) & 1)
        hlen += np.where(ptype == GRE_ERSPAN, 8 * seq, np.where(ptype == GRE_ERSPAN3, erspan3, 0))
        ptype = np.where((ptype == GRE_ERSPAN) | (ptype == GRE_ERSPAN3), ETH_BRIDGE, ptype)
        ok = gre & ((flags & 0x4007) == 0)  # version 0 without RFC 1701 routing
        etype = np.where(ok, ptype, etype)
        pos = np.where(gre, l4 + hlen, pos)
    vxlan = (dport == UDP_VXLAN) & ((g.u8(po) & 0x08) != 0)
    etype = np.where(vxlan, ETH_BRIDGE, etype)
    geneve = dport == UDP_GENEVE
    b0 = g.u8(po)
    etype = np.where(geneve & (b0 >> 6 == 0), g.be16(po + 2), etype)
    pos = np.where(vxlan, po + 8, np.where(geneve, po + 8 + (b0 & 0x3F) * 4, pos))
    teredo = ((dport == UDP_TEREDO) | (sport == UDP_TEREDO)) & ~(vxlan | geneve)
    if teredo.any():
        # optional authentication (type 1: id and authenticator lengths, nonce, confirmation)
        # then optional origin indication (type 0, 8 bytes), then the IPv6 packet
        auth = g.be16(po) == 1
        at = np.where(auth, po + 13 + g.u8(po + 2) + g.u8(po + 3), po)
        at = np.where(g.be16(at) == 0, at + 8, at)
        etype = np.where(teredo & (g.u8(at) >> 4 == 6), ETH_IP6, etype)
        pos = np.where(teredo, at, pos)
    bridged = etype == ETH_BRIDGE
    etype = np.where(bridged, g.be16(pos + 12), etype)
    pos = np.where(bridged, pos + 14, pos)
    known = among(etype, _INNER_ETYPES)
    rows, etype, pos, end = rows[known], etype[known], pos[known], end[known]
    l3, want, end = _ethertype(g, etype, pos, end)
    return rows, l3, want, end


def _merge(c: _Net, rows: np.ndarray, inner: _Net) -> None:
    """Put the inner columns of `rows` in place of their outer ones."""
    for name in _ROW_FIELDS:
        getattr(c, name)[rows] = getattr(inner, name)
    keep = ~among(c.v6_rows, rows)  # rows: ascending
    v6 = np.concatenate((c.v6_rows[keep], rows[inner.v6_rows]))
    order = np.argsort(v6, kind="stable")
    c.v6_rows = v6[order]
    c.src6 = np.concatenate((c.src6[keep], inner.src6))[order]
    c.dst6 = np.concatenate((c.dst6[keep], inner.dst6))[order]


def parse_batch(meta: np.ndarray, data: np.ndarray, linktype: int) -> Parsed:
    n = len(meta)
    g = Gather(data)
    start = meta[:, 2].astype(np.int64)
    end = start + meta[:, 3]
    heads = Heads(g, start)
    c = _ip_l4(heads, *_link(heads, linktype, end))
    level, rows = c, np.arange(n)
    for depth in range(MAX_TUNNEL_DEPTH + 1):
        sub, l3, want, inner_end = _decap(g, level)
        if not sub.size:
            break
        rows = rows[sub]
        if depth == MAX_TUNNEL_DEPTH:  # nested deeper than we follow: counted, not matched
            c.malformed[rows] = True
            c.first_frag[rows] = False
            break
        level = _ip_l4(Heads(g, l3), l3, want, inner_end)
        _merge(c, rows, level)

    return Parsed(
        n=n,
        sec=meta[:, 0],
        usec=meta[:, 1],
        version=c.version,
        malformed=c.malformed,
        first_frag=c.first_frag,
        proto=c.proto,
        src4=c.src4,
        dst4=c.dst4,
        v6_rows=c.v6_rows,
        src6=c.src6,
        dst6=c.dst6,
        sport=c.sport,
        dport=c.dport,
        tcp_flags=c.tcp_flags,
        icmp_type=c.icmp_type,
        payload_off=c.payload_off,
        payload_len=c.payload_len,
        heads=heads,
    )


def row_addresses(p: Parsed, rows: np.ndarray) -> tuple[list, list]:
    """Source and destination of each row as the aggregator keys them, not yet spelled out: IPv4
    as integers, IPv6 as 16 packed bytes (numpy's S16 drops trailing zero bytes: put back)."""
    src, dst = p.src4[rows].tolist(), p.dst4[rows].tolist()
    v6 = (p.version[rows] == 6).nonzero()[0]
    if v6.size:
        for i, a, b in zip(v6.tolist(), *addresses6(p, rows[v6]), strict=True):
            src[i], dst[i] = a, b
    return src, dst


def addresses6(p: Parsed, rows: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """Source and destination of IPv6 rows as `row_addresses` gives them."""
    pos = p.v6_rows.searchsorted(rows)
    return [a.ljust(16, b"\0") for a in p.src6[pos].tolist()], [b.ljust(16, b"\0") for b in p.dst6[pos].tolist()]
