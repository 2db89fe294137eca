"""Synthetic traffic as pure functions returning bytes, for tests, the demo and the benchmarks.

Builders produce complete, valid packets (lengths and checksums right) so that any parser - ours,
tcpdump, Wireshark - reads them the way it would read real traffic. `mixed_capture` writes a large
realistic capture fast: each flow kind is built once per call as a few dozen templates with the
builders, then replayed with other addresses and ephemeral ports patched in and the checksums
updated incrementally (RFC 1624), so the per-packet cost is a handful of slice assignments.
`MIXES` names the traffic mixes `maltrail bench` offers (flow kinds and their weights). The `unique`
mix is the exception: every name, path, User-Agent, SNI and client port in it is new, so nothing can
be replayed and `unique_capture` builds every packet (several times slower to generate).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import accumulate
from math import log
from pathlib import Path
from random import Random

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.mixes import MIXES, UniqueShares
from workers.protocols.quic import QUIC_V2, initial_keys

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58
AF_INET_BSD, AF_INET6_BSD = 2, 30  # DLT_NULL / DLT_LOOP address families (30: macOS/FreeBSD IPv6)

DEFAULT_HOST_MAC = b"\x02\x00\x00\x00\x00\x01"
DEFAULT_ROUTER_MAC = b"\x02\x00\x00\x00\x00\xfe"


# --- checksums and L3/L4 -----------------------------------------------------------------------


def _sum16(data: bytes) -> int:
    """One's-complement sum of 16-bit words modulo 0xFFFF (2**16 == 1 mod 0xFFFF, so the big-int
    remainder equals the folded sum without a Python loop)."""
    if len(data) % 2:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071) of `data`."""
    return ~_sum16(data) & 0xFFFF


def _addr(text: str) -> bytes:
    """Packed address; strict so that a typo fails loudly instead of building a wrong packet."""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int = 0,
         flags_frag: int = 0x4000, options: bytes = b"") -> bytes:
    """IPv4 packet; options are zero-padded to a 4-byte multiple as the IHL field requires."""
    options += b"\x00" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, flags_frag, ttl, proto,
                         0, _addr(src), _addr(dst)) + options
    return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, hop_limit: int = 64) -> bytes:
    """IPv6 packet (traffic class and flow label zero)."""
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hop_limit, _addr(src), _addr(dst)) + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    """The pseudo-header TCP, UDP and ICMPv6 checksums cover (v4 or v6 by address form)."""
    if ":" in src:
        return _addr(src) + _addr(dst) + struct.pack("!I3xB", length, proto)
    return _addr(src) + _addr(dst) + struct.pack("!xBH", proto, length)


def _with_checksum(segment: bytes, at: int, pseudo: bytes, zero_as_ffff: bool = False) -> bytes:
    value = checksum(pseudo + segment)
    if zero_as_ffff and value == 0:  # UDP: 0 means "no checksum", the same sum is sent as 0xFFFF
        value = 0xFFFF
    return segment[:at] + value.to_bytes(2, "big") + segment[at + 2:]


def _tcp(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes, seq: int, ack: int,
         window: int, options: bytes) -> bytes:
    options += b"\x01" * (-len(options) % 4)  # NOP padding
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(options) // 4) << 4, flags, window, 0, 0)
    segment = header + options + payload
    return _with_checksum(segment, 16, _pseudo(src, dst, PROTO_TCP, len(segment)))


def _udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    datagram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _with_checksum(datagram, 6, _pseudo(src, dst, PROTO_UDP, len(datagram)), zero_as_ffff=True)


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"", seq: int = 0, ack: int = 0,
         window: int = 64240, options: bytes = b"") -> bytes:
    """IPv4 TCP packet; `options` (NOP-padded) lets SYNs look like a real stack's."""
    return ipv4(src, dst, PROTO_TCP, _tcp(src, dst, sport, dport, flags, payload, seq, ack, window, options))


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv4 UDP packet."""
    return ipv4(src, dst, PROTO_UDP, _udp(src, dst, sport, dport, payload))


def icmp4(src: str, dst: str, type_: int, code: int, payload: bytes = b"") -> bytes:
    """IPv4 ICMP packet; `payload` is everything after the checksum (e.g. echo id, seq, data)."""
    return ipv4(src, dst, PROTO_ICMP, _with_checksum(bytes((type_, code, 0, 0)) + payload, 2, b""))


def tcp6(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"", seq: int = 0, ack: int = 0,
         window: int = 64240, options: bytes = b"") -> bytes:
    """IPv6 TCP packet."""
    return ipv6(src, dst, PROTO_TCP, _tcp(src, dst, sport, dport, flags, payload, seq, ack, window, options))


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 UDP packet."""
    return ipv6(src, dst, PROTO_UDP, _udp(src, dst, sport, dport, payload))


def icmp6(src: str, dst: str, type_: int, code: int, payload: bytes = b"") -> bytes:
    """IPv6 ICMPv6 packet; unlike ICMPv4 its checksum covers the v6 pseudo-header."""
    message = bytes((type_, code, 0, 0)) + payload
    return ipv6(src, dst, PROTO_ICMP6, _with_checksum(message, 2, _pseudo(src, dst, PROTO_ICMP6, len(message))))


# --- link layers -------------------------------------------------------------------------------


def _is_v6(l3: bytes) -> bool:
    return bool(l3) and l3[0] >> 4 == 6


def _mac(mac: bytes | str) -> bytes:
    return bytes.fromhex(mac.replace(":", "").replace("-", "")) if isinstance(mac, str) else mac


def _eth_header(vlan: int | list[int] | None, src_mac: bytes | str, dst_mac: bytes | str) -> bytes:
    """Addresses and VLAN tags: everything of an Ethernet header before the final EtherType."""
    tags = [] if vlan is None else [vlan] if isinstance(vlan, int) else list(vlan)
    header = _mac(dst_mac) + _mac(src_mac)
    for i, vid in enumerate(tags):
        tpid = 0x88A8 if i == 0 and len(tags) > 1 else 0x8100
        header += struct.pack("!HH", tpid, vid & 0x0FFF)
    return header


def ethernet(l3: bytes, vlan: int | list[int] | None = None, src_mac: bytes | str = DEFAULT_HOST_MAC,
             dst_mac: bytes | str = DEFAULT_ROUTER_MAC) -> bytes:
    """Ethernet II frame; `vlan=10` adds an 802.1Q tag, `vlan=[outer, inner]` a QinQ stack (0x88A8, 0x8100)."""
    return _eth_header(vlan, src_mac, dst_mac) + (b"\x86\xdd" if _is_v6(l3) else b"\x08\x00") + l3


def pppoe(l3: bytes, session_id: int = 1, src_mac: bytes | str = DEFAULT_HOST_MAC,
          dst_mac: bytes | str = DEFAULT_ROUTER_MAC, vlan: int | list[int] | None = None, pfc: bool = False,
          pad_to: int = 0) -> bytes:
    """PPPoE session frame (EtherType 0x8864), as on DSL uplinks. `pfc` writes the PPP protocol
    in its compressed 1-byte form (RFC 1661 protocol field compression), `vlan` tags the frame
    as `ethernet` does (ISPs often carry PPPoE in VLAN 7 or the like), `pad_to` pads the frame
    with zeros to that length as a NIC pads short frames (the PPPoE length field excludes it)."""
    proto = (0x0057 if _is_v6(l3) else 0x0021).to_bytes(1 if pfc else 2, "big")
    ppp = proto + l3
    session = struct.pack("!HBBHH", 0x8864, 0x11, 0x00, session_id, len(ppp))
    frame = _eth_header(vlan, src_mac, dst_mac) + session + ppp
    return frame.ljust(pad_to, b"\0")


def c_hdlc(l3: bytes) -> bytes:
    """Cisco HDLC (DLT 104): address (0x0F unicast), control 0, then the EtherType."""
    return struct.pack("!BBH", 0x0F, 0x00, 0x86DD if _is_v6(l3) else 0x0800) + l3


def _nla(kind: int, value: bytes) -> bytes:
    """A netlink attribute: little-endian length (header included) and type, padded to 4 bytes."""
    tlv = struct.pack("<HH", 4 + len(value), kind) + value
    return tlv + b"\0" * (-len(tlv) % 4)


