"""Issue 11: tunnels are taken apart and the inner packet is matched as if captured directly. Each
encapsulation is written to a pcap by PcapWriter and replayed through the real `run_sensor`: an
inner IP trail hit and an inner DNS query for a listed domain, both reported with the inner
addresses; nesting up to MAX_TUNNEL_DEPTH works, deeper is counted and bounded; mutated tunnel
headers never raise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_support import replay_frames

from engine import traffic as t
from workers.batch import DLT_EN10MB, MAX_TUNNEL_DEPTH, parse_batch

TRAILS = ("66.66.66.66,malware (test),(static)\ndead::beef,malware (test),(static)\n"
          "evil-tunnel.com,malware (test),(static)\n")
T0 = 1_700_000_000.0
A, A6, DNS, DNS6 = "10.0.0.66", "2001:db8::1", "192.0.2.53", "2001:db8::53"
V1, V2, W1, W2 = "198.51.100.1", "198.51.100.2", "2001:db8:ff::1", "2001:db8:ff::2"  # tunnel endpoints

Wrap = Callable[[bytes], bytes]
ENCAPSULATIONS: dict[str, Wrap] = {
    "gre": lambda ip: t.ethernet(t.gre(V1, V2, ip)),
    "gre-csum-key-seq": lambda ip: t.ethernet(t.gre(V1, V2, ip, csum=True, key=7, seq=9)),
    "gre-over-ipv6": lambda ip: t.ethernet(t.gre(W1, W2, ip, key=1)),
    "gre-ethernet": lambda ip: t.ethernet(t.gre(V1, V2, t.ethernet(ip, vlan=12), ptype=t.ETH_BRIDGE)),
    "erspan-1": lambda ip: t.ethernet(t.erspan(V1, V2, t.ethernet(ip), 1)),
    "erspan-2": lambda ip: t.ethernet(t.erspan(V1, V2, t.ethernet(ip), 2)),
    "erspan-3": lambda ip: t.ethernet(t.erspan(V1, V2, t.ethernet(ip), 3)),
    "erspan-3-platform": lambda ip: t.ethernet(t.erspan(V1, V2, t.ethernet(ip), 3, platform=True)),
    "vxlan": lambda ip: t.ethernet(t.vxlan(V1, V2, t.ethernet(ip))),
    "vxlan-over-ipv6": lambda ip: t.ethernet(t.vxlan(W1, W2, t.ethernet(ip, vlan=[5, 6]))),
    "geneve-ethernet": lambda ip: t.ethernet(t.geneve(V1, V2, t.ethernet(ip), ptype=t.ETH_BRIDGE)),
    "geneve-ip-options": lambda ip: t.ethernet(t.geneve(V1, V2, ip, options=b"\x01\x02\x03\x01" + b"x" * 4)),
    "ipip": lambda ip: t.ethernet(t.ipip(V1, V2, ip)),
    "ip-in-ipv6": lambda ip: t.ethernet(t.ipip(W1, W2, ip)),
    "mpls": lambda ip: t.mpls(ip, labels=(16, 17, 18)),
    "mpls-pseudowire": lambda ip: t.mpls(t.ethernet(ip), control_word=True),
    "gre-mpls": lambda ip: t.ethernet(t.gre(V1, V2, t.mpls(ip)[14:], ptype=t.ETH_MPLS)),
}
IPV6_ONLY: dict[str, Wrap] = {
    "teredo": lambda ip6: t.ethernet(t.teredo(V1, V2, ip6)),
    "teredo-auth-origin": lambda ip6: t.ethernet(t.teredo(V1, V2, ip6, auth=(b"client", b"au"), origin=True)),
    "teredo-from-server": lambda ip6: t.ethernet(t.teredo(V2, V1, ip6, origin=True, from_server=True)),
}


@pytest.fixture
def trails(tmp_path: Path) -> Path:
    csv = tmp_path / "trails.csv"
    csv.write_text(TRAILS)
    return csv


def _replay(trails: Path, tmp_path: Path, frames: list[bytes]) -> tuple[list[list[str]], dict]:
    """(event lines split in fields, worker counters) of the sensor over a pcap of `frames`."""
    lines, counters = replay_frames(trails, tmp_path, frames, DLT_EN10MB)
    return [line.split(" ") for line in lines], counters


def _parse(frames: list[bytes]):
    offsets = np.cumsum([0] + [len(f) for f in frames])[:-1]
    meta = np.array([[0, 0, o, len(f)] for o, f in zip(offsets, frames, strict=True)], dtype=np.uint32)
    return parse_batch(meta.reshape(-1, 4), np.frombuffer(b"".join(frames), dtype=np.uint8), DLT_EN10MB)


def _inner(v6: bool) -> list[bytes]:
    """A SYN to the trail address and a DNS query for the listed domain."""
    query = t.dns_query("evil-tunnel.com")
    if v6:
        return [t.tcp6(A6, "dead::beef", 40001, 443, t.SYN), t.udp6(A6, DNS6, 40002, 53, query)]
    return [t.tcp4(A, "66.66.66.66", 40001, 443, t.SYN), t.udp4(A, DNS, 40002, 53, query)]


def _assert_inner_events(lines: list[list[str]], v6: bool) -> None:
    src, dst, trail = (A6, DNS6, "dead::beef") if v6 else (A, DNS, "66.66.66.66")
    # fields: date, time, sensor, src_ip, src_port, dst_ip, dst_port, proto, type, trail, ...
    got = sorted(tuple(f[3:10]) for f in lines)
    assert got == sorted([
        (src, "40001", trail, "443", "TCP", "IP", trail),
        (src, "40002", dst, "53", "UDP", "DNS", "evil-tunnel.com"),
    ]), got


@pytest.mark.parametrize("name", [*ENCAPSULATIONS, *IPV6_ONLY])
def test_encapsulation_inner_trail_and_dns_through_sensor(trails: Path, tmp_path: Path, name: str) -> None:
    wrap, versions = (IPV6_ONLY[name], (True,)) if name in IPV6_ONLY else (ENCAPSULATIONS[name], (False, True))
    for v6 in versions:
        lines, counters = _replay(trails, tmp_path / str(v6), [wrap(ip) for ip in _inner(v6)])
        _assert_inner_events(lines, v6)
        assert counters["malformed"] == counters["non_ip"] == 0


def _nest(ip: bytes, levels: int) -> bytes:
    """`levels` tunnels around `ip`, cycling through the kinds (IP-in-IP, GRE, VXLAN, Geneve)."""
    kinds = (lambda p: t.ipip(V1, V2, p), lambda p: t.gre(W1, W2, p, key=7),
             lambda p: t.vxlan(V1, V2, t.ethernet(p)), lambda p: t.geneve(W1, W2, p))
    for i in range(levels):
        ip = kinds[i % 4](ip)
    return t.ethernet(ip)


def test_nesting_up_to_the_bound_is_matched_and_deeper_is_counted(trails: Path, tmp_path: Path) -> None:
    frames = [_nest(ip, levels) for levels in range(1, MAX_TUNNEL_DEPTH + 1) for ip in _inner(False)]
    p = _parse(frames)
    assert p.src4[::2].tolist() == [0x0A000042] * MAX_TUNNEL_DEPTH and not p.malformed.any()
    lines, counters = _replay(trails, tmp_path, frames)
    assert len(lines) == 2 * MAX_TUNNEL_DEPTH and counters["malformed"] == 0
    too_deep = [_nest(ip, MAX_TUNNEL_DEPTH + 1) for ip in _inner(False)]
    p = _parse(too_deep)
    assert p.malformed.all() and not p.first_frag.any()
    lines, counters = _replay(trails, tmp_path / "deep", too_deep)
    assert lines == [] and counters["malformed"] == 2


def test_unknown_or_invalid_tunnel_headers_leave_the_outer_packet() -> None:
    """GRE version 1 (PPTP), an unknown GRE payload type, VXLAN without its I flag and Teredo
    bubbles (no IPv6 inside) are matched as the outer UDP / GRE packets they are."""
    syn = _inner(False)[0]
    pptp = bytearray(t.ethernet(t.gre(V1, V2, syn)))
    pptp[14 + 20 + 1] |= 1
    vx = bytearray(t.ethernet(t.vxlan(V1, V2, t.ethernet(syn))))
    vx[14 + 28] = 0
    frames = [bytes(pptp), t.ethernet(t.gre(V1, V2, syn, ptype=0x880B)), bytes(vx),
              t.ethernet(t.udp4(V1, V2, 40000, 3544, b"\0" * 40))]
    p = _parse(frames)
    assert p.src4.tolist() == [0xC6336401] * 4 and not p.malformed.any()


_TUNNELLED = [wrap(ip) for wrap in ENCAPSULATIONS.values() for ip in _inner(False)[:1]] + [
    wrap(_inner(True)[1]) for wrap in IPV6_ONLY.values()] + [_nest(_inner(False)[1], MAX_TUNNEL_DEPTH + 1)]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_TUNNELLED) - 1), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                     max_size=8), st.integers(0, 400))
def test_mutated_tunnel_headers_never_raise_or_loop(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    frame = bytearray(_TUNNELLED[which])
    for at, value in edits:
        if at < len(frame):
            frame[at] = value
    frames = [bytes(frame), bytes(frame[: max(cut, 1)]), _TUNNELLED[0]]
    p = _parse(frames)
    assert p.n == 3 and p.src4[2] == 0x0A000042
    ends = np.cumsum([len(f) for f in frames])
    assert (p.payload_off + p.payload_len <= ends.max()).all() or not p.payload_len.any()
    assert not p.tcp_flags[p.proto != 6].any()  # inner and outer columns never mixed within a row
