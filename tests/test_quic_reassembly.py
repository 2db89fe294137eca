"""QUIC ClientHellos cut over several CRYPTO frames, Initials and datagrams (issue 11): reassembled
by the aggregator in capture order, the same events for 1 and 2 workers, bounded state."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.pcapio import PcapWriter
from engine.quicstreams import MAX_CHUNKS, MAX_CONNECTIONS, MAX_STREAM_BYTES, QuicStreams
from engine.sensor import run_sensor
from workers import payload as payload_module
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.protocols.quic import MAX_COALESCED, MAX_FRAMES, QUIC_V1, QUIC_V2, initial_crypto, initial_sni
from workers.worker import batch_items

TRAILS = "split-evil.example,malware (test),(static)\nsplit-evil2.example,malware (test),(static)\n"
T0 = 1_700_000_000.0
CLIENT, SERVER = "10.0.0.66", "203.0.113.31"
DCID, NEW_DCID, SCID = bytes.fromhex("8394c8f03e515708"), bytes.fromhex("f00dfeed12345678"), b"\xaa" * 5
VERSIONS = ((QUIC_V1, "split-evil.example", 50500), (QUIC_V2, "split-evil2.example", 50501))


def _hello(sni: str) -> tuple[bytes, int]:
    """A post-quantum ClientHello (too big for one Initial) and a cut inside its SNI."""
    hello = t.quic_client_hello(sni, post_quantum=True)
    assert len(hello) > 1200
    return hello, hello.index(sni.encode()) + 4


def _initial(frames: bytes, version: int, dcid: bytes = DCID, token: bytes = b"", pad_to: int = 1200,
             pn: int = 0) -> bytes:
    return t.quic_initial_packet(frames, dcid, version, SCID, token, pad_to=pad_to, packet_number=pn)


def _two_frames_per_packet(version: int, sni: str) -> list[bytes]:
    """Two datagrams, each one Initial with two CRYPTO frames: neither is contiguous through the SNI."""
    h, cut = _hello(sni)
    return [_initial(t.quic_crypto(0, h[:cut]) + t.quic_crypto(900, h[900:]), version),
            _initial(t.quic_crypto(cut, h[cut:900]), version, pn=1)]


def _two_datagrams(version: int, sni: str) -> list[bytes]:
    h, cut = _hello(sni)
    return [_initial(t.quic_crypto(0, h[:cut]), version), _initial(t.quic_crypto(cut, h[cut:]), version, pn=1)]


def _coalesced_packets(version: int, sni: str) -> list[bytes]:
    h, cut = _hello(sni)
    return [_initial(t.quic_crypto(0, h[:cut]), version, pad_to=0),
            _initial(t.quic_crypto(cut, h[cut:]), version, pn=1)]


def _coalesced(version: int, sni: str) -> list[bytes]:
    """One datagram of two Initials (the first unpadded), the ClientHello cut between them: read by
    the worker (the datagram's every Initial), where only its first used to be."""
    return [b"".join(_coalesced_packets(version, sni))]


def _out_of_order(version: int, sni: str) -> list[bytes]:
    """Small CRYPTO frames shuffled over two datagrams; the second half arrives first."""
    h, _ = _hello(sni)
    pieces = [(off, h[off : off + 100]) for off in range(0, len(h), 100)]
    first = b"".join(t.quic_crypto(off, data) for off, data in pieces[::-2])
    second = b"\x01" + b"".join(t.quic_crypto(off, data) for off, data in pieces[-2::-2])
    return [_initial(first, version), _initial(second, version, pn=1)]


def _retry(version: int, sni: str) -> list[bytes]:
    """The first Initial (half the ClientHello) meets a Retry; the client starts again under the new
    DCID's keys, with the token, the ClientHello again cut over two datagrams."""
    h, cut = _hello(sni)
    token = b"retry-token-" + bytes(20)
    return [_initial(t.quic_crypto(0, h[:cut]), version),
            _initial(t.quic_crypto(0, h[:cut]), version, NEW_DCID, token, pn=1),
            _initial(t.quic_crypto(cut, h[cut:]), version, NEW_DCID, token, pn=2)]


SCENARIOS = {"two_frames_per_packet": _two_frames_per_packet, "two_datagrams": _two_datagrams,
             "coalesced": _coalesced, "out_of_order": _out_of_order, "retry": _retry}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("quicidx")
    (d / "trails.csv").write_text(TRAILS)
    build_index_file([str(d / "trails.csv")], d / "t.mtidx")
    return d / "t.mtidx"


def _capture(path: Path, build: object) -> Path:
    """Both versions' connections interleaved datagram by datagram, with the server's Retry where
    the scenario has one."""
    flows = [(sport, build(version, sni)) for version, sni, sport in VERSIONS]  # type: ignore[operator]
    ts = T0
    with PcapWriter(path) as w:
        for step in range(max(len(d) for _, d in flows)):
            for sport, datagrams in flows:
                if step < len(datagrams):
                    w.write(t.ethernet(t.udp4(CLIENT, SERVER, sport, 443, datagrams[step])), ts)
                    ts += 0.001
                if build is _retry and step == 0:
                    retry = t.quic_retry(DCID, SCID, NEW_DCID, b"retry-token-" + bytes(20))
                    w.write(t.ethernet(t.udp4(SERVER, CLIENT, 443, sport, retry)), ts)
                    ts += 0.001
    return path


def _run(index: Path, capture: Path, log_dir: Path, workers: int) -> list[str]:
    cfg = SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=workers, batch_packets=1)
    run_sensor(cfg, [capture])
    return [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_split_client_hello_reported_for_1_and_2_workers(index: Path, tmp_path: Path, name: str) -> None:
    build = SCENARIOS[name]
    for version, sni, _ in VERSIONS:  # no Initial holds the SNI on its own: a per-packet reading misses it
        packets = _coalesced_packets(version, sni) if build is _coalesced else build(version, sni)
        assert all(initial_sni(d) is None for d in packets)
    capture = _capture(tmp_path / f"{name}.pcap", build)
    one, two = (_run(index, capture, tmp_path / f"w{w}", w) for w in (1, 2))
    assert one == two
    assert len(one) == 2, one
    for (_, sni, sport), line in zip(VERSIONS, one, strict=True):
        assert f' {sport} {SERVER} 443 UDP DNS {sni} "malware (test)" ' in line


def test_whole_client_hello_keeps_the_fast_path(index: Path) -> None:
    """A datagram holding the whole ClientHello reports from the worker and sends nothing more; one
    holding a part sends its chunks."""
    inspector = PayloadInspector(TrailIndex(index), DetectionSettings())
    ctx_args = (1, 2, 3, 4, 5, 443)
    whole = inspector.sni_events(*ctx_args, "split-evil.example")
    assert [ev[7:9] for ev in whole] == [("DNS", "split-evil.example")]
    assert initial_crypto(t.quic_initial("split-evil.example"))[1]
    h, cut = _hello("split-evil.example")
    scid, chunks = initial_crypto(_initial(t.quic_crypto(0, h[:cut]), QUIC_V1))
    assert scid == SCID and chunks == [(0, h[:cut])]


def test_server_initial_to_a_client_read_here_is_not_decrypted(index: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's Initial carries the client's SCID as DCID and is protected with the server's
    keys: a worker that read the client's Initial skips it (no key derivation). Shown with a
    reverse-direction packet that would decrypt under its DCID's client keys: skipped as a reply to
    the client seen, read when it answers no client this worker saw."""
    calls: list[bytes] = []
    real = payload_module.initial_crypto
    monkeypatch.setattr(payload_module, "initial_crypto", lambda data: calls.append(bytes(data)) or real(data))
    inspector = PayloadInspector(TrailIndex(index), DetectionSettings())
    client = _initial(t.quic_crypto(0, t.quic_client_hello("split-evil.example")), QUIC_V1)
    reply = _initial(t.quic_crypto(0, t.quic_client_hello("split-evil2.example")), QUIC_V1, dcid=SCID)
    frames = [t.ethernet(t.udp4(CLIENT, SERVER, 50500, 443, client)),
              t.ethernet(t.udp4(SERVER, CLIENT, 443, 50500, reply)),
              t.ethernet(t.udp4(SERVER, CLIENT, 443, 50999, reply))]  # to a port whose Initial was not seen
    meta, data = t.frames_batch(frames)
    items = batch_items(parse_batch(meta, data, 1), data, IpMatcher(inspector.index), inspector)
    reported = [(row, payload[0][8]) for row, kind, payload in items if kind == "event"]
    assert reported == [(0, "split-evil.example"), (2, "split-evil2.example")]
    assert calls == [client, reply]


def _streams() -> tuple[QuicStreams, list[str]]:
    found: list[str] = []

    def check(sec: int, usec: int, src: object, sport: int, dst: object, dport: int, sni: str) -> list:
        found.append(sni)
        return [sni]

    return QuicStreams(check), found  # type: ignore[arg-type]


def test_reassembly_reports_once_and_ignores_retransmissions() -> None:
    q, found = _streams()
    h, cut = _hello("split-evil.example")
    assert q.add(0, 0, 1, 2, 3, 443, SCID, [(cut, h[cut:])]) == []
    assert q.add(0, 0, 1, 2, 3, 443, SCID, [(0, h[:cut])]) == ["split-evil.example"]
    assert q.add(0, 0, 1, 2, 3, 443, SCID, [(0, h[:cut]), (cut, h[cut:])]) == []
    assert found == ["split-evil.example"]


def test_connection_flood_keeps_at_most_the_bound() -> None:
    q, _ = _streams()
    h, cut = _hello("split-evil.example")
    for i in range(MAX_CONNECTIONS + 500):
        q.add(0, 0, 1, 2, 3, 443, i.to_bytes(4, "big"), [(0, h[:cut])])
        assert len(q.connections) <= MAX_CONNECTIONS
    assert (0).to_bytes(4, "big") not in {key[4] for key in q.connections}  # the oldest went first


def test_connection_past_the_byte_bound_is_dropped() -> None:
    q, found = _streams()
    h, cut = _hello("split-evil.example")
    filler = bytes(1000)
    for off in range(2000, MAX_STREAM_BYTES + 2000, len(filler)):  # gaps kept waiting, then too many bytes
        q.add(0, 0, 1, 2, 3, 443, SCID, [(off, filler)])
    assert q.dropped == 1
    assert q.add(0, 0, 1, 2, 3, 443, SCID, [(0, h[:cut]), (cut, h[cut:])]) == []
    assert found == []
    q.add(0, 0, 1, 2, 4, 443, SCID, [(off, b"x") for off in range(2000, 2000 + 2 * (MAX_CHUNKS + 1), 2)])
    assert q.dropped == 2  # too many chunks waiting


_CHUNKS = st.lists(st.tuples(st.integers(0, 2 * MAX_STREAM_BYTES), st.binary(max_size=600)), max_size=8)


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.tuples(st.integers(0, 3), _CHUNKS), max_size=40))
def test_fuzz_fragment_sequences_respect_the_bounds(steps: list[tuple[int, list[tuple[int, bytes]]]]) -> None:
    q, _ = _streams()
    h, _ = _hello("split-evil.example")
    for conn, chunks in steps:
        chunks = [(off, data or h[off : off + 100]) for off, data in chunks]
        q.add(0, 0, 1, 2, 3, 443, bytes((conn,)), chunks)
        for stream in q.connections.values():
            if stream is not None:
                assert len(stream.prefix) + stream.waiting_bytes <= MAX_STREAM_BYTES
                assert len(stream.waiting) <= MAX_CHUNKS


@settings(max_examples=300, deadline=2000)
@given(st.sampled_from(list(SCENARIOS)), st.sampled_from([QUIC_V1, QUIC_V2]),
       st.lists(st.tuples(st.integers(0, 2399), st.integers(0, 255)), max_size=6), st.integers(0, 2400))
def test_fuzz_mutated_split_initials(name: str, version: int, edits: list[tuple[int, int]], cut: int) -> None:
    """Mutated and cut datagrams never raise; what they yield stays within the frame budget, and the
    aggregator's state within its bounds."""
    q, _ = _streams()
    for datagram in SCENARIOS[name](version, "split-evil.example"):
        data = bytearray(datagram)
        for pos, value in edits:
            if pos < len(data):
                data[pos] = value
        scid, chunks = initial_crypto(bytes(data[:cut]))
        assert len(chunks) <= MAX_FRAMES * MAX_COALESCED
        q.add(0, 0, 1, 2, 3, 443, scid, chunks)
    assert all(s is None or len(s.prefix) + s.waiting_bytes <= MAX_STREAM_BYTES for s in q.connections.values())