def nflog(l3: bytes, prefix: bytes = b"maltrail") -> bytes:
    """Linux NFLOG (DLT 239), as `tcpdump -i nflog:N` writes it: family, version 0, group 0 (big
    endian), then attributes: the packet header (hardware protocol, hook), the log prefix
    (NUL-terminated, so its TLV is padded) and last the payload (type 9)."""
    v6 = _is_v6(l3)
    header = struct.pack("!BBH", 10 if v6 else 2, 0, 0)
    packet_hdr = _nla(1, struct.pack("!HBx", 0x86DD if v6 else 0x0800, 1))
    return header + packet_hdr + _nla(10, prefix + b"\0") + _nla(9, l3)


def sll(l3: bytes) -> bytes:
    """Linux cooked capture v1 (DLT 113): 16-byte header, protocol at bytes 14..16."""
    proto = 0x86DD if _is_v6(l3) else 0x0800
    return struct.pack("!HHH8sH", 0, 1, 6, DEFAULT_HOST_MAC, proto) + l3


def sll2(l3: bytes) -> bytes:
    """Linux cooked capture v2 (DLT 276): 20-byte header, protocol first."""
    proto = 0x86DD if _is_v6(l3) else 0x0800
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, DEFAULT_HOST_MAC) + l3


def null(l3: bytes) -> bytes:
    """BSD loopback (DLT 0): address family in the capturing host's byte order (little-endian here)."""
    return struct.pack("<I", AF_INET6_BSD if _is_v6(l3) else AF_INET_BSD) + l3


def loop(l3: bytes) -> bytes:
    """OpenBSD loopback (DLT 108): address family in network byte order."""
    return struct.pack("!I", AF_INET6_BSD if _is_v6(l3) else AF_INET_BSD) + l3


def raw(l3: bytes) -> bytes:
    """Raw IP (DLT 12 / 14 / 101): the packet itself."""
    return l3


# --- tunnels (outer packets, IPv4 or IPv6 by the form of `src`) ---------------------------------

ETH_BRIDGE, ETH_MPLS, GRE_ERSPAN, GRE_ERSPAN3 = 0x6558, 0x8847, 0x88BE, 0x22EB
UDP_VXLAN, UDP_GENEVE, UDP_TEREDO = 4789, 6081, 3544


