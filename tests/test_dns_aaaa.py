"""AAAA queries are checked against the trails (Maltrail skips them, issue 11); an A and an AAAA
query for one name from one socket in one second are one event, whatever the worker count."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

TRAILS = """\
evil-aaaa.com,malware (test),(static)
198.51.100.53,known attacker,(static)
"""
T0 = 1_700_000_000.0
A, R = "10.0.0.66", "192.0.2.53"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("aaaa")
    (d / "trails.csv").write_text(TRAILS)
    build_index_file([str(d / "trails.csv")], d / "t.mtidx")
    return d / "t.mtidx"


def _query(ts: float, name: str, qtype: int, sport: int = 50000, resolver: str = R,
           client: str = A) -> tuple[float, bytes]:
    ip = t.udp6 if ":" in client else t.udp4
    return ts, t.ethernet(ip(client, resolver, sport, 53, t.dns_query(name, qtype, txid=qtype)))


def _run(index: Path, tmp_path: Path, frames: list[tuple[float, bytes]], workers: int = 1) -> list[str]:
    capture = tmp_path / f"c{workers}.pcap"
    with PcapWriter(capture) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    logs = tmp_path / f"logs{workers}"
    run_sensor(SensorConfig(name="t", trails=str(index), log_dir=str(logs), workers=workers, batch_packets=1),
               [capture])
    return [line for f in sorted(logs.glob("*.log")) for line in f.read_text().splitlines()]


def test_aaaa_only_query_is_reported(index: Path, tmp_path: Path) -> None:
    lines = _run(index, tmp_path, [_query(T0, "www.evil-aaaa.com", 28),
                                   _query(T0 + 1, "x.evil-aaaa.com", 28, client="2001:db8::66",
                                          resolver="2001:db8::53")])
    assert len(lines) == 2
    assert "(www).evil-aaaa.com" in lines[0] and "(x).evil-aaaa.com" in lines[1]


def test_aaaa_query_to_a_listed_resolver_is_reported(index: Path, tmp_path: Path) -> None:
    lines = _run(index, tmp_path, [_query(T0, "whatever.com", 28, resolver="198.51.100.53")])
    assert len(lines) == 1 and "\"198.51.100.53 (whatever.com)\"" in lines[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_and_aaaa_from_one_socket_in_one_second_are_one_event(index: Path, tmp_path: Path, workers: int) -> None:
    frames = [_query(T0 + 0.1, "evil-aaaa.com", 1), _query(T0 + 0.2, "evil-aaaa.com", 28),
              _query(T0 + 0.3, "whatever.com", 1, sport=50001, resolver="198.51.100.53"),
              _query(T0 + 0.4, "whatever.com", 28, sport=50001, resolver="198.51.100.53")]
    lines = _run(index, tmp_path, frames, workers)
    assert sum("DNS evil-aaaa.com" in line for line in lines) == 1
    assert sum("198.51.100.53 (whatever.com)" in line for line in lines) == 1
    assert len(lines) == 2


def test_a_and_aaaa_from_two_sockets_are_two_events(index: Path, tmp_path: Path) -> None:
    lines = _run(index, tmp_path, [_query(T0 + 0.1, "evil-aaaa.com", 1, sport=50000),
                                   _query(T0 + 0.2, "evil-aaaa.com", 28, sport=50001)])
    assert len(lines) == 2
    assert "50000" in lines[0] and "50001" in lines[1] and all("DNS evil-aaaa.com" in x for x in lines)
