"""The synthetic traffic builders, checked by decoding their bytes with `struct` / `ipaddress`
independently of the sensor's parser, so that a parser bug and a generator bug cannot cancel out."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pcapy
import pytest

from engine import traffic as t

V4 = ("10.0.0.66", "93.184.216.34")
V6 = ("2001:db8::1", "2a00:1450:4001:81b::200e")
TRAILS = ("66.66.66.66", "198.51.100.66", "2001:db8:bad::66")


def _ones_sum(data: bytes) -> int:
    """Folded 16-bit one's-complement sum: 0xFFFF over a region whose checksum is right."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _ip(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def _l3(pkt: bytes) -> tuple[str, str, int, bytes]:
    """(src, dst, protocol, L4 bytes) of an IP packet, checking lengths and the v4 header checksum."""
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        assert struct.unpack("!H", pkt[2:4])[0] == len(pkt)
        assert _ones_sum(pkt[:ihl]) == 0xFFFF
        return _ip(pkt[12:16]), _ip(pkt[16:20]), pkt[9], pkt[ihl:]
    assert pkt[0] >> 4 == 6
    assert struct.unpack("!H", pkt[4:6])[0] == len(pkt) - 40
    return _ip(pkt[8:24]), _ip(pkt[24:40]), pkt[6], pkt[40:]


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 6:
        return s.packed + d.packed + struct.pack("!IxxxB", length, proto)
    return s.packed + d.packed + struct.pack("!xBH", proto, length)


def _l4_checksum_ok(pkt: bytes) -> bool:
    src, dst, proto, l4 = _l3(pkt)
    pseudo = b"" if proto == 1 else _pseudo(src, dst, proto, len(l4))
    return _ones_sum(pseudo + l4) == 0xFFFF


@pytest.mark.parametrize(("build", "addrs"), [(t.tcp4, V4), (t.tcp6, V6)])
def test_tcp_lengths_fields_and_checksums(build, addrs: tuple[str, str]) -> None:
    pkt = build(*addrs, 50001, 443, t.SYN | t.ACK, b"hello", seq=7, ack=9, window=1000, options=b"\x02\x04\x05\xb4")
    src, dst, proto, l4 = _l3(pkt)
    assert (src, dst, proto) == (*addrs, 6)
    sport, dport, seq, ack, off, flags, window = struct.unpack("!HHIIBBH", l4[:16])
    assert (sport, dport, seq, ack, off >> 4, flags, window) == (50001, 443, 7, 9, 6, t.SYN | t.ACK, 1000)
    assert l4[24:] == b"hello"
    assert _l4_checksum_ok(pkt)


@pytest.mark.parametrize(("build", "addrs"), [(t.udp4, V4), (t.udp6, V6)])
def test_udp_lengths_and_checksums(build, addrs: tuple[str, str]) -> None:
    pkt = build(*addrs, 40000, 9999, b"odd")
    src, dst, proto, l4 = _l3(pkt)
    assert (src, dst, proto) == (*addrs, 17)
    assert struct.unpack("!HHH", l4[:6]) == (40000, 9999, 11)
    assert l4[6:8] != b"\x00\x00" and l4[8:] == b"odd"
    assert _l4_checksum_ok(pkt)


@pytest.mark.parametrize(("build", "addrs", "proto", "echo"), [(t.icmp4, V4, 1, 8), (t.icmp6, V6, 58, 128)])
def test_icmp_checksums(build, addrs: tuple[str, str], proto: int, echo: int) -> None:
    pkt = build(*addrs, echo, 0, b"\x12\x34\x00\x01ping")
    src, dst, got_proto, l4 = _l3(pkt)
    assert (src, dst, got_proto, l4[0], l4[1], l4[4:]) == (*addrs, proto, echo, 0, b"\x12\x34\x00\x01ping")
    assert _l4_checksum_ok(pkt)  # ICMPv6 only sums to 0xFFFF with the v6 pseudo-header


def test_ipv4_options_padding_and_fields() -> None:
    pkt = t.ipv4(*V4, 17, b"x" * 5, ttl=3, ident=0xBEEF, flags_frag=0x2001, options=b"\x94\x04\x00")
    assert pkt[0] == 0x46 and pkt[20:24] == b"\x94\x04\x00\x00" and pkt[24:] == b"x" * 5
    assert struct.unpack("!HHBB", pkt[4:10]) == (0xBEEF, 0x2001, 3, 17)
    _l3(pkt)


