"""The whole pipeline on generated captures: events identical for 1, 2 and 4 workers, IP and
IP:port trails on every link type, the summary, and clean shutdown on crash and Ctrl-C."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import CaptureError, PcapWriter
from engine.proctree import children, descendants
from engine.sensor import SensorError, run_sensor
from shm.segments import PREFIX

TRAILS_CSV = """\
66.66.66.66,malware (test),(static)
6.6.6.6:8443,malware (test),(static)
198.51.100.66,botnet c2 (test),(static)
198.51.100.53,known attacker,(static)
198.51.100.91,parking site (suspicious),(static)
203.0.113.0/24,mass scanner,(static)
dead::beef,malware (test),(static)
[dead::beef]:443,malware (test),(static)
"""
T0 = 1_700_000_000.0
A = "10.0.0.66"


def _shm_leftovers(pid: int | None = None) -> set[str]:
    """Sensor segments in /dev/shm: all of them, or those of the sensor process `pid` (names carry
    the owner's pid, so other test runs on the machine do not interfere)."""
    prefix = PREFIX if pid is None else f"{PREFIX}{pid}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


@pytest.fixture
def index(tmp_path: Path) -> Path:
    csv = tmp_path / "trails.csv"
    csv.write_text(TRAILS_CSV)
    out = tmp_path / "trails.mtidx"
    build_index_file([str(csv)], out)
    return out


def _write(path: Path, frames: list[tuple[float, bytes]], linktype: int = 1) -> Path:
    with PcapWriter(path, linktype=linktype) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    return path


def _events(log_dir: Path) -> list[str]:
    return [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]


def _run(index: Path, captures: list[Path], log_dir: Path, workers: int = 1, **kw: object):
    cfg = SensorConfig(name="test", trails=str(index), log_dir=str(log_dir), workers=workers, **kw)
    return run_sensor(cfg, captures)


def test_ip_and_ipport_trails_both_directions(index: Path, tmp_path: Path) -> None:
    eth = t.ethernet
    frames = [
        (T0, eth(t.tcp4(A, "66.66.66.66", 50001, 443, t.SYN))),
        (T0 + 1, eth(t.tcp4(A, "6.6.6.6", 50003, 8443, t.SYN))),
        (T0 + 2, eth(t.tcp4("198.51.100.66", A, 31337, 50004, t.SYN))),
        (T0 + 3, eth(t.tcp4(A, "66.66.66.66", 50001, 443, t.ACK))),  # not a SYN: not checked
        (T0 + 4, eth(t.tcp4(A, "198.51.100.53", 50005, 80, t.SYN))),  # attacker as destination: suppressed
        (T0 + 5, eth(t.tcp4(A, "198.51.100.91", 50006, 8080, t.SYN))),  # parking site off 80/443: suppressed
        (T0 + 6, eth(t.tcp4(A, "198.51.100.91", 50007, 443, t.SYN))),  # parking site on 443: reported
        (T0 + 7, eth(t.udp4(A, "66.66.66.66", 40000, 9999, b"x"))),
        (T0 + 8, eth(t.icmp4(A, "66.66.66.66", 8, 0, b"ping"))),
        (T0 + 9, eth(t.icmp4("66.66.66.66", A, 0, 0, b"pong"))),  # echo reply: not checked
        (T0 + 10, eth(t.tcp4(A, "203.0.113.9", 50008, 22, t.SYN))),  # inside a CIDR trail
        (T0 + 11, eth(t.tcp6("2001:db8::1", "dead::beef", 50009, 443, t.SYN))),
        (T0 + 12, eth(t.tcp6("2001:db8::1", "dead::beef", 50010, 80, t.SYN))),
    ]
    summary = _run(index, [_write(tmp_path / "c.pcap", frames)], tmp_path / "logs")
    lines = _events(tmp_path / "logs")
    fields = [line.split(" ", 2)[2] for line in lines]  # drop the quoted timestamp
    assert fields == [
        'test 10.0.0.66 50001 66.66.66.66 443 TCP IP 66.66.66.66 "malware (test)" (static)',
        'test 10.0.0.66 50003 6.6.6.6 8443 TCP IPORT 6.6.6.6:8443 "malware (test)" (static)',
        'test 198.51.100.66 31337 10.0.0.66 50004 TCP IP 198.51.100.66 "botnet c2 (test)" (static)',
        'test 10.0.0.66 50007 198.51.100.91 443 TCP IP 198.51.100.91 "parking site (suspicious)" (static)',
        'test 10.0.0.66 40000 66.66.66.66 9999 UDP IP 66.66.66.66 "malware (test)" (static)',
        'test 10.0.0.66 - 66.66.66.66 - ICMP IP 66.66.66.66 "malware (test)" (static)',
        'test 10.0.0.66 50008 203.0.113.9 22 TCP IP 203.0.113.9 "mass scanner" (static)',
        'test 2001:db8::1 50009 dead::beef 443 TCP IPORT [dead::beef]:443 "malware (test)" (static)',
        'test 2001:db8::1 50010 dead::beef 80 TCP IP dead::beef "malware (test)" (static)',
    ]
    assert lines[0].startswith('"2023-11-14 22:13:20.000000" ')
    assert summary.packets == len(frames)
    assert summary.status["events_written"] == 9


@pytest.mark.parametrize("name", sorted(t.LINKTYPES))
def test_every_link_type(index: Path, tmp_path: Path, name: str) -> None:
    dlt, wrap = t.LINKTYPES[name]
    frames = [(T0, wrap(t.tcp4(A, "66.66.66.66", 50001, 443, t.SYN))),
              (T0 + 1, wrap(t.tcp6("2001:db8::1", "dead::beef", 50002, 80, t.SYN)))]
    _run(index, [_write(tmp_path / "c.pcap", frames, dlt)], tmp_path / "logs")
    lines = _events(tmp_path / "logs")
    assert len(lines) == 2 and "66.66.66.66" in lines[0] and "dead::beef" in lines[1], (name, lines)


def test_vlan_qinq_and_pppoe(index: Path, tmp_path: Path) -> None:
    syn = t.tcp4(A, "66.66.66.66", 50001, 443, t.SYN)
    frames = [(T0, t.ethernet(syn, vlan=10)), (T0 + 1, t.ethernet(syn, vlan=[10, 20])), (T0 + 2, t.pppoe(syn))]
    _run(index, [_write(tmp_path / "c.pcap", frames)], tmp_path / "logs")
    assert len(_events(tmp_path / "logs")) == 3


def test_identical_syns_in_one_second_collapse_and_are_counted(index: Path, tmp_path: Path) -> None:
    syn = t.ethernet(t.tcp4(A, "66.66.66.66", 50001, 443, t.SYN))
    frames = [(T0 + i * 0.01, syn) for i in range(5)] + [(T0 + 10, syn), (T0 + 11, syn), (T0 + 12, syn)]
    summary = _run(index, [_write(tmp_path / "c.pcap", frames)], tmp_path / "logs")
    assert len(_events(tmp_path / "logs")) == 4
    assert summary.status["events_suppressed"] == 4


def test_malformed_packets_are_counted_not_fatal(index: Path, tmp_path: Path) -> None:
    good = t.ethernet(t.tcp4(A, "66.66.66.66", 50001, 443, t.SYN))
    frames = [
        (T0, b""),
        (T0, good[:10]),  # short Ethernet
        (T0, good[:20]),  # IPv4 header cut
        (T0, good[:14] + bytes([0x4F]) + good[15:]),  # IHL 60 > packet
        (T0, good[:40]),  # TCP header cut
        (T0, good),
    ]
    summary = _run(index, [_write(tmp_path / "c.pcap", frames)], tmp_path / "logs")
    assert summary.packets == 6
    assert summary.status["counters"]["malformed"] == 3
    assert len(_events(tmp_path / "logs")) == 1


def _mixed(path: Path, packets: int) -> Path:
    t.mixed_capture(path, packets, seed=3, trail_ips=("66.66.66.66", "198.51.100.66", "203.0.113.7"))
    return path


def test_events_identical_for_1_2_and_4_workers(index: Path, tmp_path: Path) -> None:
    capture = _mixed(tmp_path / "mixed.pcap", 40_000)
    results = {}
    for workers in (1, 2, 4):
        log_dir = tmp_path / f"logs{workers}"
        summary = _run(index, [capture], log_dir, workers=workers, batch_packets=512)
        results[workers] = _events(log_dir)
        assert summary.packets == 40_000
        assert sum(summary.status["per_worker_packets"]) == 40_000
        if workers > 1:
            assert all(n > 0 for n in summary.status["per_worker_packets"])
        cpu, busy = summary.status["per_worker_cpu_seconds"], summary.status["per_worker_busy_seconds"]
        assert len(cpu) == workers and all(0 < c <= b * 1.05 + 0.01 for c, b in zip(cpu, busy, strict=True))
    assert results[1], "the mixed capture must contain trail hits"
    assert results[1] == results[2] == results[4]


def test_several_captures_in_order(index: Path, tmp_path: Path) -> None:
    first = _write(tmp_path / "a.pcap", [(T0, t.ethernet(t.tcp4(A, "66.66.66.66", 1, 443, t.SYN)))])
    second = _write(tmp_path / "b.pcap", [(T0 + 5, t.tcp4(A, "6.6.6.6", 2, 8443, t.SYN))], linktype=101)
    summary = _run(index, [first, second], tmp_path / "logs")
    lines = _events(tmp_path / "logs")
    assert summary.packets == 2 and "66.66.66.66" in lines[0] and "6.6.6.6:8443" in lines[1]


def test_trails_csv_and_static_folder_accepted_directly(tmp_path: Path) -> None:
    static = tmp_path / "static" / "malware"
    static.mkdir(parents=True)
    (static / "evil_thing.txt").write_text("# comment\n66.66.66.66\n")
    capture = _write(tmp_path / "c.pcap", [(T0, t.ethernet(t.tcp4(A, "66.66.66.66", 1, 443, t.SYN)))])
    cfg = SensorConfig(name="s", trails=str(tmp_path / "static"), log_dir=str(tmp_path / "logs"))
    run_sensor(cfg, [capture])
    assert '"evil thing (malware)" (static)' in _events(tmp_path / "logs")[0]


def _sensor_cmd(index: Path, capture: Path, log_dir: Path, workers: int = 2, entry: str = "engine.cli") -> list[str]:
    """`engine.cli` starts its fork server as a new interpreter; `engine.launch` (the `maltrail`
    command) forks it."""
    return [sys.executable, "-m", entry, "sensor", "--trails", str(index), "-r", str(capture),
            "--log-dir", str(log_dir), "--workers", str(workers)]


def _wait_for_children(pid: int, count: int, timeout: float = 20.0) -> list[int]:
    """The sensor's workers and aggregator (forked by its fork server), once segments exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        direct = set(children(pid))  # the fork server and the resource tracker
        kids = [k for k in descendants(pid) if k not in direct]
        if len(kids) >= count and _shm_leftovers(pid):
            return kids
        time.sleep(0.05)
    raise AssertionError("sensor children did not start")


def _wait_for_capture(log_dir: Path, timeout: float = 20.0) -> None:
    """The aggregator publishes its status once every process is ready and packets flow."""
    deadline = time.monotonic() + timeout
    while not (log_dir / "sensor-status.json").exists():
        assert time.monotonic() < deadline, "sensor never started capturing"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mixed(tmp_path_factory.mktemp("big") / "big.pcap", 600_000)


@pytest.mark.parametrize("entry", ["engine.cli", "engine.launch"])
def test_ctrl_c_drains_prints_summary_and_unlinks(index: Path, big_capture: Path, tmp_path: Path, entry: str) -> None:
    proc = subprocess.Popen(_sensor_cmd(index, big_capture, tmp_path / "logs", entry=entry), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_children(proc.pid, 3)
    _wait_for_capture(tmp_path / "logs")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "summary: (interrupted)" in out and "packets" in out
    assert not _shm_leftovers(proc.pid)


def test_worker_crash_stops_the_sensor_loudly_and_unlinks(index: Path, big_capture: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(_sensor_cmd(index, big_capture, tmp_path / "logs"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    worker = _wait_for_children(proc.pid, 3)[0]
    _wait_for_capture(tmp_path / "logs")
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "died (exit code -9)" in err
    assert not _shm_leftovers(proc.pid)


@pytest.mark.parametrize("entry", ["engine.cli", "engine.launch"])
def test_killed_sensor_leaves_no_segment(index: Path, big_capture: Path, tmp_path: Path, entry: str) -> None:
    """Killed, the sensor leaves its children (workers, aggregator, fork server, resource tracker)
    to notice and go: a forked server holding the write end of its alive pipe would stay forever."""
    proc = subprocess.Popen(_sensor_cmd(index, big_capture, tmp_path / "logs", entry=entry),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_children(proc.pid, 3)
    kids = descendants(proc.pid)  # fork server, workers, aggregator, resource tracker
    proc.kill()  # SIGKILL: no finally, no atexit
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (_shm_leftovers(proc.pid)
                                           or any(Path(f"/proc/{k}").exists() for k in kids)):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{k}").exists() for k in kids), "orphaned children kept running"
    assert not _shm_leftovers(proc.pid)


def test_missing_capture_is_a_clear_error(index: Path, tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="capture file not found"):
        _run(index, [tmp_path / "nope.pcap"], tmp_path / "logs")
    os.mkfifo(tmp_path / "pipe.pcap")
    with pytest.raises(SensorError, match="pipe.pcap: not a regular file \\(a pipe or a device cannot be replayed"):
        _run(index, [tmp_path / "pipe.pcap"], tmp_path / "logs")
    with pytest.raises(SensorError, match="is a directory, not a capture file"):
        _run(index, [tmp_path], tmp_path / "logs")
    (tmp_path / "c.pcap.gz").write_bytes(gzip.compress(b"\xd4\xc3\xb2\xa1" + bytes(20)))
    with pytest.raises(CaptureError, match="c.pcap.gz: gzip-compressed; decompress it first"):
        _run(index, [tmp_path / "c.pcap.gz"], tmp_path / "logs")
