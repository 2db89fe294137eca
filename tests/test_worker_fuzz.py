"""Random and mutated packets through the whole worker path (parse, IP matching, payload
inspection, observations) and on through the aggregator's heuristics and event pipeline: no
exception escapes, malformed packets are counted. Also: state stays bounded under floods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.aggregator import EventPipeline, SniCheck, apply_items
from engine.eventlog import DailyLog
from engine.heuristics import Heuristics, HeuristicSettings
from engine.index.build import compile_index
from engine.index.fileformat import write_arrays
from engine.index.mapped import TrailIndex
from engine.quicstreams import QuicStreams
from engine.trails.ignore import IgnoreRules
from workers.batch import parse_batch
from workers.domains import NEGATIVE_CACHE_SIZE, DomainChecker
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_counters, batch_items

TRAILS = {"evil.example": ("malware (x)", "(static)"), "66.66.66.66": ("malware (x)", "(static)"),
          "/bad.php": ("malware (x)", "(static)")}
_PQ_HELLO = t.quic_client_hello("evil.example", post_quantum=True)
SEEDS = [
    t.ethernet(t.udp4("10.0.0.1", "192.0.2.53", 5353, 53, t.dns_query("a.evil.example"))),
    t.ethernet(t.udp4("192.0.2.53", "10.0.0.1", 53, 5353, t.dns_response("x.example", ["66.66.66.66"]))),
    t.ethernet(t.tcp4("10.0.0.1", "66.66.66.66", 1234, 80, t.PSH | t.ACK,
                      t.http_request("GET", "/bad.php?id=1'", host="evil.example", user_agent="masscan/1.0"))),
    t.ethernet(t.tcp4("10.0.0.1", "192.0.2.9", 1234, 443, t.PSH | t.ACK, t.tls_client_hello("evil.example"))),
    t.ethernet(t.udp4("10.0.0.1", "192.0.2.9", 1234, 443, t.quic_initial("evil.example"))),
    *(t.ethernet(t.udp4("10.0.0.1", "192.0.2.9", 1235, 443, t.quic_initial_packet(  # a ClientHello over 2 datagrams
        t.quic_crypto(start, _PQ_HELLO[start:end]), b"\x01" * 8, pad_to=1200)))
      for start, end in ((0, 100), (100, 1000))),
    t.ethernet(t.tcp4("10.0.0.1", "192.0.2.53", 5353, 53, t.PSH | t.ACK, b"".join(  # DNS over TCP, 3 messages
        len(m).to_bytes(2, "big") + m for m in (t.dns_query("a.evil.example"), t.dns_query("evil.example", 28),
                                                t.dns_response("nx.example", [], rcode=3))))),
    t.ethernet(t.tcp6("2001:db8::1", "2001:db8::2", 1, 2, t.SYN)),
    t.ethernet(t.icmp4("10.0.0.1", "66.66.66.66", 8, 0, b"x")),
]


class _World:
    """One worker's and one aggregator's objects, built once for all examples."""

    def __init__(self, tmp: Path) -> None:
        arrays, meta = compile_index(TRAILS)
        write_arrays(tmp / "t.mtidx", arrays, meta)
        self.index = TrailIndex(tmp / "t.mtidx")
        self.matcher = IpMatcher(self.index)
        self.inspector = PayloadInspector(self.index, DetectionSettings(check_missing_host=True,
                                                                        check_host_domains=True))
        self.heuristics = Heuristics(HeuristicSettings(), self.index.is_whitelisted_ip)
        self.quic = QuicStreams(SniCheck(self.index, DetectionSettings()))
        self.pipeline = EventPipeline(self.index, IgnoreRules(), DailyLog(tmp / "logs", "fuzz"), sensor="fuzz")

    def run(self, frames: list[bytes], linktype: int = 1) -> dict[str, int]:
        caplen = np.array([len(f) for f in frames], dtype=np.uint32)
        offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
        meta = np.stack([np.arange(len(frames), dtype=np.uint32) + 1_700_000_000, np.zeros(len(frames), np.uint32),
                         offsets, caplen], axis=1)
        data = np.frombuffer(b"".join(frames), dtype=np.uint8)
        parsed = parse_batch(meta, data, linktype)
        items = batch_items(parsed, data, self.matcher, self.inspector)
        apply_items(items, self.heuristics, self.pipeline, self.quic)
        self.pipeline.flush()
        return batch_counters(parsed.version, parsed.malformed, caplen)


_WORLD: dict[str, _World] = {}


def _world(tmp_path_factory) -> _World:
    if "w" not in _WORLD:
        _WORLD["w"] = _World(tmp_path_factory.mktemp("fuzz"))
    return _WORLD["w"]


mutated = st.builds(
    lambda seed, cuts, flips: _mutate(SEEDS[seed], cuts, flips),
    st.integers(0, len(SEEDS) - 1),
    st.integers(0, 2000),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
)


def _mutate(frame: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(frame[: max(0, len(frame) - cut % (len(frame) + 1))] if cut % 3 == 0 else frame)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(st.binary(max_size=300), mutated), min_size=1, max_size=20),
       linktype=st.sampled_from([1, 12, 113, 276, 0]))
def test_whole_worker_path_never_raises(tmp_path_factory, frames: list[bytes], linktype: int) -> None:
    counters = _world(tmp_path_factory).run(frames, linktype)
    assert counters["packets"] == len(frames)
    assert counters["malformed"] + counters["non_ip"] + counters["ipv4"] + counters["ipv6"] >= len(frames)


def test_malformed_seeds_are_counted(tmp_path_factory) -> None:
    cut = [f[:20] for f in SEEDS]  # Ethernet + 6 bytes of IP: declared IP, not parseable
    assert _world(tmp_path_factory).run(cut)["malformed"] == len(cut)


def test_state_plateaus_under_unique_key_floods(tmp_path: Path) -> None:
    arrays, meta = compile_index(TRAILS)
    write_arrays(tmp_path / "t.mtidx", arrays, meta)
    ix = TrailIndex(tmp_path / "t.mtidx")
    caps = HeuristicSettings(max_keys=500, max_items_per_key=50, max_dns_keys=1000)
    h = Heuristics(caps, ix.is_whitelisted_ip)
    for i in range(20_000):
        h.probes([6, 6, 17], [i, i, i], [0x0A000001, i + 1, 0x0A000001], [1, 1, 1], [i % 65536, 445, i % 65536],
                 [True, True, False])
        h.web_request(0, 0, f"198.18.{i >> 8 & 255}.{i & 255}", 1, "192.0.2.1", 80, f"s{i}")
        h.nxdomain(0, 0, "192.0.2.53", 53, "203.0.113.5", 1, f"r{i}.flood{i}.example")
        h.dns_query(0, 0, "10.0.0.1", 1, "192.0.2.53", 53, f"x{i}.f{i}.example", f"f{i}.example", f"x{i}")
    assert len(h.tcp.keys) <= 500 and len(h.udp.keys) <= 500 and len(h.web.keys) <= 500
    assert len(h.nx) <= 1000 and len(h.exhaustion) <= 1000
    checker = DomainChecker(ix)
    for i in range(NEGATIVE_CACHE_SIZE + 5000):
        assert checker.check(f"random{i}.clean-example.com") is None
    assert len(checker._clean) <= NEGATIVE_CACHE_SIZE
    hit = checker.check("www.evil.example")  # exact matching is untouched by the flood
    assert hit is not None and hit.trail == "(www).evil.example"