def _outer(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return (ipv6 if ":" in src else ipv4)(src, dst, proto, payload)


def _outer_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return (udp6 if ":" in src else udp4)(src, dst, sport, dport, payload)


def _ethertype_of(inner: bytes) -> int:
    return 0x86DD if _is_v6(inner) else 0x0800


def gre(src: str, dst: str, inner: bytes, ptype: int | None = None, csum: bool = False, key: int | None = None,
        seq: int | None = None) -> bytes:
    """GRE (RFC 2784 / 2890) packet carrying `inner`: an IP packet unless `ptype` says otherwise
    (0x6558: an Ethernet frame); the optional checksum, key and sequence fields in that order."""
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    ptype = _ethertype_of(inner) if ptype is None else ptype
    fields = b"\0\0\0\0" if csum else b""
    fields += b"" if key is None else struct.pack("!I", key)
    fields += b"" if seq is None else struct.pack("!I", seq)
    message = struct.pack("!HH", flags, ptype) + fields + inner
    if csum:
        message = message[:4] + checksum(message).to_bytes(2, "big") + message[6:]
    return _outer(src, dst, 47, message)


def erspan(src: str, dst: str, frame: bytes, version: int, session: int = 1, platform: bool = False) -> bytes:
    """A mirrored Ethernet `frame` as a SPAN port sends it: ERSPAN type I (GRE 0x88BE, no
    sequence, no header), II (0x88BE, sequence, 8-byte header) or III (0x22EB, 12-byte header,
    `platform` adds the 8-byte platform subheader and sets the O bit)."""
    if version == 1:
        return gre(src, dst, frame, ptype=GRE_ERSPAN)
    if version == 2:
        header = struct.pack("!HHI", 0x1000, session & 0x3FF, 0)
        return gre(src, dst, header + frame, ptype=GRE_ERSPAN, seq=1)
    header = struct.pack("!HHIHH", 0x2000, session & 0x3FF, 0, 0, 1 if platform else 0)
    return gre(src, dst, header + (b"\x08" + b"\0" * 7 if platform else b"") + frame, ptype=GRE_ERSPAN3, seq=1)


def ipip(src: str, dst: str, inner: bytes) -> bytes:
    """IP-in-IP (protocol 4) or IPv6-in-IP (41) by the inner packet's version."""
    return _outer(src, dst, 41 if _is_v6(inner) else 4, inner)


def vxlan(src: str, dst: str, frame: bytes, vni: int = 42, sport: int = 49152) -> bytes:
    """VXLAN (RFC 7348): UDP to 4789, 8-byte header with the I flag, then the Ethernet `frame`."""
    return _outer_udp(src, dst, sport, UDP_VXLAN, struct.pack("!II", 0x08000000, vni << 8) + frame)


def geneve(src: str, dst: str, inner: bytes, ptype: int | None = None, options: bytes = b"", vni: int = 42) -> bytes:
    """Geneve (RFC 8926): UDP to 6081, 8-byte header, `options` (padded to 4 bytes), then `inner`:
    an IP packet unless `ptype` says otherwise (0x6558: Ethernet)."""
    options += b"\0" * (-len(options) % 4)
    ptype = _ethertype_of(inner) if ptype is None else ptype
    header = struct.pack("!BBHI", len(options) // 4, 0, ptype, vni << 8)
    return _outer_udp(src, dst, 49152, UDP_GENEVE, header + options + inner)


def teredo(src: str, dst: str, inner6: bytes, auth: tuple[bytes, bytes] | None = None, origin: bool = False,
           from_server: bool = False) -> bytes:
    """Teredo (RFC 4380): IPv6 in UDP port 3544, after an optional authentication header (client
    id and authenticator given, nonce and confirmation zero) and origin indication."""
    header = b""
    if auth is not None:
        header += struct.pack("!HBB", 1, len(auth[0]), len(auth[1])) + auth[0] + auth[1] + b"\0" * 9
    if origin:
        header += struct.pack("!HH4s", 0, 0xFFFF ^ 3544, bytes(b ^ 0xFF for b in _addr(src)))
    sport, dport = (UDP_TEREDO, 40000) if from_server else (40000, UDP_TEREDO)
    return _outer_udp(src, dst, sport, dport, header + inner6)


def mpls(inner: bytes, labels: Sequence[int] = (16,), control_word: bool = False) -> bytes:
    """Ethernet frame with an MPLS label stack (EtherType 0x8847) over an IP packet, or with
    `control_word` over a pseudowire control word and the Ethernet frame `inner`."""
    stack = b"".join(struct.pack("!I", (label << 12) | (i == len(labels) - 1) << 8 | 64)
                     for i, label in enumerate(labels))
    return _eth_header(None, DEFAULT_HOST_MAC, DEFAULT_ROUTER_MAC) + struct.pack("!H", ETH_MPLS) + stack + (
        b"\0" * 4 if control_word else b"") + inner


LINKTYPES: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "ethernet": (1, ethernet),
    "raw12": (12, raw),
    "raw14": (14, raw),
    "raw101": (101, raw),
    "chdlc": (104, c_hdlc),
    "nflog": (239, nflog),
    "sll": (113, sll),
    "sll2": (276, sll2),
    "null": (0, null),
    "loop": (108, loop),
}


# --- payloads ----------------------------------------------------------------------------------


def _qname(name: str) -> bytes:
    labels = [label.encode("idna") for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def dns_query(name: str, qtype: int = 1, txid: int = 0x1234) -> bytes:
    """Recursive DNS query for one name."""
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(name: str, answers_a: list[str], rcode: int = 0, txid: int = 0x1234, compress: bool = True) -> bytes:
    """DNS response with A records (AAAA for IPv6 text); owners are a 0xC00C pointer when `compress`.

    The question type is AAAA when the first answer is IPv6, else A."""
    qtype = 28 if answers_a and ":" in answers_a[0] else 1
    out = struct.pack("!HHHHHH", txid, 0x8180 | (rcode & 0xF), 1, len(answers_a), 0, 0)
    out += _qname(name) + struct.pack("!HH", qtype, 1)
    owner = b"\xc0\x0c" if compress else _qname(name)
    for answer in answers_a:
        rdata = _addr(answer)
        out += owner + struct.pack("!HHIH", 28 if len(rdata) == 16 else 1, 1, 300, len(rdata)) + rdata
    return out


def http_request(method: str, path: str, host: str | None = None, user_agent: str | None = None,
                 headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """HTTP/1.1 request; Host is omitted when None (as in HTTP/1.0-style or hostile requests)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_response(status: int = 200, content_type: str = "text/html", body: bytes = b"") -> bytes:
    """HTTP/1.1 response with a Content-Length body."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    head = (f"HTTP/1.1 {status} {reason}\r\nServer: nginx\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode("latin-1") + body


def _tls_record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def _handshake(msg_type: int, body: bytes) -> bytes:
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


def _ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


_CIPHERS = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
            0x009D, 0x002F, 0x0035)
_SIG_ALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def tls_client_hello(sni: str) -> bytes:
    """TLS 1.3 ClientHello record shaped like a browser's; random values derive from the SNI so the
    function stays pure."""
    seed = hashlib.sha256(sni.encode()).digest()
    host = sni.encode("idna")
    groups = struct.pack("!HHHH", 6, 0x001D, 0x0017, 0x0018)
    alpn = b"".join(bytes((len(p),)) + p for p in (b"h2", b"http/1.1"))
    extensions = b"".join((
        _ext(0, struct.pack("!HBH", len(host) + 3, 0, len(host)) + host),  # server_name
        _ext(23, b""),  # extended_master_secret
        _ext(0xFF01, b"\x00"),  # renegotiation_info
        _ext(10, groups),  # supported_groups
        _ext(11, b"\x01\x00"),  # ec_point_formats
        _ext(35, b""),  # session_ticket
        _ext(16, struct.pack("!H", len(alpn)) + alpn),  # ALPN
        _ext(5, b"\x01\x00\x00\x00\x00"),  # status_request
        _ext(13, struct.pack(f"!H{len(_SIG_ALGS)}H", 2 * len(_SIG_ALGS), *_SIG_ALGS)),  # signature_algorithms
        _ext(51, struct.pack("!HHH", 36, 0x001D, 32) + hashlib.sha256(seed).digest()),  # key_share (x25519)
        _ext(45, b"\x01\x01"),  # psk_key_exchange_modes
        _ext(43, b"\x04\x03\x04\x03\x03"),  # supported_versions: 1.3, 1.2
    ))
    # padding (RFC 7685) as browsers add it: handshakes of 256..511 bytes upset some middleboxes
    unpadded = 4 + 2 + 32 + 33 + 2 + 2 * len(_CIPHERS) + 2 + 2 + len(extensions)
    if 256 <= unpadded < 512:
        extensions += _ext(21, bytes(max(0, 512 - unpadded - 4)))
    body = (b"\x03\x03" + seed + b"\x20" + hashlib.sha256(seed + b"sid").digest()
            + struct.pack(f"!H{len(_CIPHERS)}H", 2 * len(_CIPHERS), *_CIPHERS) + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)
    return _tls_record(0x16, _handshake(1, body), version=0x0301)


def tls_server_hello() -> bytes:
    """TLS 1.3 ServerHello record (TLS_AES_128_GCM_SHA256, x25519)."""
    extensions = _ext(43, b"\x03\x04") + _ext(51, struct.pack("!HH", 0x001D, 32) + hashlib.sha256(b"srv").digest())
    body = (b"\x03\x03" + hashlib.sha256(b"server random").digest() + b"\x20" + hashlib.sha256(b"sid").digest()
            + b"\x13\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    return _tls_record(0x16, _handshake(2, body))


# --- realistic mixed capture -------------------------------------------------------------------

_T0_US = 1_700_000_000 * 1_000_000
_MEAN_GAP_US = 12.0  # + 1 us floor: ~77k packets per second of capture time
_CONCURRENT = 48  # flows interleaved at any time
_TRAIL_EVERY = 200  # one flow in 200 (0.5 %) involves a trail address
_TEMPLATES = 64  # variants built per flow kind
_WHITELISTED = frozenset({"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9"})
_WORDS = ("news", "shop", "cloud", "media", "mail", "static", "portal", "travel", "games", "weather", "bank",
          "photo", "music", "video", "sport", "market", "forum", "books", "health", "auto")
_TLDS = ("com", "net", "org", "io", "de", "co.uk", "fr", "info")
_UAS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
        "Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
        "Safari/605.1.15",
        "curl/8.4.0", "Microsoft-CryptoAPI/10.0")
_PATHS = (("/", "text/html"), ("/index.html", "text/html"), ("/static/app.js", "application/javascript"),
          ("/img/logo.png", "image/png"), ("/api/v1/items?page=2", "application/json"),
          ("/css/site.css", "text/css"), ("/favicon.ico", "image/x-icon"), ("/updates/check.xml", "text/xml"))
_SCAN_PORTS = (22, 23, 80, 443, 445, 1433, 2323, 3306, 3389, 5555, 5900, 6379, 8080, 9200)
_V4_FIRST_OCTETS = (13, 23, 31, 34, 35, 45, 46, 52, 54, 62, 64, 69, 74, 77, 81, 85, 91, 93, 95, 104, 116, 142, 151,
                    157, 163, 176, 178, 185, 188, 194, 199, 212, 213, 217)
_V6_SERVER_PREFIXES = ("2a00:1450:4001:81b", "2606:2800:220:1", "2a03:2880:f12f:83", "2a02:26f0:fe",
                       "2001:4860:4802:32")

_Link = Callable[[bytes], bytes]
_Packet = tuple[bytes, int]  # (IP packet, direction: 0 initiator -> responder, 1 back)


@dataclass(frozen=True)
class _Template:
    """One pre-built flow: frames plus where its initiator/responder addresses, ephemeral port and
    checksums sit, and the sums of the original values for the incremental checksum update."""

    frames: tuple[tuple[bytes, int, int, int, int], ...]  # frame, direction, port offset (-1), ip csum, l4 csum
    addr_off: int  # src address; dst follows immediately
    ipck_off: int  # -1 for IPv6
    l4ck_off: int  # -1 when the L4 checksum does not cover the addresses and no port is patched (ICMPv4)
    addr_sum: int
    port: int  # -1 when the flow has no ports (ICMP)


@dataclass
class _Stats:
    """What `mixed_capture` reports, counted as packets are emitted (a capture may cut flows short)."""

    flows: int = 0
    trail_syns: dict[str, int] = field(default_factory=dict)
    trail_syns_from: dict[str, int] = field(default_factory=dict)
    trail_udp: dict[str, int] = field(default_factory=dict)


def _template(link: _Link, packets: list[_Packet], port: int) -> _Template:
    """Frame a flow built with placeholder addresses and record the patch points."""
    l3 = packets[0][0]
    v6 = _is_v6(l3)
    hl = link(l3).index(l3)  # header length; a link layer may also pad after the packet (NFLOG)
    proto = l3[6] if v6 else l3[9]
    l4 = hl + (40 if v6 else (l3[0] & 0x0F) * 4)
    has_port = proto in (PROTO_TCP, PROTO_UDP)
    ck_at = {PROTO_TCP: 16, PROTO_UDP: 6}.get(proto, 2)
    frames = []
    for pkt, direction in packets:
        frame = link(pkt)
        ipck = -1 if v6 else int.from_bytes(frame[hl + 10:hl + 12], "big")
        port_off = l4 + 2 * direction if has_port else -1
        frames.append((frame, direction, port_off, ipck, int.from_bytes(frame[l4 + ck_at:l4 + ck_at + 2], "big")))
    addr_off = hl + (8 if v6 else 12)
    alen = 16 if v6 else 4
    return _Template(frames=tuple(frames), addr_off=addr_off, ipck_off=-1 if v6 else hl + 10,
                     l4ck_off=-1 if proto == PROTO_ICMP else l4 + ck_at,
                     addr_sum=_sum16(l3[addr_off - hl:addr_off - hl + 2 * alen]), port=port if has_port else -1)


def _replay(tpl: _Template, a: bytes, b: bytes, port: int, stats: _Stats) -> Iterator[bytes]:
    """The template's frames between initiator `a` and responder `b` with ephemeral `port`."""
    stats.flows += 1
    ab, ba, pb = a + b, b + a, port.to_bytes(2, "big")
    d_ip = (_sum16(ab) - tpl.addr_sum) % 0xFFFF
    d_l4 = (d_ip + (port - tpl.port if tpl.port >= 0 else 0)) % 0xFFFF
    ao, ae = tpl.addr_off, tpl.addr_off + len(ab)
    ipo, l4o = tpl.ipck_off, tpl.l4ck_off
    for data, direction, port_off, ipck, l4ck in tpl.frames:
        f = bytearray(data)
        f[ao:ae] = ba if direction else ab
        if port_off >= 0:
            f[port_off:port_off + 2] = pb
        if ipo >= 0:
            f[ipo:ipo + 2] = ((ipck - d_ip) % 0xFFFF or 0xFFFF).to_bytes(2, "big")
        if l4o >= 0:
            f[l4o:l4o + 2] = ((l4ck - d_l4) % 0xFFFF or 0xFFFF).to_bytes(2, "big")
        yield f


def _syn_options(mss: int, rng: Random) -> bytes:
    """A Linux SYN's options: MSS, SACK permitted, timestamps, NOP, window scale 7."""
    return struct.pack("!BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10, rng.getrandbits(32), 0, 1, 3, 3, 7)


def _tcp_flow(a: str, b: str, sport: int, dport: int, messages: list[tuple[int, bytes]], rng: Random,
              mss: int = 0, ack_every: int = 2) -> list[_Packet]:
    """Handshake, `messages` segmented at the MSS with an ACK every `ack_every` segments (2: delayed
    ACKs; more: a GRO receiver's stretch ACKs), then a FIN exchange."""
    v6 = ":" in a
    build, mss = (tcp6, mss or 1440) if v6 else (tcp4, mss or 1460)
    ends = ((a, b, sport, dport), (b, a, dport, sport))
    seq = [rng.getrandbits(32), rng.getrandbits(32)]
    out: list[_Packet] = []

    def send(d: int, flags: int, payload: bytes = b"", options: bytes = b"") -> None:
        s, t, sp, dp = ends[d]
        ack = seq[1 - d] if flags & ACK else 0
        out.append((build(s, t, sp, dp, flags, payload, seq=seq[d], ack=ack, options=options), d))
        seq[d] = (seq[d] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF

    send(0, SYN, options=_syn_options(mss, rng))
    send(1, SYN | ACK, options=_syn_options(mss, rng))
    send(0, ACK)
    for d, data in messages:
        segments = [data[i:i + mss] for i in range(0, len(data), mss)]
        for k, segment in enumerate(segments):
            last = k == len(segments) - 1
            send(d, ACK | (PSH if last else 0), segment)
            if last or k % ack_every == ack_every - 1:
                send(1 - d, ACK)
    send(0, FIN | ACK)
    send(1, FIN | ACK)
    send(0, ACK)
    return out


def _router_frame(link: _Link, ethernet_link: bool, l3: bytes) -> bytes:
    """Link framing; on Ethernet the MACs follow the direction as behind a real router."""
    if not ethernet_link:
        return link(l3)
    inside = (l3[8] == 0xFD) if _is_v6(l3) else (l3[12] == 10)
    if inside:
        return ethernet(l3, src_mac=DEFAULT_HOST_MAC, dst_mac=DEFAULT_ROUTER_MAC)
    return ethernet(l3, src_mac=DEFAULT_ROUTER_MAC, dst_mac=DEFAULT_HOST_MAC)


# --- traffic where everything is new (issue 12) --------------------------------------------------


_PORTS = 65536 - 1024  # client ports used: 1024..65535, each once per client address block
_PORT_STEP = 40_501  # coprime to _PORTS (2**10 * 63): the walk visits every port before repeating
_OPEN_FLOWS = {"dns": 8, "http": 4, "tls": 4, "quic": 4, "bulk": 256}  # flows of each kind interleaved
_BULK_PACKETS = (200, 3000)  # a long flow's remaining length when the capture sees it
_UDP_PORTS = (3478, 51820, 5004, 5060, 1194, 27015)
_LANGS = ("en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.6", "fr-FR,fr;q=0.8,en-US;q=0.5", "es-ES,es;q=0.9",
          "ja-JP,ja;q=0.9,en;q=0.4", "pt-BR,pt;q=0.9,en;q=0.7", "en-GB,en;q=0.9")
_ACCEPTS = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
            "application/json, text/plain, */*", "*/*", "image/avif,image/webp,image/png,image/*;q=0.8,*/*;q=0.5")


def _token(number: int, rng: Random, letters: int = 3) -> str:
    """A name fragment that is new for every `number` (its base-36 digits) with seeded letters around it."""
    digits = ""
    while True:
        number, d = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not number:
            break
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=letters)) + digits


def _user_agent(n: int, rng: Random) -> str:
    """A browser's User-Agent of one of several families, its version numbers carrying `n` so it is new."""
    a, b = n % 1000, n // 1000
    family = rng.randrange(6)
    major = rng.randint(110, 131)
    if family == 0:
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.{5000 + a}.{b} Safari/537.36")
    if family == 1:
        return (f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{major}.0.0.0 Safari/537.36 Edg/{major}.0.{2000 + a}.{b}")
    if family == 2:
        return (f"Mozilla/5.0 (X11; Linux x86_64; rv:{major}.0) Gecko/20100101 Firefox/{major}.{a}.{b}")
    if family == 3:
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{rng.randint(0, 6)} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Version/17.{a} Mobile/15E{b} Safari/604.1")
    if family == 4:
        return (f"Mozilla/5.0 (Linux; Android 14; SM-S9{rng.randint(10, 28)}B) AppleWebKit/537.36 (KHTML, like "
                f"Gecko) Chrome/{major}.0.{6000 + a}.{b} Mobile Safari/537.36")
    return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{a % 8 + 15}.{a}.{b} Safari/605.1.15")


def unique_name(n: int, rng: Random) -> str:
    """DNS name number `n`: new for every `n` (its base-36 digits end the first label)."""
    prefix = rng.choice(("www.", "api.", "cdn.", "img.", "", "", "m.", "static."))
    return f"{prefix}{rng.choice(_WORDS)}-{_token(n, rng)}.{rng.choice(_TLDS)}"


def unique_http_request(n: int, host: str, rng: Random) -> bytes:
    """Request number `n` of a browser: a ~60-character path with a query string and a User-Agent that
    both carry `n` (so they are new), and the six headers browsers send (Host, User-Agent, Accept,
    Accept-Language, Cookie, Referer)."""
    query = f"?id={_token(n, rng, 4)}&ref={rng.getrandbits(40):x}&utm_source={rng.choice(_WORDS)}"
    path = f"/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}/{_token(n, rng, 6)}.html"
    path += "x" * max(0, 60 - len(path) - len(query)) + query
    headers = {"Accept": rng.choice(_ACCEPTS), "Accept-Language": rng.choice(_LANGS),
               "Cookie": f"sid={rng.getrandbits(96):024x}; theme={rng.choice(('dark', 'light'))}",
               "Referer": f"https://{host}/{rng.choice(_WORDS)}/"}
    return http_request("GET", path, host=host, user_agent=_user_agent(n, rng), headers=headers)


class _Unique:
    """State of one `unique` capture: counters that make every name, path, User-Agent, SNI and client
    port new, the seeded RNG for everything else, and the open flows of each kind."""

    def __init__(self, seed: int, shares: UniqueShares, link: _Link, ethernet_link: bool,
                 trail_ips: Sequence[str], trail_names: Sequence[str]) -> None:
        self.rng = rng = Random(seed)
        self.link, self.ethernet_link = link, ethernet_link
        self.stats = _Stats(trail_syns=dict.fromkeys(trail_ips, 0), trail_syns_from=dict.fromkeys(trail_ips, 0),
                            trail_udp=dict.fromkeys(trail_ips, 0))
        self.trail_ips, self.trail_names = list(trail_ips), list(trail_names)
        self.flows = self.names = self.requests = self.dns_flows = self.planted = self.syns = 0
        self.port_base = rng.randrange(_PORTS)
        kinds = shares.kinds()
        self.ipv6 = shares.ipv6
        self.kind_names = list(kinds)
        self.cum = list(accumulate(kinds.values()))
        self.builders: dict[str, Callable[[bool], list[_Packet]]] = {
            "dns": self._dns, "http": self._http, "tls": self._tls, "quic": self._quic, "syn": self._syn,
            "udp": self._udp, "icmp": self._icmp, "bulk": self._bulk}
        self.open: dict[str, list[list[_Packet]]] = {k: [] for k in kinds}
        self.body = rng.randbytes(1 << 16)  # bulk payload source: sliced at random offsets

    # addresses, ports and names

    def _client(self, v6: bool, flow: int) -> tuple[str, int]:
        """A client address and port pair never used before: ports walk 1024..65535, and every time the
        walk wraps the clients move to another address block."""
        block, i = divmod(flow, _PORTS)
        port = 1024 + (self.port_base + i * _PORT_STEP) % _PORTS
        r = self.rng.randrange
        if v6:
            return f"fd00:{block + 0x100:x}::{r(1, 0xFFFF):x}:{r(1, 0xFFFF):x}", port
        return f"10.{block % 200 + 1}.{r(0, 256)}.{r(1, 255)}", port

    def _server(self, v6: bool) -> str:
        r = self.rng.randrange
        if v6:
            return f"{self.rng.choice(_V6_SERVER_PREFIXES)}::{r(1, 0xFFFF):x}"
        return f"{self.rng.choice(_V4_FIRST_OCTETS)}.{r(0, 256)}.{r(0, 256)}.{r(1, 255)}"

    def _endpoints(self, v6: bool) -> tuple[str, int, str]:
        self.flows += 1
        return (*self._client(v6, self.flows - 1), self._server(v6))

    def _name(self) -> str:
        """A DNS name never seen before in this capture (the counter is in its first label)."""
        self.names += 1
        return unique_name(self.names, self.rng)

    # flows, as IP packets with their direction

    def _dns(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, port, _ = self._endpoints(v6)
        resolver = "fd00:10::53" if v6 else rng.choice(("10.0.0.53", "10.0.0.54"))
        self.dns_flows += 1
        if self.trail_names and self.dns_flows % 500 == 250 and self.planted < len(self.trail_names):
            name = self.trail_names[self.planted]  # a listed name, each asked once
            self.planted += 1
        else:
            name = self._name()
        txid, roll = rng.getrandbits(16), rng.random()
        udp = udp6 if v6 else udp4
        if roll < 0.1:
            qtype, answers, rcode = 1, [], 3
        elif roll < 0.3:
            qtype, answers, rcode = 28, [self._server(True) for _ in range(rng.randint(1, 2))], 0
        else:
            qtype, answers, rcode = 1, [self._server(False) for _ in range(rng.randint(1, 4))], 0
        return [(udp(client, resolver, port, 53, dns_query(name, qtype, txid)), 0),
                (udp(resolver, client, 53, port, dns_response(name, answers, rcode, txid)), 1)]

    def _http(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, port, server = self._endpoints(v6)
        self.requests += 1
        request = unique_http_request(self.requests, self._name(), rng)
        body = (b"<p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>\n" * 40)[:rng.randint(300, 2500)]
        return _tcp_flow(client, server, port, 80, [(0, request), (1, http_response(200, "text/html", body))], rng)

    def _tls(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, port, server = self._endpoints(v6)

        def data(size: int) -> bytes:
            return _tls_record(0x17, rng.randbytes(size))

        ccs = _tls_record(0x14, b"\x01")
        messages = [(0, tls_client_hello(self._name())), (1, tls_server_hello() + ccs + data(rng.randint(2000, 4500))),
                    (0, ccs + data(53) + data(rng.randint(150, 700))),
                    (1, b"".join(data(16384) for _ in range(rng.randint(1, 4)))), (0, data(19))]
        return _tcp_flow(client, server, port, 443, messages, rng)

    def _quic(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, port, server = self._endpoints(v6)
        udp = udp6 if v6 else udp4
        dcid, scid = rng.randbytes(8), rng.randbytes(8)
        answer = b"\xc1\x00\x00\x00\x01\x08" + scid + b"\x08" + dcid + b"\x00" + rng.randbytes(1200)
        return [(udp(client, server, port, 443, quic_initial(self._name(), dcid=dcid, scid=scid)), 0),
                (udp(server, client, 443, port, answer), 1)]

    def _syn(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        self.syns += 1
        listed = bool(self.trail_ips) and self.syns % 50 == 25  # a connection attempt to a listed address
        client, port, server = self._endpoints(v6 and not listed)
        if listed:
            server = self.trail_ips[self.syns // 50 % len(self.trail_ips)]
            self.stats.trail_syns[server] += 1
            v6 = False
        build = tcp6 if v6 else tcp4
        dport = rng.choice((80, 443, 443, 8080, 22, 25))
        return [(build(client, server, port, dport, SYN, seq=rng.getrandbits(32),
                       options=_syn_options(1440 if v6 else 1460, rng)), 0)]

    def _udp(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, port, server = self._endpoints(v6)
        return [((udp6 if v6 else udp4)(client, server, port, rng.choice(_UDP_PORTS),
                                        rng.randbytes(rng.randint(40, 300))), 0)]

    def _icmp(self, v6: bool) -> list[_Packet]:
        rng = self.rng
        client, _, server = self._endpoints(v6)
        body = struct.pack("!HH", rng.getrandbits(16), 1) + rng.randbytes(56)
        if v6:
            return [(icmp6(client, server, 128, 0, body), 0), (icmp6(server, client, 129, 0, body), 1)]
        return [(icmp4(client, server, 8, 0, body), 0), (icmp4(server, client, 0, 0, body), 1)]

    def _bulk(self, v6: bool) -> list[_Packet]:
        """The rest of a long download already under way (no handshake): full data segments from the
        server, an ACK every few, and the FIN exchange at the end."""
        rng = self.rng
        client, port, server = self._endpoints(v6)
        build, mss = (tcp6, 1440) if v6 else (tcp4, 1460)
        seq_c, seq_s = rng.getrandbits(32), rng.getrandbits(32)
        out: list[_Packet] = []
        for k in range(rng.randint(*_BULK_PACKETS) * 2 // 3):
            size = mss if rng.random() < 0.9 else rng.randint(200, mss)
            at = rng.randrange(len(self.body) - size)
            out.append((build(server, client, 443, port, ACK, self.body[at:at + size], seq=seq_s, ack=seq_c), 1))
            seq_s = (seq_s + size) & 0xFFFFFFFF
            if k % 2:
                out.append((build(client, server, port, 443, ACK, seq=seq_c, ack=seq_s), 0))
        out += [(build(client, server, port, 443, FIN | ACK, seq=seq_c, ack=seq_s), 0),
                (build(server, client, 443, port, FIN | ACK, seq=seq_s, ack=seq_c + 1), 1),
                (build(client, server, port, 443, ACK, seq=seq_c + 1, ack=seq_s + 1), 0)]
        return out

    def next_packet(self) -> bytes:
        """One framed packet: its kind drawn by share, then the next packet of one of that kind's open
        flows (a new flow when fewer than `_OPEN_FLOWS` are open), so the shares hold per packet."""
        r = self.rng.random
        kind = self.kind_names[min(bisect(self.cum, r() * self.cum[-1]), len(self.kind_names) - 1)]
        flows = self.open[kind]
        if len(flows) < _OPEN_FLOWS.get(kind, 1):
            flows.append(self.builders[kind](r() < self.ipv6)[::-1])  # reversed: pop() takes the next
        i = int(r() * len(flows))
        flow = flows[i]
        packet, _ = flow.pop()
        if not flow:
            flows[i] = flows[-1]
            flows.pop()
        return self._frame(packet)

    def _frame(self, l3: bytes) -> bytes:
        return _router_frame(self.link, self.ethernet_link, l3)


BULK_FRAME = 1400
_BULK_ACK_EVERY = 16
_BULK_TEMPLATES = 16


class _Mix:
    """State of one `mixed_capture` call: seeded RNG, address pools and flow templates."""

    def __init__(self, seed: int, trail_ips: Sequence[str], link: _Link, ethernet_link: bool,
                 weights: dict[str, int] | None = None) -> None:
        self.rng = rng = Random(seed)
        self.trail_ips = list(trail_ips)
        self.stats = _Stats(trail_syns=dict.fromkeys(trail_ips, 0), trail_syns_from=dict.fromkeys(trail_ips, 0),
                            trail_udp=dict.fromkeys(trail_ips, 0))
        self.link = link
        self.ethernet_link = ethernet_link
        avoid = {ipaddress.ip_address(ip) for ip in trail_ips} | {ipaddress.ip_address(ip) for ip in _WHITELISTED}
        self.clients4 = self._pool(256, avoid, lambda: f"10.0.{rng.randint(1, 255)}.{rng.randint(1, 254)}")
        self.clients6 = self._pool(64, avoid, lambda: f"fd00:10::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}")
        self.servers4 = self._pool(192, avoid, lambda: f"{rng.choice(_V4_FIRST_OCTETS)}.{rng.randint(0, 255)}."
                                                        f"{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        self.servers6 = self._pool(32, avoid, lambda: f"{rng.choice(_V6_SERVER_PREFIXES)}::{rng.randint(1, 0xFFFF):x}")
        self.resolvers4 = [_addr("10.0.0.53"), _addr("10.0.0.54")]
        self.resolvers6 = [_addr("fd00:10::53")]
        self.collectors = [_addr("10.0.0.10")]
        c4, c6, s4, s6 = "10.0.0.1", "fd00:10::1", "93.184.216.34", "2606:2800:220:1::1"
        weights = MIXES["mixed"] if weights is None else weights
        spoofed = (self._pool(4096, avoid, lambda: str(ipaddress.IPv4Address(rng.getrandbits(32))))
                   if weights.get("synflood") else [])
        kinds: dict[str, tuple[Callable[[int], list[_Packet]], list[bytes], list[bytes], int]] = {
            "dns4": (lambda p: self._dns(c4, "10.0.0.53", p), self.clients4, self.resolvers4, _TEMPLATES),
            "dns6": (lambda p: self._dns(c6, "fd00:10::53", p), self.clients6, self.resolvers6, _TEMPLATES),
            "http": (lambda p: self._http(c4, s4, p), self.clients4, self.servers4, _TEMPLATES),
            "tls4": (lambda p: self._tls(c4, s4, p), self.clients4, self.servers4, _TEMPLATES),
            "tls6": (lambda p: self._tls(c6, s6, p), self.clients6, self.servers6, _TEMPLATES),
            "quic4": (lambda p: self._quic(c4, s4, p), self.clients4, self.servers4, _TEMPLATES),
            "quic6": (lambda p: self._quic(c6, s6, p), self.clients6, self.servers6, _TEMPLATES),
            "scan": (lambda p: self._scan(s4, c4, p), self.servers4, self.clients4, _TEMPLATES),
            "ntp": (lambda p: self._ntp(c4, s4, p), self.clients4, self.servers4, _TEMPLATES),
            "syslog": (lambda p: self._syslog(c4, "10.0.0.10", p), self.clients4, self.collectors, _TEMPLATES),
            "ping": (lambda p: self._ping(c4, s4), self.clients4, self.servers4, _TEMPLATES),
            "bulk": (lambda p: self._bulk(c4, s4, p), self.clients4, self.servers4, _BULK_TEMPLATES),
            "synflood": (lambda p: self._syn(s4, c4, p), spoofed, self.servers4, _TEMPLATES),
        }
        unknown = set(weights) - set(kinds)
        if unknown:
            raise ValueError(f"unknown flow kind {sorted(unknown)[0]!r}")
        # (weight, templates, initiators, responders), built in this order so a mix is deterministic
        self.kinds = [(weights[name], self._templates(build, count), initiators, responders)
                      for name, (build, initiators, responders, count) in kinds.items() if weights.get(name)]
        self.cum_weights = list(accumulate(kind[0] for kind in self.kinds))

    def _pool(self, size: int, avoid: set[ipaddress.IPv4Address | ipaddress.IPv6Address],
              draw: Callable[[], str]) -> list[bytes]:
        out: dict[bytes, None] = {}  # ordered and unique, so the pool is deterministic
        while len(out) < size:
            ip = ipaddress.ip_address(draw())
            if ip not in avoid and (ip.is_private or ip.is_global):
                out[ip.packed] = None
        return list(out)

    def _frame(self, l3: bytes) -> bytes:
        return _router_frame(self.link, self.ethernet_link, l3)

    def _templates(self, build: Callable[[int], list[_Packet]], count: int = _TEMPLATES) -> list[_Template]:
        out = []
        for _ in range(count):
            port = self._eph()
            out.append(_template(self._frame, build(port), port))
        return out

    def _eph(self) -> int:
        """Linux's default ephemeral range; `random()` arithmetic is several times cheaper than `randint`."""
        return 32768 + int(self.rng.random() * 28232)

    def _name(self) -> str:
        rng = self.rng
        prefix = rng.choice(("www.", "api.", "cdn.", "img.", ""))
        return f"{prefix}{rng.choice(_WORDS)}{rng.randint(1, 999)}.{rng.choice(_TLDS)}"

    def _dns(self, client: str, resolver: str, port: int) -> list[_Packet]:
        rng, name = self.rng, self._name()
        udp = udp6 if ":" in client else udp4
        txid, roll = rng.getrandbits(16), rng.random()
        if roll < 0.1:
            qtype, answers, rcode = 1, [], 3  # NXDOMAIN
        elif roll < 0.3:
            qtype, answers, rcode = 28, [str(ipaddress.ip_address(a)) for a in rng.sample(self.servers6, 2)], 0
        else:
            qtype, answers, rcode = 1, [str(ipaddress.ip_address(a)) for a in rng.sample(self.servers4, 4)], 0
            answers = answers[:rng.randint(1, 4)]
        return [(udp(client, resolver, port, 53, dns_query(name, qtype, txid)), 0),
                (udp(resolver, client, 53, port, dns_response(name, answers, rcode, txid)), 1)]

    def _body(self, content_type: str) -> bytes:
        rng = self.rng
        size = int(rng.choice((180, 400, 900, 1800, 3500, 7000, 14000)) * rng.uniform(0.7, 1.3))
        if content_type.startswith("image/"):
            return rng.randbytes(size)
        return (b"<p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>\n" * (size // 64 + 1))[:size]

    def _http(self, client: str, server: str, port: int) -> list[_Packet]:
        rng, host, ua = self.rng, self._name(), self.rng.choice(_UAS)
        messages = []
        for _ in range(rng.choice((1, 1, 2))):
            path, ctype = rng.choice(_PATHS)
            messages.append((0, http_request("GET", path, host=host, user_agent=ua,
                                             headers={"Accept": "*/*", "Accept-Encoding": "gzip, deflate",
                                                      "Connection": "keep-alive"})))
            messages.append((1, http_response(200, ctype, self._body(ctype))))
        return _tcp_flow(client, server, port, 80, messages, rng)

    def _tls(self, client: str, server: str, port: int) -> list[_Packet]:
        rng = self.rng

        def data(size: int) -> bytes:
            return _tls_record(0x17, rng.randbytes(size))  # encrypted application data

        ccs = _tls_record(0x14, b"\x01")
        messages = [(0, tls_client_hello(self._name())),
                    (1, tls_server_hello() + ccs + data(rng.randint(2000, 4500))),
                    (0, ccs + data(53) + data(rng.randint(150, 700))),
                    (1, data(rng.randint(200, 300)) + data(len(self._body("text/html")) + 40))]
        if rng.random() < 0.4:
            messages += [(0, data(rng.randint(100, 500))), (1, data(rng.randint(100, 6000)))]
        messages.append((0, data(19)))  # close_notify
        return _tcp_flow(client, server, port, 443, messages, rng)

    def _quic(self, client: str, server: str, port: int) -> list[_Packet]:
        rng = self.rng
        udp = udp6 if ":" in client else udp4
        dcid, scid = rng.randbytes(8), rng.randbytes(8)

        def long(first: int, cid: bytes, size: int) -> bytes:
            head = bytes((first,)) + b"\x00\x00\x00\x01" + b"\x08" + cid + b"\x08" + scid + b"\x00"
            return head + rng.randbytes(size - len(head))

        def short(size: int) -> bytes:
            return bytes((0x40 | rng.getrandbits(6),)) + dcid + rng.randbytes(size - 9)

        out = [(udp(client, server, port, 443, long(0xC3, dcid, 1250)), 0),
               (udp(server, client, 443, port, long(0xC1, scid, 1232)), 1),
               (udp(server, client, 443, port, long(0xE1, scid, rng.randint(600, 1232))), 1),
               (udp(client, server, port, 443, long(0xE3, dcid, rng.randint(80, 120))), 0)]
        for _ in range(rng.randint(2, 8)):
            out.append((udp(server, client, 443, port, short(rng.randint(900, 1350))), 1))
            if rng.random() < 0.6:
                out.append((udp(client, server, port, 443, short(rng.randint(35, 60))), 0))
        return out

    def _scan(self, scanner: str, target: str, port: int) -> list[_Packet]:
        syn = tcp4(scanner, target, port, self.rng.choice(_SCAN_PORTS), SYN, seq=self.rng.getrandbits(32),
                   window=1024, options=b"\x02\x04\x05\xb4")
        return [(syn, 0)] * self.rng.choice((1, 1, 2))  # no answer; sometimes one retransmission

    def _syn(self, source: str, target: str, port: int) -> list[_Packet]:
        """A flood SYN as tools send it: no options, small window, never answered."""
        dport = 80 if self.rng.random() < 0.7 else 443
        return [(tcp4(source, target, port, dport, SYN, seq=self.rng.getrandbits(32), window=512), 0)]

    def _bulk(self, client: str, server: str, port: int) -> list[_Packet]:
        """A long download over TLS: data frames of exactly BULK_FRAME bytes on Ethernet."""
        rng = self.rng
        mss = BULK_FRAME - 14 - 20 - 20  # Ethernet, IPv4 and option-less TCP headers
        size = mss * rng.randint(64, 256)
        records = b"".join(_tls_record(0x17, rng.randbytes(16384)) for _ in range(size // 16389 + 1))
        messages = [(0, tls_client_hello(self._name())), (1, records[:size])]  # the flow ends mid-record
        return _tcp_flow(client, server, port, 443, messages, rng, mss=mss, ack_every=_BULK_ACK_EVERY)

    def _ntp(self, client: str, server: str, port: int) -> list[_Packet]:
        stamp = self.rng.randbytes(8)
        request = b"\x23" + bytes(39) + stamp
        reply = b"\x24\x02\x00\xe7" + bytes(12) + b"\xe9\x00\x00\x00" + stamp + self.rng.randbytes(16)
        return [(udp4(client, server, port, 123, request), 0), (udp4(server, client, 123, port, reply), 1)]

    def _syslog(self, client: str, collector: str, port: int) -> list[_Packet]:
        rng = self.rng
        out = []
        for _ in range(rng.randint(1, 3)):
            app = rng.choice(("sshd", "cron", "kernel", "nginx", "systemd"))
            text = (f"<{rng.choice((13, 30, 86, 134, 163))}>Nov 14 22:13:{rng.randint(10, 59)} "
                    f"host{rng.randint(1, 99)} {app}[{rng.randint(100, 9999)}]: "
                    + "session opened for user backup by (uid=0) " * rng.randint(1, 4))
            out.append((udp4(client, collector, port, 514, text.encode()), 0))
        return out

    def _ping(self, client: str, server: str) -> list[_Packet]:
        ident, data = self.rng.getrandbits(16), self.rng.randbytes(16) + bytes(range(0x10, 0x38))  # Linux ping
        out = []
        for seq in range(1, self.rng.randint(1, 4) + 1):
            body = struct.pack("!HH", ident, seq) + data
            out += [(icmp4(client, server, 8, 0, body), 0), (icmp4(server, client, 0, 0, body), 1)]
        return out

    def _trail_flow(self, ip: str) -> Iterator[bytes]:
        """A flow involving a trail address, built directly (rare) and counted as it is emitted."""
        rng, stats = self.rng, self.stats
        stats.flows += 1
        v6 = ":" in ip
        client = str(ipaddress.ip_address(rng.choice(self.clients6 if v6 else self.clients4)))
        tcp, udp = (tcp6, udp6) if v6 else (tcp4, udp4)
        port, roll = self._eph(), rng.random()
        packets: list[tuple[bytes, dict[str, int] | None]] = []
        if roll < 0.2:  # inbound scan from the trail address
            syn = tcp(ip, client, port, rng.choice(_SCAN_PORTS), SYN, seq=rng.getrandbits(32), window=1024)
            packets += [(syn, stats.trail_syns_from)] * rng.choice((1, 2))
        elif roll < 0.45:  # UDP to the trail address (C2 beacon, P2P)
            dport = rng.choice((123, 1900, 4444, 6881, 9999, 27015))
            for _ in range(rng.randint(1, 4)):
                packets.append((udp(client, ip, port, dport, rng.randbytes(rng.randint(20, 400))), stats.trail_udp))
                if rng.random() < 0.5:
                    packets.append((udp(ip, client, dport, port, rng.randbytes(rng.randint(20, 200))), None))
        elif roll < 0.7:  # unanswered connection attempts
            syn = tcp(client, ip, port, rng.choice((80, 443, 8080, 8443)), SYN, seq=rng.getrandbits(32),
                      options=_syn_options(1440 if v6 else 1460, rng))
            packets += [(syn, stats.trail_syns)] * rng.randint(1, 3)
        else:  # full connection to the trail address
            request = http_request("GET", "/gate.php?id=" + rng.randbytes(6).hex(), host=ip, user_agent=_UAS[0])
            flow = _tcp_flow(client, ip, port, 80, [(0, request), (1, http_response(200, "text/plain", b"ok"))], rng)
            packets += [(pkt, stats.trail_syns if i == 0 else None) for i, (pkt, _) in enumerate(flow)]
        for pkt, counter in packets:
            if counter is not None:
                counter[ip] += 1
            yield self._frame(pkt)

    def new_flow(self, number: int) -> Iterator[bytes]:
        """Flow number `number`: every `_TRAIL_EVERY`th involves a trail address, the rest are drawn
        by kind weight (hot path: plain `random()` arithmetic instead of `choice`/`choices`)."""
        if self.trail_ips and number % _TRAIL_EVERY == _TRAIL_EVERY // 10:
            return self._trail_flow(self.trail_ips[number // _TRAIL_EVERY % len(self.trail_ips)])
        r = self.rng.random
        _, templates, initiators, responders = self.kinds[bisect(self.cum_weights, r() * self.cum_weights[-1])]
        return _replay(templates[int(r() * len(templates))], initiators[int(r() * len(initiators))],
                       responders[int(r() * len(responders))], self._eph(), self.stats)


def mixed_capture(path: str | Path, packets: int, seed: int = 1, trail_ips: Sequence[str] = (),
                  linktype: int = 1, mix: str = "mixed", start: float = _T0_US / 1e6,
                  shares: UniqueShares | None = None, trail_names: Sequence[str] = ()) -> dict:
    """Write `packets` frames of realistic interleaved traffic (of one of the `MIXES`) to a classic
    pcap file.

    Deterministic for a seed; the first packet is stamped `start` (epoch seconds). ~0.5 % of flows
    involve `trail_ips` (SYNs and UDP to them, some SYNs from them). The file is assembled in memory
    chunks and written in a few large writes, which is why this writes the pcap format itself
    instead of one call per frame. Returns `packets`, `bytes` (sum of frame lengths), `mean_frame`,
    `flows`, `trail_syns` / `trail_syns_from` (SYN without ACK to / from each trail IP) and
    `trail_udp` (UDP datagrams to each trail IP, never DNS).

    The `unique` mix is generated packet by packet (`unique_capture`); `shares` overrides its
    proportions and `trail_names` are asked once each in its DNS queries.
    """
    if packets < 0:
        raise ValueError("packets must be >= 0")
    links = {dlt: wrap for dlt, wrap in LINKTYPES.values()}
    if linktype not in links:
        raise ValueError(f"unsupported linktype {linktype}; one of {sorted(links)}")
    if mix not in MIXES:
        raise ValueError(f"unknown traffic mix {mix!r}; one of {', '.join(MIXES)}")
    weights = MIXES[mix]
    if isinstance(weights, UniqueShares):
        return unique_capture(path, packets, seed, trail_ips, linktype, start, shares or weights, trail_names)
    flows_mix = _Mix(seed, trail_ips, links[linktype], linktype == 1, weights)

    def frames() -> Iterator[bytes]:
        rand = flows_mix.rng.random
        flows = [flows_mix.new_flow(i) for i in range(_CONCURRENT)]
        started, written = _CONCURRENT, 0
        while written < packets:
            slot = int(rand() * _CONCURRENT)
            frame = next(flows[slot], None)
            if frame is None:
                flows[slot] = flows_mix.new_flow(started)
                started += 1
                continue
            yield frame
            written += 1

    written, total = _write_pcap(path, linktype, frames(), flows_mix.rng.random, start)
    stats = flows_mix.stats
    return {"packets": written, "bytes": total, "mean_frame": total / written if written else 0.0,
            "flows": stats.flows, "trail_syns": stats.trail_syns, "trail_syns_from": stats.trail_syns_from,
            "trail_udp": stats.trail_udp}


def _write_pcap(path: str | Path, linktype: int, frames: Iterator[bytes], rand: Callable[[], float], start: float
                ) -> tuple[int, int]:
    """A classic pcap of `frames`, with exponential gaps between them (bursty like real links) drawn
    from `rand` after each frame, built in memory chunks and written in a few large writes;
    returns the packets and frame bytes written."""
    pack = struct.Struct("<IIII").pack
    ts, total, written = int(start * 1e6), 0, 0
    chunk: list[bytes] = []
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))  # as engine.pcapio.PcapWriter
        for frame in frames:
            ts += 1 + int(-_MEAN_GAP_US * log(1.0 - rand()))
            n = len(frame)
            chunk += (pack(ts // 1_000_000, ts % 1_000_000, n, n), frame)
            total += n
            written += 1
            if len(chunk) >= 131072:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return written, total


def unique_capture(path: str | Path, packets: int, seed: int = 1, trail_ips: Sequence[str] = (), linktype: int = 1,
                   start: float = _T0_US / 1e6, shares: UniqueShares | None = None,
                   trail_names: Sequence[str] = ()) -> dict:
    """Write `packets` frames of the `unique` mix: every DNS name, HTTP host, path, query string and
    User-Agent, SNI and client (address, port) appears once (client ports themselves are distinct
    for the first 64,512 flows). Every packet is built, none replayed, so this is several times slower
    than the template mixes. One SYN in 50 goes to one of `trail_ips` (counted in `trail_syns`), one
    DNS query in 500 asks for the next of `trail_names`. Returns what `mixed_capture` returns.
    """
    if packets < 0:
        raise ValueError("packets must be >= 0")
    links = {dlt: wrap for dlt, wrap in LINKTYPES.values()}
    if linktype not in links:
        raise ValueError(f"unsupported linktype {linktype}; one of {sorted(links)}")
    gen = _Unique(seed, shares or UniqueShares(), links[linktype], linktype == 1, trail_ips, trail_names)
    nxt = gen.next_packet
    _, total = _write_pcap(path, linktype, (nxt() for _ in range(packets)), gen.rng.random, start)
    stats = gen.stats
    return {"packets": packets, "bytes": total, "mean_frame": total / packets if packets else 0.0,
            "flows": gen.flows, "trail_syns": stats.trail_syns, "trail_syns_from": stats.trail_syns_from,
            "trail_udp": stats.trail_udp}

def frames_batch(frames: list[bytes], sec: int = 1_700_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Frames as one packet batch in pcapy-ng's `next_batch` layout (meta rows and packet bytes), for
    benchmarks that feed the worker path directly."""
    caplen = np.array([len(f) for f in frames], dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
    meta = np.stack([np.full(len(frames), sec, np.uint32), np.zeros(len(frames), np.uint32), offsets, caplen],
                    axis=1)
    return meta, np.frombuffer(b"".join(frames), dtype=np.uint8)


# --- QUIC client Initial and TLS server flight (spec 2.8) --------------------------------------


def _quic_varint(value: int, size: int = 0) -> bytes:
    size = size or (1 if value < 0x40 else 2 if value < 0x4000 else 4 if value < 0x40000000 else 8)
    return (value | (size.bit_length() - 1) << (8 * size - 2)).to_bytes(size, "big")


def quic_protect_initial(header: bytes, payload: bytes, dcid: bytes, version: int = 1) -> bytes:
    """Client Initial packet protection (RFC 9001 5.3-5.4): AES-128-GCM over the frames with the
    header as associated data, then header protection. `header` is the unprotected long header
    ending in the packet number, its Length already counting packet number, payload and tag."""
    key, iv, hp = initial_keys(dcid, version)
    pn_len = (header[0] & 0x03) + 1
    packet_number = header[-pn_len:]
    nonce = (int.from_bytes(iv, "big") ^ int.from_bytes(packet_number, "big")).to_bytes(12, "big")
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(sealed[4 - pn_len : 20 - pn_len])
    protected_pn = bytes(b ^ m for b, m in zip(packet_number, mask[1:], strict=False))
    return bytes((header[0] ^ (mask[0] & 0x0F),)) + header[1:-pn_len] + protected_pn + sealed


def quic_crypto(offset: int, data: bytes) -> bytes:
    """A CRYPTO frame carrying stream bytes data at offset."""
    return b"\x06" + _quic_varint(offset) + _quic_varint(len(data)) + data


def quic_client_hello(sni: str, post_quantum: bool = False) -> bytes:
    """The ClientHello handshake message a QUIC client sends in CRYPTO frames (no TLS record);
    `post_quantum` adds an X25519MLKEM768 key share (1216 bytes), as current browsers do, so the
    message no longer fits one 1200-byte Initial."""
    hello = tls_client_hello(sni)[5:]
    if not post_quantum:
        return hello
    share = struct.pack("!HH", 0x11EC, 1216) + hashlib.shake_256(sni.encode()).digest(1216)
    body = hello[4:] + _ext(0xFE0D, share)  # a private-use extension: parsers skip it as they skip any
    ext_at = 2 + 32 + 1 + body[34] + 2 + int.from_bytes(body[35 + body[34] : 37 + body[34]], "big")
    ext_at += 1 + body[ext_at]
    ext_len = int.from_bytes(body[ext_at : ext_at + 2], "big") + 4 + len(share)
    body = body[:ext_at] + ext_len.to_bytes(2, "big") + body[ext_at + 2 :]
    return _handshake(1, body)


def quic_initial_packet(frames: bytes, dcid: bytes, version: int = 1, scid: bytes = b"", token: bytes = b"",
                        pad_to: int = 0, packet_number: int = 0, pn_len: int = 1) -> bytes:
    """One client Initial packet carrying `frames`, PADDING up to `pad_to` bytes, protected with the
    Initial keys of `dcid` as a real client does; packets can be concatenated (coalesced)."""
    type_bits = 0b01 if version == QUIC_V2 else 0b00
    head = (bytes((0xC0 | type_bits << 4 | (pn_len - 1),)) + version.to_bytes(4, "big") + bytes((len(dcid),)) + dcid
            + bytes((len(scid),)) + scid + _quic_varint(len(token)) + token)
    frames += bytes(max(0, pad_to - (len(head) + 2 + pn_len + 16) - len(frames)))
    header = head + _quic_varint(pn_len + len(frames) + 16, 2) + packet_number.to_bytes(pn_len, "big")
    return quic_protect_initial(header, frames, dcid, version)


def quic_initial(sni: str, dcid: bytes = bytes.fromhex("8394c8f03e515708"), version: int = 1, scid: bytes = b"",
                 pad_to: int = 1200, packet_number: int = 0, pn_len: int = 1) -> bytes:
    """A client's first QUIC Initial datagram: one CRYPTO frame with the ClientHello of
    `tls_client_hello(sni)`, PADDING up to `pad_to` bytes, protected as a real client does."""
    return quic_initial_packet(quic_crypto(0, quic_client_hello(sni)), dcid, version, scid, pad_to=pad_to,
                               packet_number=packet_number, pn_len=pn_len)


_RETRY_INTEGRITY = {  # RFC 9001 5.8, RFC 9369 3.3.3: (key, nonce) of the Retry integrity tag
    1: (bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"), bytes.fromhex("461599d35d632bf2239825bb")),
    QUIC_V2: (bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"), bytes.fromhex("d86969bc2d7c6d9990efb04a")),
}


def quic_retry(original_dcid: bytes, client_scid: bytes, new_scid: bytes, token: bytes, version: int = 1) -> bytes:
    """A server's Retry (RFC 9000 17.2.5): the client must resend its Initial with `token` to the DCID
    `new_scid`, under that DCID's Initial keys."""
    type_bits = 0b00 if version == QUIC_V2 else 0b11
    packet = (bytes((0xC0 | type_bits << 4,)) + version.to_bytes(4, "big") + bytes((len(client_scid),)) + client_scid
              + bytes((len(new_scid),)) + new_scid + token)
    key, nonce = _RETRY_INTEGRITY[version]
    pseudo = bytes((len(original_dcid),)) + original_dcid + packet
    return packet + AESGCM(key).encrypt(nonce, b"", pseudo)


def tls_server_certificate_flight(cert_der: bytes) -> bytes:
    """Head of a TLS 1.2 server flight in one segment: ServerHello and Certificate records."""
    extensions = _ext(0xFF01, b"\x00") + _ext(23, b"")  # renegotiation_info, extended_master_secret
    hello = (b"\x03\x03" + hashlib.sha256(cert_der).digest() + b"\x00" + b"\xc0\x2f\x00"  # ECDHE-RSA-AES128-GCM
             + struct.pack("!H", len(extensions)) + extensions)
    chain = len(cert_der).to_bytes(3, "big") + cert_der
    return (_tls_record(0x16, _handshake(2, hello))
            + _tls_record(0x16, _handshake(11, len(chain).to_bytes(3, "big") + chain)))
