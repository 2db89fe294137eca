"""`workers.queryobs`: a batch's DNS query observations travel as one columnar item, and the
aggregator applies each query in its place. The events must be those of one packet at a time:
a query's own trail events follow its observation (an exhausted domain suppresses them), and
every later item - ticks, address events, NXDOMAIN answers, other queries - sees the state as it
was at its place in the capture."""

from __future__ import annotations

from pathlib import Path
from random import Random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from index_support import index_file

from engine import traffic as t
from engine.aggregator import EventPipeline, apply_items
from engine.eventlog import Event
from engine.heuristics import Heuristics, HeuristicSettings
from engine.index.mapped import TrailIndex
from engine.index.namefilter import NameBytes
from engine.trails.ignore import IgnoreRules
from workers.batch import Parsed, parse_batch
from workers.match import IpMatcher
from workers.observe import TICK
from workers.payload import OBS_DNS_QUERIES, OBS_DNS_QUERY, DetectionSettings, Item, PayloadInspector
from workers.queryobs import Packed, QueryColumns, pack
from workers.worker import batch_items

TRAILS = {"exhaust-evil.com": ("malware (x)", "(static)"), "evil-two.com": ("malware (x)", "(static)"),
          "203.0.113.44": ("malware (x)", "(static)")}
CLIENT, RESOLVER, LISTED = "10.0.0.7", "192.0.2.53", "203.0.113.44"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return index_file(TRAILS, tmp_path_factory.mktemp("qobs"))


def _pack(p: Parsed, rows: np.ndarray, exhs: list[tuple[str, str]]) -> Packed:
    """`pack` of the queries `prefix.domain` of the (domain, prefix) pairs."""
    return pack(p, rows, [f"{prefix}.{domain}" for domain, prefix in exhs], np.array([len(x) + 1 for _, x in exhs]))


def _frame(kind: str, k: int) -> bytes:
    """One packet of a kind: queries that count against a listed or an unlisted domain, one sent to
    a listed resolver, a two-label listed name (no exhaustion domain), an NXDOMAIN answer, a SYN, a
    packet to a listed address."""
    sport = 20000 + k
    if kind == "listed":
        return t.ethernet(t.udp4(CLIENT, RESOLVER, sport, 53, t.dns_query(f"s{k % 9}.exhaust-evil.com")))
    if kind == "other":
        return t.ethernet(t.udp4(CLIENT, RESOLVER, sport, 53, t.dns_query(f"s{k % 7}.other-dom.org")))
    if kind == "resolver":
        return t.ethernet(t.udp4(CLIENT, LISTED, sport, 53, t.dns_query(f"r{k}.other-dom.org")))
    if kind == "two":
        return t.ethernet(t.udp4(CLIENT, RESOLVER, sport, 53, t.dns_query("evil-two.com")))
    if kind == "nx":
        payload = bytearray(t.dns_response(f"n{k}.other-dom.org", [], rcode=3))
        payload[3] = 0x83
        return t.ethernet(t.udp4(RESOLVER, "198.51.100.5", 53, sport, bytes(payload)))
    if kind == "syn":
        return t.ethernet(t.tcp4(CLIENT, "192.0.2.80", sport, 443, t.SYN))
    return t.ethernet(t.tcp4(CLIENT, LISTED, sport, 80, t.ACK))


def _capture(seed: int) -> tuple[list[bytes], list[tuple[int, int]], list[str]]:
    """Packets of every kind in a random order, mostly queries; time moves on by fractions of a
    second, now and then past the exhaustion window."""
    rng = Random(seed)
    kinds = ["listed"] * 6 + ["other"] * 6 + ["resolver", "two", "nx", "nx", "syn", "address"]
    frames, times, chosen, now = [], [], [], 1_700_000_000_000_000
    for k in range(400):
        chosen.append(rng.choice(kinds))
        frames.append(_frame(chosen[-1], k))
        now += rng.choice((0, 0, 0, 150_000, 400_000, 61_000_000 if rng.random() < 0.02 else 0))
        times.append(divmod(now, 1_000_000))
    return frames, times, chosen


def _one_by_one(items: list[Item]) -> list[Item]:
    """A one-packet batch's items with its columnar query observation as the tuple of one query,
    which the aggregator applies right where it is: the order of the items is the capture's."""
    out = []
    for row, kind, data in items:
        if kind == OBS_DNS_QUERIES:
            read = QueryColumns(data)
            assert read.rows == [row]
            data, kind = (read.secs[0], *read.packet(0), read.domains[0], read.prefixes[0]), OBS_DNS_QUERY
        out.append((row, kind, data))
    return out


