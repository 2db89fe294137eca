"""DNS over TCP (issue 11): length-prefixed messages in a TCP segment are checked like UDP ones,
and the framing walk is bounded whatever the segment holds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor
from workers.protocols.dns import MAX_TCP_MESSAGES, tcp_messages

TRAILS = """\
evil-tcp-one.com,malware (test),(static)
evil-tcp-two.com,malware (test),(static)
evil-tcp-three.com,malware (test),(static)
evil-tcp-four.com,malware (test),(static)
198.51.100.53,known attacker,(static)
198.51.100.90,sinkhole testsink (malware),(static)
"""
T0 = 1_700_000_000.0
A, R = "10.0.0.66", "192.0.2.53"


def _framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def _to_resolver(ts: float, sport: int, segment: bytes, resolver: str = R) -> tuple[float, bytes]:
    return ts, t.ethernet(t.tcp4(A, resolver, sport, 53, t.PSH | t.ACK, segment))


def _from_resolver(ts: float, dport: int, segment: bytes) -> tuple[float, bytes]:
    return ts, t.ethernet(t.tcp4(R, A, 53, dport, t.PSH | t.ACK, segment))


def _response(name: str, answers: list[str], rcode: int = 0) -> bytes:
    payload = bytearray(t.dns_response(name, answers, rcode=rcode))
    payload[3] = 0x80 | rcode  # RA set, plain answer: Maltrail's exact flag byte
    return bytes(payload)


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("dnstcp")
    (d / "trails.csv").write_text(TRAILS)
    build_index_file([str(d / "trails.csv")], d / "t.mtidx")
    three = _framed(*(t.dns_query(f"evil-tcp-{n}.com", txid=i) for i, n in enumerate(("two", "three", "four"))))
    query = t.dns_query("evil-tcp-split.com")
    frames = [
        _to_resolver(T0, 50000, _framed(t.dns_query("evil-tcp-one.com"))),
        _to_resolver(T0 + 1, 50001, three),
        _from_resolver(T0 + 2, 50002, _framed(_response("xkqwzrtplmnbvcdf.com", [], rcode=3))),
        _from_resolver(T0 + 3, 50003, _framed(_response("sinkholed.com", ["198.51.100.90"]))),
        _to_resolver(T0 + 4, 50004, _framed(t.dns_query("whatever.com")), resolver="198.51.100.53"),
        _to_resolver(T0 + 5, 50005, _framed(query)[:10]),  # split across segments: skipped
        _to_resolver(T0 + 5.1, 50005, _framed(query)[10:]),
    ]
    with PcapWriter(d / "dnstcp.pcap") as w:
        for ts, frame in frames:
            w.write(frame, ts)
    run_sensor(SensorConfig(name="t", trails=str(d / "t.mtidx"), log_dir=str(d / "logs"), workers=1),
               [d / "dnstcp.pcap"])
    return [line for f in sorted((d / "logs").glob("*.log")) for line in f.read_text().splitlines()]


def _one(lines: list[str], *parts: str) -> None:
    hits = [line for line in lines if all(p in line for p in parts)]
    assert len(hits) == 1, f"{parts}:\n" + "\n".join(lines)


def test_one_query_in_a_segment(lines: list[str]) -> None:
    _one(lines, "10.0.0.66 50000 192.0.2.53 53 TCP DNS evil-tcp-one.com", "malware (test)")


def test_three_queries_in_one_segment(lines: list[str]) -> None:
    for name in ("two", "three", "four"):
        _one(lines, f"50001 192.0.2.53 53 TCP DNS evil-tcp-{name}.com", "malware (test)")


def test_nxdomain_response(lines: list[str]) -> None:
    _one(lines, "(xkqwzrtplmnbvcdf).com", "threshold no such domain (suspicious)")


def test_sinkhole_answer_and_resolver_trail(lines: list[str]) -> None:
    _one(lines, "TCP DNS (sinkholed).com", "sinkholed by testsink (malware)")
    _one(lines, "TCP IP \"198.51.100.53 (whatever.com)\"", "known attacker")


def test_message_split_across_segments_is_skipped(lines: list[str]) -> None:
    assert not any("evil-tcp-split" in line for line in lines)
    assert len(lines) == 7


def test_framing_reads_complete_messages_only() -> None:
    q = t.dns_query("a.example.com")
    assert tcp_messages(_framed(q, q)) == [q, q]
    assert tcp_messages(_framed(q, q)[:-1]) == [q]
    assert tcp_messages(b"\x00") == [] and tcp_messages(b"") == []
    assert len(tcp_messages(_framed(*[q] * 40))) == MAX_TCP_MESSAGES


def _mutate(count: int, flips: list[tuple[int, int]], cut: int) -> bytes:
    """A stream of `count` framed queries with some bytes overwritten and the tail cut off."""
    stream = bytearray(_framed(*[t.dns_query("a.example.com")] * count))
    for pos, value in flips:
        if stream:
            stream[pos % len(stream)] = value
    return bytes(stream[: max(0, len(stream) - cut)])


mutated = st.builds(_mutate, st.integers(0, 40), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                          max_size=8), st.integers(0, 40))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2048), mutated))
def test_random_and_mutated_streams_are_bounded(segment: bytes) -> None:
    messages = tcp_messages(segment)
    assert len(messages) <= MAX_TCP_MESSAGES
    assert sum(len(m) + 2 for m in messages) <= len(segment)
    assert all(m in segment for m in messages)
