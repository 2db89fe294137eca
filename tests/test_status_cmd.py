"""Live drop accounting: what the status file carries, the sensor's periodic report, and
`maltrail status` for running, finished, stale and missing sensors."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import traffic as t
from engine.capture import CAPTURE_FIELDS
from engine.cli import main
from engine.pcapio import CaptureError, LiveCapture
from engine.sensor import Periodic, Supervisor
from shm.counters import SharedCounters, create_counters
from shm.segments import SegmentOwner

ROOT = Path(__file__).resolve().parents[1]
REPORT = "/s; drops "


def _maltrail(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A trail set and a 200k-packet mixed capture with hits to it."""
    work = tmp_path_factory.mktemp("status")
    csv = work / "trails.csv"
    csv.write_text("198.51.100.66,botnet (test),(static)\n203.0.113.44,malware (test),(static)\n")
    capture = work / "mixed.pcap"
    t.mixed_capture(capture, 200_000, seed=4, trail_ips=("198.51.100.66", "203.0.113.44"))
    return csv, capture


def test_final_status_of_a_replay_carries_every_counter(replay: tuple[Path, Path], tmp_path: Path) -> None:
    csv, capture = replay
    run = _maltrail("sensor", "--trails", str(csv), "-r", str(capture), "--log-dir", str(tmp_path), "--workers", "2")
    assert run.returncode == 0, run.stderr
    assert REPORT not in run.stdout, "replays are quiet unless --report asks"
    status = json.loads((tmp_path / "sensor-status.json").read_text())
    assert status["final"] is True and status["sensor_pid"] > 0
    capture_status = status["capture"]
    assert capture_status["source"] == "file" and capture_status["files"] == [str(capture)]
    assert capture_status["packets"] == status["counters"]["packets"] == 200_000
    assert capture_status["kernel"] is None  # no libpcap statistics for files
    assert capture_status["ring_dropped_packets"] == 0 and not capture_status["drop_when_full"]
    assert len(status["rings"]) == 2
    for ring in status["rings"]:
        assert {"occupancy", "peak_occupancy", "dropped_packets", "slots"} <= set(ring)
        assert 1 <= ring["peak_occupancy"] <= ring["slots"]
    assert sum(status["per_worker_packets"]) == 200_000
    interval = status["interval"]
    assert len(interval["per_worker_pps"]) == len(interval["per_worker_busy_fraction"]) == 2
    assert all(0.0 <= f <= 1.0 for f in interval["per_worker_busy_fraction"])
    assert "captured     200000" in run.stdout and "drops        0 (ring: w0=0 w1=0)" in run.stdout


def test_replay_reports_when_asked(replay: tuple[Path, Path], tmp_path: Path) -> None:
    csv, capture = replay
    # offered at 400,000 packets/s, the replay lasts about half a second: as fast as possible it took
    # 0.06 s on a quiet machine, under the 0.1 s interval, and printed no report
    run = _maltrail("sensor", "--trails", str(csv), "-r", str(capture), "--log-dir", str(tmp_path), "--workers", "1",
                    "--report", "0.1", "--rate", "400000")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if REPORT in line]
    assert lines, run.stdout
    assert "replay: captured " in lines[0] and "ring 0 (+0) [w0=0]" in lines[0] and "workers w0=" in lines[0]


def _status_file(path: Path, **fields: object) -> Path:
    base = {"pid": os.getpid(), "sensor_pid": os.getpid(), "sensor": "s1", "started": time.time() - 60,
            "updated": time.time(), "final": False, "counters": {"packets": 1000, "bytes": 64000},
            "per_worker_packets": [600, 400], "per_worker_busy_seconds": [0.5, 0.25],
            "rings": [{"occupancy": 1, "peak_occupancy": 3, "dropped_packets": 7, "dropped_batches": 1,
                       "published": 9, "slots": 4},
                      {"occupancy": 0, "peak_occupancy": 4, "dropped_packets": 5, "dropped_batches": 1,
                       "published": 8, "slots": 4}],
            "events_written": 3, "events_suppressed": 1, "events_ignored": 0, "events_whitelisted": 2,
            "capture": {"source": "live", "interface": "eth9", "files": [], "drop_when_full": True,
                        "offered_pps": None, "packets": 1012, "bytes": 70000, "batches": 17,
                        "ring_dropped_packets": 12,
                        "kernel": {"received": 1040, "dropped": 28, "interface_dropped": 2}},
            "interval": {"seconds": 1.0, "captured_pps": 500.0, "processed_pps": 480.0,
                         "per_worker_pps": [300.0, 180.0], "per_worker_busy_fraction": [0.25, 0.125]}}
    base.update(fields)
    path.write_text(json.dumps(base))
    return path