def _events(index: Path, frames: list[bytes], times: list[tuple[int, int]], batch: int) -> list[Event]:
    """The events of the capture sent in batches of `batch` packets through one worker's path and
    the aggregator's heuristics and pipeline; one packet at a time, the queries as single tuples."""
    ix = TrailIndex(index)
    matcher, inspector = IpMatcher(ix), PayloadInspector(ix, DetectionSettings(use_heuristics=True))
    heuristics = Heuristics(HeuristicSettings(dns_exhaustion_threshold=3, nxdomain_threshold=4), ix.is_whitelisted_ip)
    pipeline = EventPipeline(ix, IgnoreRules(), None)
    events: list[Event] = []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        caplen = np.array([len(f) for f in chunk], dtype=np.uint32)
        offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
        meta = np.column_stack([np.array(times[start:start + batch], np.uint32), offsets, caplen])
        data = np.frombuffer(b"".join(chunk), dtype=np.uint8)
        items = batch_items(parse_batch(meta, data, 1), data, matcher, inspector)
        apply_items(_one_by_one(items) if batch == 1 else items, heuristics, pipeline)
        events += pipeline.pending
        pipeline.flush()
    return events


@pytest.mark.parametrize("seed", range(4))
def test_columnar_queries_give_the_events_of_one_packet_at_a_time(index: Path, seed: int) -> None:
    frames, times, kinds = _capture(seed)
    one_by_one = _events(index, frames, times, 1)
    assert any(ev[9] == "potential dns exhaustion (suspicious)" for ev in one_by_one)  # the case is exercised:
    listed = sum(ev[8].endswith(").exhaust-evil.com") and ev[9] == "malware (x)" for ev in one_by_one)
    assert 0 < listed < kinds.count("listed")  # exhaustion suppressed some trail events, not all
    for batch in (400, 37, 5):
        assert _events(index, frames, times, batch) == one_by_one


def test_a_batch_sends_its_queries_as_one_item_in_ascending_rows(index: Path) -> None:
    ix = TrailIndex(index)
    inspector = PayloadInspector(ix, DetectionSettings(use_heuristics=True))
    frames = [_frame(kind, k) for k, kind in enumerate(("listed", "syn", "two", "other", "resolver", "listed"))]
    meta, data = t.frames_batch(frames)
    items = batch_items(parse_batch(meta, data, 1), data, IpMatcher(ix), inspector)
    (column,) = [data for _, kind, data in items if kind == OBS_DNS_QUERIES]
    read = QueryColumns(column)
    assert read.rows == [0, 3, 4, 5]  # the two-label name counts against no domain
    assert read.domains == ["exhaust-evil.com", "other-dom.org", "other-dom.org", "exhaust-evil.com"]
    assert read.prefixes == ["s0", "s3", "r4", "s5"]
    usec, src, sport, dst, dport, name = read.packet(2)
    assert (src, sport, dst, dport, name) == (0x0A000007, 20004, 0xCB00712C, 53, "r4.other-dom.org")


def test_ipv6_queries_keep_their_addresses() -> None:
    frames = [t.ethernet(t.udp4(CLIENT, RESOLVER, 1000, 53, t.dns_query("a.example.org"))),
              t.ethernet(t.udp6("2001:db8::7", "2001:db8::53", 1001, 53, t.dns_query("b.example.org"))),
              t.ethernet(t.udp4("10.0.0.9", RESOLVER, 1002, 53, t.dns_query("c.example.org")))]
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)
    read = QueryColumns(_pack(p, np.arange(3), [("example.org", "a"), ("example.org", "b"), ("example.org", "c")]))
    assert read.packet(0)[1] == 0x0A000007
    assert read.packet(1)[1] == bytes.fromhex("20010db8" + "0" * 22 + "07")
    assert read.packet(1)[3] == bytes.fromhex("20010db8" + "0" * 22 + "53")
    assert read.packet(2)[1:4] == (0x0A000009, 1002, 0xC0000235)
    assert read.packet(2)[5] == "c.example.org"


