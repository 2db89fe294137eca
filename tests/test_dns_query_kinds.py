"""Spec 2.7: a PTR query or a query of a class other than IN is not checked against trails. The bulk
DNS path reads query types and classes only when something may report; they must be the queries'
own, wherever the queries sit among answers in the batch, and agree with one packet at a time."""

from __future__ import annotations

import pytest
from index_support import index_file

from engine import traffic as t
from engine.index.mapped import TrailIndex
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_items

TRAILS = {"evil-kind.com": ("malware (x)", "(static)"), "203.0.113.44": ("malware (x)", "(static)")}
CLIENT, RESOLVER, LISTED = "10.0.0.7", "192.0.2.53", "203.0.113.44"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> TrailIndex:
    return TrailIndex(index_file(TRAILS, tmp_path_factory.mktemp("kinds")))


def _query(name: str, qtype: int, qclass: int, resolver: str, k: int) -> bytes:
    payload = bytearray(t.dns_query(name, qtype=qtype))
    payload[-2:] = qclass.to_bytes(2, "big")
    return t.ethernet(t.udp4(CLIENT, resolver, 20000 + k, 53, bytes(payload)))


def _answer(k: int) -> bytes:
    return t.ethernet(t.udp4(RESOLVER, CLIENT, 53, 30000 + k, t.dns_response(f"a{k}.example.org", ["198.51.100.9"])))


# (type, class, resolver) of each query, and whether it reports: A and AAAA in class IN only
QUERIES = [(1, 1, RESOLVER, True), (12, 1, RESOLVER, False), (1, 3, RESOLVER, False), (28, 1, RESOLVER, True),
           (12, 1, LISTED, False), (1, 255, LISTED, False), (1, 1, LISTED, True), (16, 1, RESOLVER, True)]


def _reporting_rows(index: TrailIndex, frames: list[bytes]) -> list[int]:
    meta, data = t.frames_batch(frames)
    inspector = PayloadInspector(index, DetectionSettings(use_heuristics=True))
    items = batch_items(parse_batch(meta, data, 1), data, IpMatcher(index), inspector)
    return sorted({row for row, kind, _ in items if kind == "event"})


@pytest.mark.parametrize("answers_first", [0, 1, 3])
def test_only_a_queries_of_class_in_report(index: TrailIndex, answers_first: int) -> None:
    """Answers ahead of the queries shift the queries' places among the decoded rows."""
    frames = [_answer(k) for k in range(answers_first)]
    for k, (qtype, qclass, resolver, _) in enumerate(QUERIES):
        frames.append(_query(f"q{k}.evil-kind.com", qtype, qclass, resolver, k))
        frames.append(_answer(100 + k))
    expected = [answers_first + 2 * k for k, (*_, reports) in enumerate(QUERIES) if reports]
    assert _reporting_rows(index, frames) == expected
    one_at_a_time = [answers_first + 2 * k for k in range(len(QUERIES))
                     if _reporting_rows(index, [frames[answers_first + 2 * k]])]
    assert one_at_a_time == expected