def test_status_of_a_running_sensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _status_file(tmp_path / "s.json")
    assert main(["status", "--status-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sensor s1 (pid {os.getpid()}): running, updated ")
    assert "live on eth9" in out
    assert "kernel       received 1,040, dropped 28, interface dropped 2" in out
    assert "drops        12 ring (w0=7 w1=5), 28 kernel, 2 interface" in out
    assert "w0 1/4 now, peak 3" in out and "w1 0/4 now, peak 4" in out
    assert "w0 600 packets 300/s 25% busy" in out and "w1 400 packets 180/s 12% busy" in out
    assert main(["status", "--log-dir", str(tmp_path), "--json"]) == 2  # no sensor-status.json there
    assert capsys.readouterr().err.startswith("maltrail: error: ")
    assert main(["status", "--status-file", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "running" and data["capture"]["kernel"]["dropped"] == 28


def test_status_says_when_the_sensor_is_gone_stuck_or_finished(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = _status_file(tmp_path / "dead.json", sensor_pid=gone.pid, pid=gone.pid, updated=time.time() - 3)
    assert main(["status", "--status-file", str(path)]) == 1
    assert f"stale, sensor pid {gone.pid} is gone" in capsys.readouterr().out
    path = _status_file(tmp_path / "stuck.json", updated=time.time() - 120)
    assert main(["status", "--status-file", str(path)]) == 1
    assert "stale, no update for 120 s" in capsys.readouterr().out
    path = _status_file(tmp_path / "done.json", final=True, updated=time.time() - 30)
    assert main(["status", "--status-file", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "stopped" and data["reason"].startswith("sensor finished 3")


@pytest.mark.parametrize(("content", "message"), [("{not json", "invalid JSON"), ('{"a": 1}', "not a sensor status")])
def test_status_refuses_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                    message: str) -> None:
    (tmp_path / "sensor-status.json").write_text(content)
    assert main(["status", "--log-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_status_watch_prints_until_interrupted(tmp_path: Path) -> None:
    path = _status_file(tmp_path / "s.json")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "status", "--status-file", str(path), "--json",
                             "--watch", "--interval", "0.1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline() for _ in range(3)]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert [json.loads(line)["state"] for line in lines] == ["running"] * 3


def test_live_sensor_reports_and_status_shows_it(tmp_path: Path) -> None:
    """`maltrail sensor -i lo --report 1` prints the periodic line; `maltrail status` reads the
    running sensor's kernel counts and rings, then sees it stop."""
    try:
        LiveCapture("lo").close()
    except CaptureError as exc:
        pytest.skip(f"live capture not permitted here: {exc}")
    port = 43000 + os.getpid() % 10000
    (tmp_path / "trails.csv").write_text("127.0.0.66,malware (live test),(static)\n")
    logs = tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "--trails", str(tmp_path / "trails.csv"),
                             "-i", "lo", "--bpf", f"udp and port {port}", "--log-dir", str(logs), "--workers", "2",
                             "--report", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (logs / "sensor-status.json").exists():
            assert time.monotonic() < deadline, "the sensor never published its status"
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            for i in range(200):
                s.sendto(b"%d" % i, ("127.0.0.66", port))
        deadline = time.monotonic() + 20
        while True:
            status = json.loads((logs / "sensor-status.json").read_text())
            if status["counters"].get("packets") == 200 and status["capture"]["kernel"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        running = _maltrail("status", "--log-dir", str(logs))
        assert running.returncode == 0, running.stdout + running.stderr
        assert "running" in running.stdout and "live on lo" in running.stdout
        assert "kernel       received" in running.stdout
        time.sleep(1.5)  # at least one more report
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    reports = [line for line in out.splitlines() if REPORT in line]
    assert reports and all(" lo: captured " in line and "kernel " in line for line in reports)
    assert "drops        0 (ring: w0=0 w1=0), 0 (kernel)" in out
    stopped = _maltrail("status", "--log-dir", str(logs))
    assert stopped.returncode == 1 and ": stopped, sensor finished" in stopped.stdout


def test_bad_report_interval_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sensor", "-r", str(tmp_path / "x.pcap"), "--report", "-1"]) == 2
    assert "--report: -1.0 is out of range (0..86400 seconds)" in capsys.readouterr().err
    cfg = tmp_path / "m.toml"
    cfg.write_text("[sensor]\nreport_seconds = -5\n")
    assert main(["sensor", "-c", str(cfg), "-r", str(tmp_path / "x.pcap")]) == 2
    assert "[sensor] report_seconds: -5 is out of range (0..86400)" in capsys.readouterr().err


class _Live:
    """A live capture's libpcap statistics, as `LiveCapture.stats` gives them."""

    def stats(self) -> tuple[int, int, int]:
        return 1040, 28, 2


def test_report_before_the_aggregator_saw_kernel_counts(tmp_path: Path) -> None:
    """A status written before the first kernel counts reached the aggregator still reports the
    capture's own figures (the first report of a live sensor raced that before)."""
    path = _status_file(tmp_path / "s.json")
    data = json.loads(path.read_text())
    data["capture"]["kernel"] = None
    path.write_text(json.dumps(data))
    out = io.StringIO()
    owner = SegmentOwner()
    try:
        counters = SharedCounters(create_counters(owner, "capture", CAPTURE_FIELDS))
        periodic = Periodic(counters, Supervisor([]), path, live=_Live(), report_seconds=1, out=out)  # type: ignore[arg-type]
        periodic.publish_kernel()
        periodic.report()
        counters.close()
    finally:
        owner.unlink_all()
    assert "kernel 28 (+28), interface 2" in out.getvalue()
