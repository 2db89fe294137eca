"""Per-packet cost of payload inspection: a DNS query with a unique name, an HTTP request (new,
and the same request again from other client ports), a TLS ClientHello and a QUIC Initial (new
connection id), each through parse + IP matching + payload inspection, in batches of one kind."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine import traffic as t
from engine.index.mapped import TrailIndex
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_items

_counter = itertools.count()


BATCH = 512




CASES = {
    "dns_query_unique_name": lambda: t.ethernet(t.udp4("10.0.0.1", "192.0.2.53", 5353, 53,
                                                       t.dns_query(f"h{next(_counter)}.example-unique.com"))),
    "http_request": lambda: t.ethernet(t.tcp4("10.0.0.1", "192.0.2.80", 40000, 80, t.PSH | t.ACK, t.http_request(
        "GET", f"/news/item{next(_counter)}.html", host="www.news.example.com",
        user_agent="Mozilla/5.0 Firefox/120.0"))),
    "http_request_repeated": lambda: t.ethernet(t.tcp4("10.0.0.1", "192.0.2.80", 40000 + next(_counter) % 20000, 80,
                                                       t.PSH | t.ACK, t.http_request(
        "GET", "/news/today.html", host="www.news.example.com", user_agent="Mozilla/5.0 Firefox/120.0"))),
    "tls_client_hello": lambda: t.ethernet(t.tcp4("10.0.0.1", "192.0.2.80", 40000, 443, t.PSH | t.ACK,
                                                  t.tls_client_hello(f"s{next(_counter)}.example.com"))),
    "quic_initial": lambda: t.ethernet(t.udp4("10.0.0.1", "192.0.2.80", 40000, 443, t.quic_initial(
        "www.example.com", dcid=next(_counter).to_bytes(8, "big")))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_payload_packet(benchmark, case: str, full_index: Path) -> None:
    ix = TrailIndex(full_index)
    matcher, inspector = IpMatcher(ix), PayloadInspector(ix, DetectionSettings())
    rounds = 24
    batches = iter([t.frames_batch([CASES[case]() for _ in range(BATCH)]) for _ in range(rounds)])  # never repeated

    def one_batch() -> None:
        meta, data = next(batches)
        batch_items(parse_batch(meta, data, 1), data, matcher, inspector)

    benchmark.pedantic(one_batch, rounds=rounds)
    per_packet = benchmark.stats.stats.min / BATCH * 1e6
    benchmark.extra_info["us_per_packet"] = round(per_packet, 2)
    note = "the same request: its plan is replayed" if case.endswith("_repeated") else \
        "unique names/ids: caches do not help"
    print(f"\n{case}: {per_packet:.2f} µs/packet (batches of {BATCH}, {note})")