def test_ipv6_header() -> None:
    pkt = t.ipv6(*V6, 59, b"abc", hop_limit=7)
    assert pkt[:4] == b"\x60\x00\x00\x00" and pkt[6:8] == bytes((59, 7)) and pkt[40:] == b"abc"
    _l3(pkt)


# offset of the IP packet and a reader of the protocol field, per link type
LINK_LAYOUT = {
    "ethernet": (14, lambda f: struct.unpack("!H", f[12:14])[0], (0x0800, 0x86DD)),
    "raw12": (0, lambda f: f[0] >> 4, (4, 6)),
    "raw14": (0, lambda f: f[0] >> 4, (4, 6)),
    "raw101": (0, lambda f: f[0] >> 4, (4, 6)),
    "chdlc": (4, lambda f: struct.unpack("!H", f[2:4])[0], (0x0800, 0x86DD)),
    "nflog": (32, lambda f: f[0], (2, 10)),  # header 4, packet header TLV 8, prefix TLV 16, payload TLV head 4
    "sll": (16, lambda f: struct.unpack("!H", f[14:16])[0], (0x0800, 0x86DD)),
    "sll2": (20, lambda f: struct.unpack("!H", f[0:2])[0], (0x0800, 0x86DD)),
    "null": (4, lambda f: struct.unpack("<I", f[:4])[0], (2, 30)),
    "loop": (4, lambda f: struct.unpack("!I", f[:4])[0], (2, 30)),
}


@pytest.mark.parametrize("name", sorted(t.LINKTYPES))
def test_link_wrappers_put_ip_at_the_right_offset(name: str) -> None:
    _, wrap = t.LINKTYPES[name]
    offset, proto_field, expected = LINK_LAYOUT[name]
    for pkt, want in zip((t.tcp4(*V4, 1, 2, t.SYN), t.tcp6(*V6, 1, 2, t.SYN)), expected, strict=True):
        frame = wrap(pkt)
        assert frame[offset:] == pkt and proto_field(frame) == want


def test_linktype_numbers() -> None:
    assert {name: dlt for name, (dlt, _) in t.LINKTYPES.items()} == {
        "ethernet": 1, "raw12": 12, "raw14": 14, "raw101": 101, "chdlc": 104, "nflog": 239, "sll": 113,
        "sll2": 276, "null": 0, "loop": 108}


def test_vlan_qinq_and_pppoe_layouts() -> None:
    v4, v6 = t.tcp4(*V4, 1, 2, t.SYN), t.tcp6(*V6, 1, 2, t.SYN)
    frame = t.ethernet(v4, vlan=10, src_mac="02:00:00:00:00:aa", dst_mac=b"\xff" * 6)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("0200000000aa")
    assert struct.unpack("!HHH", frame[12:18]) == (0x8100, 10, 0x0800) and frame[18:] == v4
    frame = t.ethernet(v6, vlan=[10, 20])
    assert struct.unpack("!HHHHH", frame[12:22]) == (0x88A8, 10, 0x8100, 20, 0x86DD) and frame[22:] == v6
    for pkt, ppp in ((v4, 0x0021), (v6, 0x0057)):
        frame = t.pppoe(pkt, session_id=0x42)
        vt, code, session, length, proto = struct.unpack("!BBHHH", frame[14:22])
        assert struct.unpack("!H", frame[12:14])[0] == 0x8864
        assert (vt, code, session, length, proto) == (0x11, 0, 0x42, len(pkt) + 2, ppp) and frame[22:] == pkt


def _name(msg: bytes, pos: int) -> tuple[str, int]:
    """DNS name at `pos` (following compression pointers) and the offset after it."""
    labels, end = [], None
    while msg[pos]:
        if msg[pos] & 0xC0 == 0xC0:
            end = pos + 2 if end is None else end
            pos = struct.unpack("!H", msg[pos:pos + 2])[0] & 0x3FFF
            continue
        labels.append(msg[pos + 1:pos + 1 + msg[pos]].decode())
        pos += 1 + msg[pos]
    return ".".join(labels), pos + 1 if end is None else end


def test_dns_query_parses_back() -> None:
    msg = t.dns_query("www.Example.com.", qtype=28, txid=0xABCD)
    txid, flags, qd, an, ns, ar = struct.unpack("!6H", msg[:12])
    assert (txid, flags & 0x8000, qd, an, ns, ar) == (0xABCD, 0, 1, 0, 0, 0)
    name, pos = _name(msg, 12)
    assert name == "www.Example.com" and struct.unpack("!HH", msg[pos:]) == (28, 1)