def test_a_query_row_starts_with_its_tick_and_address_events_and_ends_with_its_own_events() -> None:
    """Row 2's third query exhausts d.com: the row's address event (untagged) comes before the
    exhaustion event, its own trail event (tagged d.com) is suppressed; the row's tick runs first."""
    frames = [t.ethernet(t.udp4(CLIENT, RESOLVER, 1000 + k, 53, t.dns_query(f"{n}.d.com")))
              for k, n in enumerate("abc")]
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)
    column = _pack(p, np.arange(3), [("d.com", k) for k in "abc"])
    sec = int(p.sec[0])
    address: Event = (sec, 0, CLIENT, 1002, LISTED, 53, "UDP", "IP", LISTED, "malware (x)", "(static)")
    own: Event = (sec, 0, CLIENT, 1002, RESOLVER, 53, "UDP", "DNS", "c.d.com", "malware (x)", "(static)")
    rest = [(2, TICK, (sec + 1, 0)), (2, "event", (address,)), (2, "event", (own, "d.com"))]
    old = [(k, OBS_DNS_QUERY, (sec, 0, 0x0A000007, 1000 + k, 0xC0000235, 53, f"{n}.d.com", "d.com", n))
           for k, n in enumerate("abc")]

    def events(items: list[Item]) -> list[Event]:
        pipeline = EventPipeline(_Nothing(), IgnoreRules(), None)  # type: ignore[arg-type]
        apply_items(items, Heuristics(HeuristicSettings(dns_exhaustion_threshold=1), lambda ip: False), pipeline)
        return pipeline.pending

    expected = events([old[0], old[1], rest[0], rest[1], old[2], rest[2]])
    assert [ev[9] for ev in expected] == ["malware (x)", "potential dns exhaustion (suspicious)"]
    assert events([(0, OBS_DNS_QUERIES, column), *rest]) == expected


class _Nothing:
    """An index that whitelists nothing (the pipeline asks it about IP events)."""

    def is_whitelisted_ip(self, ip: str) -> bool:
        return False


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["a.com", "b.org", "c.net"]), st.sampled_from("wxyz")),
                min_size=1, max_size=60))
def test_queries_in_columns_count_as_one_at_a_time(queries: list[tuple[int, str, str]]) -> None:
    """`Heuristics.dns_queries` (entries opened and grown inline) equals `dns_query` per query, with
    a short window, a low threshold and few keys: expiry, exhaustion and eviction all happen."""
    frames = [t.ethernet(t.udp4(CLIENT, RESOLVER, 1000 + k, 53, t.dns_query(f"{n}.{d}"))) for k, (_, d, n) in
              enumerate(queries)]
    meta, data = t.frames_batch(frames)
    meta[:, 0] += np.cumsum([step for step, _, _ in queries]).astype(np.uint32)
    read = QueryColumns(_pack(parse_batch(meta, data, 1), np.arange(len(queries)), [(d, n) for _, d, n in queries]))
    tight = HeuristicSettings(dns_exhaustion_threshold=2, dns_exhaustion_window=30, max_dns_keys=2)
    columns, single = Heuristics(tight, lambda ip: False), Heuristics(tight, lambda ip: False)
    expected = [ev for i in range(len(queries))
                for ev in single.dns_query(read.secs[i], *read.packet(i), read.domains[i], read.prefixes[i])]
    cut = len(queries) // 2
    assert columns.dns_queries(read, 0, cut) + columns.dns_queries(read, cut, len(queries)) == expected
    assert (columns.exhaustion, columns.exhausted) == (single.exhaustion, single.exhausted)


_LABEL = st.text("ab-_0.", max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_LABEL, _LABEL.map(lambda d: d + ".x")), min_size=1, max_size=20))
def test_packed_names_read_back_as_their_domains_and_prefixes(exhs: list[tuple[str, str]]) -> None:
    """Each name is cut where its domain starts, whatever the labels (empty, dotted, one character)."""
    query = t.dns_query("q.example.org")
    frames = [t.ethernet(t.udp4(CLIENT, RESOLVER, 1000 + k, 53, query)) for k in range(len(exhs))]
    meta, data = t.frames_batch(frames)
    read = QueryColumns(_pack(parse_batch(meta, data, 1), np.arange(len(exhs)), [(d, x) for x, d in exhs]))
    assert list(zip(read.prefixes, read.domains, strict=True)) == exhs
    assert [read.packet(i)[5] for i in range(len(exhs))] == [f"{x}.{d}" for x, d in exhs]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_LABEL, _LABEL.map(lambda d: d + ".x")), min_size=1, max_size=20))
def test_packing_from_the_decoders_bytes_is_packing_from_the_names(exhs: list[tuple[str, str]]) -> None:
    """The names' bytes as the DNS decoder lays them out (one line each) pack as the names do."""
    query = t.dns_query("q.example.org")
    meta, data = t.frames_batch([t.ethernet(t.udp4(CLIENT, RESOLVER, 1000 + k, 53, query)) for k in range(len(exhs))])
    p, rows = parse_batch(meta, data, 1), np.arange(len(exhs))
    names, cuts = [f"{x}.{d}" for d, x in exhs], np.array([len(x) + 1 for _, x in exhs])
    laid_out = NameBytes.of("\n".join(names), len(names))
    assert pack(p, rows, names, cuts, laid_out) == pack(p, rows, names, cuts)
