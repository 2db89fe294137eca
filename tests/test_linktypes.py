"""Issue 11: every link type and PPPoE form through the real sensor (pcap files written by
PcapWriter, replayed by `run_sensor`), the NFLOG TLV walk's edge cases, and a capture of a link
type the sensor cannot parse refused at start with one line."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from replay_support import replay_frames

from engine import traffic as t
from engine.cli import main
from engine.pcapio import PcapWriter
from workers.batch import DLT_EN10MB, DLT_NFLOG, parse_batch

TRAILS = "66.66.66.66,malware (test),(static)\ndead::beef,malware (test),(static)\n"
T0 = 1_700_000_000.0
A, A6 = "10.0.0.66", "2001:db8::1"


@pytest.fixture
def trails(tmp_path: Path) -> Path:
    csv = tmp_path / "trails.csv"
    csv.write_text(TRAILS)
    return csv


def _replay(trails: Path, tmp_path: Path, frames: list[bytes], linktype: int) -> tuple[list[str], dict]:
    return replay_frames(trails, tmp_path, frames, linktype)


def _sports(lines: list[str]) -> list[int]:
    return [int(line.split(" ")[4]) for line in lines]


def _parse(frames: list[bytes], linktype: int):
    data = b"".join(frames)
    offsets = np.cumsum([0] + [len(f) for f in frames])[:-1]
    meta = np.array([[0, 0, o, len(f)] for o, f in zip(offsets, frames, strict=True)], dtype=np.uint32)
    return parse_batch(meta.reshape(-1, 4), np.frombuffer(data, dtype=np.uint8), linktype)


def test_pppoe_every_protocol_field_form_vlan_and_padding(trails: Path, tmp_path: Path) -> None:
    """Each form gets its own source port, so a miss names the form."""
    forms = []
    for pfc in (False, True):
        for vlan in (None, 7, [10, 20]):
            for v6 in (False, True):
                port = 40000 + len(forms)
                pkt = (t.tcp6(A6, "dead::beef", port, 443, t.SYN) if v6
                       else t.tcp4(A, "66.66.66.66", port, 443, t.SYN))
                forms.append(t.pppoe(pkt, vlan=vlan, pfc=pfc, pad_to=64))
    lines, counters = _replay(trails, tmp_path, forms, DLT_EN10MB)
    assert _sports(lines) == list(range(40000, 40000 + len(forms)))
    assert counters["malformed"] == counters["non_ip"] == 0


def test_pppoe_length_field_excludes_ethernet_padding() -> None:
    """An IPv4 total length of 0 (segmentation offload) makes the parser trust the capture's
    length: behind PPPoE that is the session header's length, not the padded frame's."""
    udp = bytearray(t.udp4(A, "66.66.66.66", 1, 53, b"abcd"))
    udp[2:4] = b"\0\0"
    for pfc in (False, True):
        p = _parse([t.pppoe(bytes(udp), pfc=pfc, pad_to=64)], DLT_EN10MB)
        assert p.version.tolist() == [4] and p.payload_len.tolist() == [4], pfc


def test_pppoe_discovery_and_control_protocols_are_not_ip() -> None:
    lcp = bytearray(t.pppoe(t.tcp4(A, "66.66.66.66", 1, 2, t.SYN)))
    lcp[20:22] = b"\xc0\x21"  # LCP
    discovery = bytearray(t.pppoe(b"\0" * 20))
    discovery[12:14] = b"\x88\x63"
    p = _parse([bytes(lcp), bytes(discovery)], DLT_EN10MB)
    assert p.version.tolist() == [0, 0] and not p.malformed.any()


@pytest.mark.parametrize(("linktype", "header4", "header6"), [
    (0, struct.pack("<I", 2), struct.pack("<I", 24)),  # NULL, little-endian host; NetBSD's IPv6
    (0, struct.pack(">I", 2), struct.pack(">I", 28)),  # NULL, big-endian host; FreeBSD's IPv6
    (0, struct.pack("<I", 2), struct.pack("<I", 30)),  # NULL, macOS IPv6
    (108, struct.pack(">I", 2), struct.pack(">I", 24)),  # LOOP: network order
    (104, b"\x0f\x00\x08\x00", b"\x8f\x00\x86\xdd"),  # Cisco HDLC, unicast and broadcast address
])
def test_loopback_families_and_cisco_hdlc(trails: Path, tmp_path: Path, linktype: int, header4: bytes,
                                          header6: bytes) -> None:
    frames = [header4 + t.tcp4(A, "66.66.66.66", 40001, 443, t.SYN),
              header6 + t.tcp6(A6, "dead::beef", 40002, 443, t.SYN)]
    lines, _ = _replay(trails, tmp_path, frames, linktype)
    assert _sports(lines) == [40001, 40002]


def _nflog(family: int, *tlvs: bytes) -> bytes:
    return struct.pack("!BBH", family, 0, 5) + b"".join(tlvs)


def _nla(kind: int, value: bytes, length: int | None = None) -> bytes:
    tlv = struct.pack("<HH", 4 + len(value) if length is None else length, kind) + value
    return tlv + b"\0" * (-len(tlv) % 4)


def test_nflog_payload_found_after_other_attributes(trails: Path, tmp_path: Path) -> None:
    syn4 = t.tcp4(A, "66.66.66.66", 40001, 443, t.SYN)
    syn6 = t.tcp6(A6, "dead::beef", 40002, 443, t.SYN)
    many = [_nla(kind, b"\x01" * (kind % 7)) for kind in (1, 2, 4, 5, 8, 10, 11, 12, 13, 14)]
    frames = [
        _nflog(2, *many, _nla(9, syn4)),
        _nflog(10, _nla(1, b"\x86\xdd\x01\x00"), _nla(0x4009, syn6)),  # byte-order flag set
        t.nflog(t.udp4(A, "66.66.66.66", 40003, 53, b"x")),  # odd length: payload TLV padded
    ]
    lines, counters = _replay(trails, tmp_path, frames, DLT_NFLOG)
    assert _sports(lines) == [40001, 40002, 40003]
    assert counters["malformed"] == counters["non_ip"] == 0


def test_nflog_without_payload_or_with_hostile_attributes_is_not_ip() -> None:
    syn = t.tcp4(A, "66.66.66.66", 1, 443, t.SYN)
    p = _parse([
        _nflog(2, _nla(1, b"\x08\x00\x01\x00")),  # no payload attribute
        _nflog(2, _nla(1, b"", length=0), _nla(9, syn)),  # zero length: the walk stops, never loops
        _nflog(2, _nla(1, b"\0" * 4, length=400), _nla(9, syn)),  # length past the packet
        _nflog(7, _nla(9, syn)),  # neither IPv4 nor IPv6
        _nflog(2),
    ], DLT_NFLOG)
    assert p.version.tolist() == [0] * 5 and not p.malformed.any()


def test_nflog_payload_length_bounds_the_packet() -> None:
    udp = bytearray(t.udp4(A, "66.66.66.66", 1, 53, b"abcd"))
    udp[2:4] = b"\0\0"  # trust the link layer's length
    p = _parse([_nflog(2, _nla(9, bytes(udp))) + b"\0" * 8], DLT_NFLOG)
    assert p.version.tolist() == [4] and p.payload_len.tolist() == [4]


def test_unsupported_link_type_refused_with_one_line(trails: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    capture = tmp_path / "capture.pcap"
    with PcapWriter(capture, linktype=147) as w:
        w.write(b"\0" * 40, T0)
    log_dir = tmp_path / "logs"
    assert main(["sensor", "--trails", str(trails), "-r", str(capture), "--log-dir", str(log_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"maltrail: error: {capture}: link type 147 (USER0) is not supported; supported: 0 (NULL), ")
    assert "239 (NFLOG)" in err and "104 (C_HDLC)" in err and not list(log_dir.glob("*.log"))