@pytest.mark.parametrize("compress", [True, False])
def test_dns_response_parses_back(compress: bool) -> None:
    msg = t.dns_response("evil.example", ["192.0.2.1", "192.0.2.2"], txid=7, compress=compress)
    txid, flags, qd, an = struct.unpack("!4H", msg[:8])
    assert (txid, flags & 0x8000, flags & 0xF, qd, an) == (7, 0x8000, 0, 1, 2)
    name, pos = _name(msg, 12)
    pos += 4
    answers = []
    for _ in range(an):
        assert (msg[pos:pos + 2] == b"\xc0\x0c") is compress
        owner, pos = _name(msg, pos)
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        assert (owner, rtype, rclass, rdlen) == (name, 1, 1, 4)
        answers.append(_ip(msg[pos + 10:pos + 14]))
        pos += 10 + rdlen
    assert answers == ["192.0.2.1", "192.0.2.2"] and pos == len(msg)


def test_dns_nxdomain_and_aaaa() -> None:
    assert struct.unpack("!H", t.dns_response("x.test", [], rcode=3)[2:4])[0] & 0xF == 3
    msg = t.dns_response("x.test", ["2001:db8::1"])
    assert msg[-16:] == ipaddress.ip_address("2001:db8::1").packed and msg[-26:-24] == b"\x00\x1c"


def test_http_messages() -> None:
    req = t.http_request("POST", "/gate.php", host="evil.example", user_agent="bot/1", headers={"X-A": "b"},
                         body=b"k=v")
    assert req == (b"POST /gate.php HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: bot/1\r\nX-A: b\r\n"
                   b"Content-Length: 3\r\n\r\nk=v")
    assert b"Host:" not in t.http_request("GET", "/")
    resp = t.http_response(404, "text/plain", b"nope")
    assert resp.startswith(b"HTTP/1.1 404 Not Found\r\n") and resp.endswith(b"Content-Length: 4\r\n"
                                                                              b"Connection: keep-alive\r\n\r\nnope")


def _extensions(hello: bytes) -> tuple[int, dict[int, bytes]]:
    """(handshake type, extensions by type) of a ClientHello / ServerHello record."""
    ctype, _version, length = struct.unpack("!BHH", hello[:5])
    assert ctype == 0x16 and length == len(hello) - 5
    hs_type, hs_len = hello[5], int.from_bytes(hello[6:9], "big")
    assert hs_len == len(hello) - 9
    pos = 9 + 2 + 32
    pos += 1 + hello[pos]  # session id
    if hs_type == 1:
        pos += 2 + struct.unpack("!H", hello[pos:pos + 2])[0]  # cipher suites
        pos += 1 + hello[pos]  # compression methods
    else:
        pos += 3  # chosen suite, compression
    end = pos + 2 + struct.unpack("!H", hello[pos:pos + 2])[0]
    assert end == len(hello)
    pos, exts = pos + 2, {}
    while pos < end:
        etype, elen = struct.unpack("!HH", hello[pos:pos + 4])
        exts[etype] = hello[pos + 4:pos + 4 + elen]
        pos += 4 + elen
    return hs_type, exts


def test_client_hello_carries_sni_and_tls13_extensions() -> None:
    hello = t.tls_client_hello("secure.example.org")
    assert hello[:3] == b"\x16\x03\x01" and hello == t.tls_client_hello("secure.example.org")
    hs_type, exts = _extensions(hello)
    assert hs_type == 1
    sni = exts[0]
    list_len, name_type, name_len = struct.unpack("!HBH", sni[:5])
    assert (list_len, name_type, sni[5:5 + name_len]) == (len(sni) - 2, 0, b"secure.example.org")
    assert b"\x03\x04" in exts[43] and b"\x00\x1d" in exts[10] and exts[51][2:4] == b"\x00\x1d"
    assert len(hello) == 517  # padded like a browser's


def test_server_hello() -> None:
    hs_type, exts = _extensions(t.tls_server_hello())
    assert hs_type == 2 and exts[43] == b"\x03\x04" and 51 in exts


