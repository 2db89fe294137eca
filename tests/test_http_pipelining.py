"""Pipelined HTTP requests: every request of a segment (up to MAX_PIPELINED) is inspected, bodies
are skipped by Content-Length, a segment ending mid-request inspects what is there."""

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
from engine.sensor import run_sensor
from workers.payload import OBS_WEB, DetectionSettings, PayloadInspector, _Packet
from workers.protocols.http import MAX_EXAMINED, MAX_PIPELINED, parse_http_request, split_requests

T0 = 1_700_000_000.0
HOSTS = [f"piped{i}-evil.example" for i in range(20)]


def _req(path: str, host: str, body: bytes = b"") -> bytes:
    return t.http_request("POST" if body else "GET", path, host=host, body=body)


def test_a_lone_request_is_not_cut_or_copied() -> None:
    payload = _req("/a", "x.example") + b"trailing bytes that are no request\r\n\r\nmore"
    assert split_requests(payload) == [payload]
    assert split_requests(payload)[0] is payload


def test_requests_are_cut_after_their_content_length_body() -> None:
    body = b"GET /inside-body HTTP/1.1\r\n\r\n"  # looks like a request, but is the first one's body
    first, second = _req("/form", "a.example", body), _req("/b", "b.example")
    pieces = split_requests(first + second)
    assert pieces == [first, second]
    assert parse_http_request(pieces[0]).body == body.decode()
    assert parse_http_request(pieces[1]).host == "b.example"


def test_a_segment_ending_mid_request_inspects_what_is_there() -> None:
    first = _req("/a", "a.example")
    pieces = split_requests(first + b"GET /b HTTP/1.1\r\nHost: b.exa")
    assert len(pieces) == 2
    tail = parse_http_request(pieces[1])
    assert tail is not None and tail.path == "/b" and tail.host is None  # an unterminated header is absent
    assert split_requests(first + b"GET /c HTT") == [first + b"GET /c HTT"]  # no complete request line
    cut_body = _req("/form", "a.example", b"x" * 100)[:-50]
    assert split_requests(cut_body) == [cut_body]


def _index(tmp_path: Path) -> Path:
    (tmp_path / "trails.csv").write_text("".join(f"{h},malware (test),(static)\n" for h in HOSTS))
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "t.mtidx")
    return tmp_path / "t.mtidx"


def _replay(tmp_path: Path, segments: list[bytes]) -> list[str]:
    capture = tmp_path / "piped.pcap"
    with PcapWriter(capture) as w:
        for n, seg in enumerate(segments):
            w.write(t.ethernet(t.tcp4("10.0.0.66", "198.51.100.7", 50000 + n, 8080, t.PSH | t.ACK, seg)), T0 + n)
    log_dir = tmp_path / "logs"
    cfg = SensorConfig(name="t", trails=str(_index(tmp_path)), log_dir=str(log_dir), workers=1,
                       check_host_domains=True)
    run_sensor(cfg, [capture])
    return [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]


def test_both_pipelined_requests_are_reported(tmp_path: Path) -> None:
    lines = _replay(tmp_path, [_req("/a", HOSTS[0]) + _req("/b", HOSTS[1], b"q=1")])
    for host in HOSTS[:2]:
        assert sum(f" {host} " in line for line in lines) == 1, "\n".join(lines)


def test_a_long_pipeline_reports_at_most_the_bound(tmp_path: Path) -> None:
    lines = _replay(tmp_path, [b"".join(_req(f"/{i}", host) for i, host in enumerate(HOSTS))])
    reported = [host for host in HOSTS if any(f" {host} " in line for line in lines)]
    assert reported == HOSTS[:MAX_PIPELINED], "\n".join(lines)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> PayloadInspector:
    return PayloadInspector(TrailIndex(_index(tmp_path_factory.mktemp("piped"))), DetectionSettings())


_PIECES = st.sampled_from([b"GET /a HTTP/1.1\r\n", b"POST /p HTTP/1.0\r\n", b"Host: h.example\r\n",
                           b"Content-Length: 5\r\n", b"content-length: 999999999999\r\n", b"Content-Length: x\r\n",
                           b"\r\n", b"\r\n\r\n", b"abcde", b"GET  HTTP/1.1\r\n", b" ", b"\xff\xfe"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES | st.binary(max_size=40), max_size=60) | st.binary(max_size=MAX_EXAMINED + 100))
def test_random_segments_never_raise_and_respect_the_bound(chunks: list[bytes] | bytes) -> None:
    payload = chunks if isinstance(chunks, bytes) else b"".join(chunks)
    pieces = split_requests(payload)
    assert 1 <= len(pieces) <= MAX_PIPELINED
    joined = b"".join(pieces)
    assert payload[:MAX_EXAMINED].startswith(joined)
    assert joined == payload[:MAX_EXAMINED] or len(pieces) == MAX_PIPELINED
    for piece in pieces:
        parse_http_request(piece)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40), st.binary(max_size=30))
def test_inspection_of_long_pipelines_is_bounded(inspector: PayloadInspector, count: int, junk: bytes) -> None:
    out: list = []
    lone: list = []  # a segment of one request: checked with the batch's others
    payload = b"".join(_req(f"/seg{i}/x", "h.example") for i in range(count)) + junk
    cols = (0, T0, 0, 0x0A000042, 50000, 0xC6336407, 80, -1, -1, -1)
    inspector._http(_Packet(*cols[:7], "TCP", out, *cols[7:]), payload, lone, cols)
    inspector._requests_in_bulk(lone, out)
    web = [item for item in out if item[1] == OBS_WEB]
    assert len(web) == min(count, MAX_PIPELINED)