def _records(path: Path) -> tuple[int, list[tuple[int, int, bytes]]]:
    """(linktype, [(sec, usec, frame)]) of a classic little-endian pcap."""
    data = path.read_bytes()
    magic, _major, _minor, _zone, _sig, _snap, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4
    out, pos = [], 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos:pos + 16])
        assert incl == orig and usec < 1_000_000
        out.append((sec, usec, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    assert pos == len(data)
    return linktype, out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("mixed") / "mixed.pcap"
    return path, t.mixed_capture(path, 30_000, seed=5, trail_ips=TRAILS)


def test_mixed_capture_records_timestamps_and_size(mixed: tuple[Path, dict]) -> None:
    path, info = mixed
    linktype, records = _records(path)
    assert linktype == 1 and len(records) == info["packets"] == 30_000
    stamps = [sec * 1_000_000 + usec for sec, usec, _ in records]
    assert stamps[0] >= 1_700_000_000_000_000 and stamps == sorted(stamps)
    rate = len(stamps) / ((stamps[-1] - stamps[0]) / 1e6)
    assert 30_000 < rate < 200_000
    assert info["bytes"] == sum(len(f) for _, _, f in records)
    assert 200 <= info["mean_frame"] <= 450 and info["flows"] > 1000


def test_mixed_capture_readable_by_libpcap(mixed: tuple[Path, dict]) -> None:
    reader = pcapy.open_offline(str(mixed[0]))
    count = 0
    while True:
        header, _ = reader.next()
        if header is None:
            break
        count += 1
    assert reader.datalink() == 1 and count == 30_000


def test_mixed_capture_trail_counts_and_checksums(mixed: tuple[Path, dict]) -> None:
    path, info = mixed
    syns, syns_from, udp = (dict.fromkeys(TRAILS, 0) for _ in range(3))
    kinds = set()
    for _, _, frame in _records(path)[1]:
        ethertype = struct.unpack("!H", frame[12:14])[0]
        assert ethertype in (0x0800, 0x86DD)
        pkt = frame[14:]
        src, dst, proto, l4 = _l3(pkt)
        assert _l4_checksum_ok(pkt), (src, dst, proto)  # templates are patched incrementally
        kinds.add((pkt[0] >> 4, proto))
        if proto == 6 and l4[13] & (t.SYN | t.ACK) == t.SYN:
            if dst in syns:
                syns[dst] += 1
            if src in syns_from:
                syns_from[src] += 1
        elif proto == 17 and dst in udp and 53 not in struct.unpack("!HH", l4[:4]):
            udp[dst] += 1
    assert (syns, syns_from, udp) == (info["trail_syns"], info["trail_syns_from"], info["trail_udp"])
    assert all(syns.values()) and all(udp.values())
    assert kinds == {(4, 1), (4, 6), (4, 17), (6, 6), (6, 17)}


def test_mixed_capture_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    assert t.mixed_capture(a, 3000, seed=9, trail_ips=TRAILS) == t.mixed_capture(b, 3000, seed=9, trail_ips=TRAILS)
    t.mixed_capture(c, 3000, seed=10, trail_ips=TRAILS)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_mixed_capture_avoids_whitelisted_resolvers(mixed: tuple[Path, dict]) -> None:
    data = mixed[0].read_bytes()
    for ip in ("8.8.8.8", "1.1.1.1", "9.9.9.9"):
        assert ipaddress.ip_address(ip).packed not in data


@pytest.mark.parametrize("name", sorted(t.LINKTYPES))
def test_mixed_capture_other_link_types(tmp_path: Path, name: str) -> None:
    dlt, _ = t.LINKTYPES[name]
    offset, proto_field, expected = LINK_LAYOUT[name]
    info = t.mixed_capture(tmp_path / "c.pcap", 500, seed=2, trail_ips=TRAILS, linktype=dlt)
    linktype, records = _records(tmp_path / "c.pcap")
    assert linktype == dlt and len(records) == info["packets"] == 500
    for _, _, frame in records:
        pkt = frame[offset:]
        if name == "nflog":  # the payload TLV is padded to 4 bytes: its length says where the packet ends
            pkt = pkt[:struct.unpack("<H", frame[offset - 4:offset - 2])[0] - 4]
        assert proto_field(frame) == expected[0 if pkt[0] >> 4 == 4 else 1]
        _l3(pkt)


def test_mixed_capture_edge_cases(tmp_path: Path) -> None:
    assert t.mixed_capture(tmp_path / "e.pcap", 0)["packets"] == 0
    assert len((tmp_path / "e.pcap").read_bytes()) == 24
    with pytest.raises(ValueError, match="linktype"):
        t.mixed_capture(tmp_path / "x.pcap", 10, linktype=147)
