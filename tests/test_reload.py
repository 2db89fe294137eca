"""Hot reload of the trail index on a running sensor: a new index renamed over the configured
path, SIGHUP with a trails.csv source, a corrupt index kept out, the same events whatever the
worker count for a switch at a given batch, and old mappings really released."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.pcapio import PcapWriter, read_batches
from engine.reload import Reloader
from engine.sensor import run_sensor
from workers.batch import parse_batch
from workers.payload import DetectionSettings
from workers.worker import Detection

OLD_TRAILS = "66.66.66.66,malware (test),(static)\n66.66.77.78,placeholder (test),(static)\n"
NEW_TRAILS = "66.66.66.66,malware (test),(static)\n66.66.77.77,malware (test),(static)\n"
T0 = 1_700_000_000.0
EVERY = 50  # one packet in EVERY goes to the new trail, one to the old one
PACKETS = 40_000
RATE = 8_000  # packets/s: a 5 s paced replay


def _capture(path: Path, packets: int = PACKETS) -> Path:
    """SYNs from many hosts to one benign server; packet `EVERY * k + 7` goes to the new trail and
    `EVERY * k + 32` to the old one, both from source port 1000 + k (so an event names its packet)."""
    eth, syn = t.ethernet, t.SYN
    with PcapWriter(path, linktype=1) as w:
        for i in range(packets):
            k, r = divmod(i, EVERY)
            if r == 7:
                frame = eth(t.tcp4("10.0.0.66", "66.66.77.77", 1000 + k, 443, syn))
            elif r == 32:
                frame = eth(t.tcp4("10.0.0.66", "66.66.66.66", 1000 + k, 443, syn))
            else:
                frame = eth(t.tcp4(f"10.1.{i // 256 % 256}.{i % 256}", "192.0.2.10", 40000 + i % 20000, 80, syn))
            w.write(frame, T0 + i / 1000)
    return path


def _index(tmp_path: Path, name: str, trails: str) -> Path:
    csv = tmp_path / f"{name}.csv"
    csv.write_text(trails)
    out = tmp_path / f"{name}.mtidx"
    build_index_file([str(csv)], out)
    return out


def _hits(log_dir: Path, trail: str) -> list[int]:
    """Which trail packets (k) were reported for `trail`, in log order."""
    pattern = re.compile(rf" 10\.0\.0\.66 (\d+) {re.escape(trail)} 443 ")
    return [int(m.group(1)) - 1000 for f in sorted(log_dir.glob("*.log"))
            for m in pattern.finditer(f.read_text())]


def _status(log_dir: Path) -> dict:
    return json.loads((log_dir / "sensor-status.json").read_text())


def _wait_for_status(log_dir: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (log_dir / "sensor-status.json").exists():
        assert time.monotonic() < deadline, "sensor never started capturing"
        time.sleep(0.02)


def _replace_later(log_dir: Path, new: Path, configured: Path, after: float, seen: dict[str, int]) -> threading.Thread:
    """Once the sensor runs, wait `after` s, note the packets captured so far, rename `new` over `configured`."""

    def run() -> None:
        _wait_for_status(log_dir)
        time.sleep(after)
        seen["captured"] = int(_status(log_dir)["capture"]["packets"])  # a lower bound on the switch position
        os.replace(new, configured)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _no_loss(status: dict, captured: int) -> None:
    drops = sum(int(r["dropped_packets"]) for r in status["rings"])
    assert drops == 0
    assert captured == status["counters"]["packets"] + drops == PACKETS


def test_new_index_renamed_over_the_configured_path_mid_run(tmp_path: Path) -> None:
    configured = _index(tmp_path, "trails", OLD_TRAILS)
    new = _index(tmp_path, "next", NEW_TRAILS)
    capture, log_dir = _capture(tmp_path / "c.pcap"), tmp_path / "logs"
    seen: dict[str, int] = {}
    thread = _replace_later(log_dir, new, configured, 1.0, seen)
    cfg = SensorConfig(name="t", trails=str(configured), log_dir=str(log_dir), workers=2, batch_packets=256)
    summary = run_sensor(cfg, [capture], offered_pps=RATE)
    thread.join()
    status = summary.status
    _no_loss(status, summary.captured)
    assert status["index"]["generation"] == 2 and status["index"]["reloads"] == 1
    assert status["index"]["trails"] == 2 and status["index"]["last_reload_error"] is None
    assert "generation 2" in "\n".join(summary.lines())
    trail_packets = PACKETS // EVERY
    assert sorted(_hits(log_dir, "66.66.66.66")) == list(range(trail_packets))  # the old trail throughout
    hits = sorted(_hits(log_dir, "66.66.77.77"))
    assert hits, "the new trail was never reported"
    first = hits[0]
    assert first * EVERY + 7 >= seen["captured"], "reported before the new index was published"
    assert hits == list(range(first, trail_packets)), "every packet from the switch on is matched with it"
    assert first < trail_packets * 0.8


def test_sighup_rebuilds_a_trails_csv_source(tmp_path: Path) -> None:
    csv = tmp_path / "trails.csv"
    csv.write_text(OLD_TRAILS)
    capture, log_dir = _capture(tmp_path / "c.pcap"), tmp_path / "logs"
    cmd = [sys.executable, "-m", "engine.cli", "sensor", "--trails", str(csv), "-r", str(capture),
           "--log-dir", str(log_dir), "--workers", "1", "--rate", str(RATE)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_status(log_dir)
        # same size, inode and mtime: the watcher cannot see it, only SIGHUP's rebuild can
        before = csv.stat()
        with open(csv, "r+b") as f:
            f.write(NEW_TRAILS.encode())
        os.utime(csv, ns=(before.st_atime_ns, before.st_mtime_ns))
        time.sleep(1.5)
        assert not _hits(log_dir, "66.66.77.77")
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "trail index generation 2 (2 trails), SIGHUP" in out
    assert re.search(r"trail index  generation 2 \(2 trails, built .*\), 1 reloads, 0 failed", out)
    status = _status(log_dir)
    _no_loss(status, status["capture"]["packets"])
    hits = sorted(_hits(log_dir, "66.66.77.77"))
    assert hits and hits == list(range(hits[0], PACKETS // EVERY))


def test_a_corrupt_index_keeps_the_current_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configured = _index(tmp_path, "trails", OLD_TRAILS)
    good = _index(tmp_path, "next", NEW_TRAILS).read_bytes()
    corrupt = tmp_path / "corrupt.mtidx"
    corrupt.write_bytes(good[: len(good) // 2])  # the magic and header are fine, the arrays are cut
    capture, log_dir = _capture(tmp_path / "c.pcap", PACKETS // 2), tmp_path / "logs"
    thread = _replace_later(log_dir, corrupt, configured, 0.5, {})
    cfg = SensorConfig(name="t", trails=str(configured), log_dir=str(log_dir), workers=1, batch_packets=256)
    summary = run_sensor(cfg, [capture], offered_pps=RATE)
    thread.join()
    err = capsys.readouterr().err.splitlines()
    failures = [line for line in err if line.startswith("maltrail: trail reload failed")]
    assert len(failures) == 1, err
    assert failures[0].startswith("maltrail: trail reload failed, keeping generation 1: ")
    assert "truncated" in failures[0]
    index = summary.status["index"]
    assert index["generation"] == 1 and index["reloads"] == 0 and index["reload_failures"] == 1
    assert "truncated" in index["last_reload_error"]
    assert summary.packets == PACKETS // 2
    assert not _hits(log_dir, "66.66.77.77")


class _SwitchAt:
    """A test hook: at a known capture position, publish the new index and ask for the reload."""

    def __init__(self, position: int, new: Path, configured: Path) -> None:
        self.position, self.new, self.configured = position, new, configured
        self.reloader: Reloader | None = None
        self.done = False

    def started(self, pids: dict[str, int]) -> None:
        pass

    def progress(self, captured: int) -> None:
        if not self.done and captured >= self.position:
            self.done = True
            os.replace(self.new, self.configured)
            assert self.reloader is not None
            self.reloader.request("test")

    def drained(self) -> None:
        pass


def test_events_identical_whatever_the_worker_count(tmp_path: Path) -> None:
    capture = _capture(tmp_path / "c.pcap")
    results = {}
    for workers in (1, 2):
        configured = _index(tmp_path, f"trails{workers}", OLD_TRAILS)
        hook = _SwitchAt(PACKETS // 2, _index(tmp_path, f"next{workers}", NEW_TRAILS), configured)
        log_dir = tmp_path / f"logs{workers}"
        cfg = SensorConfig(name="t", trails=str(configured), log_dir=str(log_dir), workers=workers, batch_packets=512)
        summary = run_sensor(cfg, [capture], monitor=hook, on_reloader=lambda r, h=hook: setattr(h, "reloader", r))
        assert summary.status["index"]["generation"] == 2
        assert summary.packets == PACKETS
        results[workers] = [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]
        hits = sorted(_hits(log_dir, "66.66.77.77"))
        assert hits and PACKETS // 2 <= hits[0] * EVERY < PACKETS // 2 + 2 * 512  # the next batch on
    assert results[1] == results[2]


def test_a_replaced_generation_is_unmapped(tmp_path: Path) -> None:
    path = _index(tmp_path, "trails", NEW_TRAILS)
    _capture(tmp_path / "c.pcap", 200)

    class User:
        def open(self, generation: int) -> TrailIndex:
            return TrailIndex(path)

    detection = Detection.open(User(), 1, DetectionSettings())  # type: ignore[arg-type]
    for batch in read_batches(tmp_path / "c.pcap", 100):
        data = np.frombuffer(batch.data, dtype=np.uint8)
        parsed = parse_batch(batch.meta, data, batch.linktype)
        detection.matcher.events(parsed)
        detection.inspector.inspect(parsed, data, detection.inspector.rows(parsed))
    assert str(path) in Path("/proc/self/maps").read_text()
    index = detection.index
    detection.close()
    assert str(path) not in Path("/proc/self/maps").read_text()
    assert index.meta["counts"]["entries"] == 2  # what the status file reads stays


class _TwoReloads(_SwitchAt):
    """Reloads at two positions; checks at every batch that at most two generations exist."""

    def __init__(self, positions: list[tuple[int, Path]], configured: Path) -> None:
        super().__init__(0, configured, configured)
        self.positions = positions
        self.most_files = 0
        self.most_apart = 0

    def progress(self, captured: int) -> None:
        assert self.reloader is not None
        files = list(self.reloader.workdir.glob("gen-*.mtidx"))
        self.most_files = max(self.most_files, len(files))
        words = self.reloader.in_use.as_dict().values()
        self.most_apart = max(self.most_apart, max(words) - min(words))
        if self.positions and captured >= self.positions[0][0]:
            _, new = self.positions.pop(0)
            os.replace(new, self.configured)
            self.reloader.request("test")


def test_two_reloads_keep_at_most_two_generations(tmp_path: Path) -> None:
    configured = _index(tmp_path, "trails", OLD_TRAILS)
    second = _index(tmp_path, "second", NEW_TRAILS)
    third = _index(tmp_path, "third", NEW_TRAILS + "66.66.88.88,malware (test),(static)\n")
    hook = _TwoReloads([(PACKETS // 4, second), (PACKETS // 4 + 1024, third)], configured)
    cfg = SensorConfig(name="t", trails=str(configured), log_dir=str(tmp_path / "logs"), workers=2,
                       batch_packets=256)
    summary = run_sensor(cfg, [_capture(tmp_path / "c.pcap")], monitor=hook,
                         on_reloader=lambda r: setattr(hook, "reloader", r))
    index = summary.status["index"]
    assert index["generation"] == 3 and index["reloads"] == 2 and index["trails"] == 3
    assert hook.most_files <= 2 and hook.most_apart <= 1
    assert summary.packets == PACKETS


def test_idle_rings_are_sent_the_new_generation(tmp_path: Path) -> None:
    from engine.capture import Dispatcher
    from shm.packets import read_batch
    from shm.ring import Ring, create_ring
    from shm.segments import SegmentOwner

    owner = SegmentOwner()
    try:
        rings = [Ring(create_ring(owner, f"r{i}", 2, 1 << 16)) for i in range(3)]
        d = Dispatcher(rings, live=True, idle=lambda: None)
        meta = np.zeros((1, 4), dtype=np.uint32)
        meta[0, 3] = 60
        for _ in range(6):  # every ring full
            d.send(1, meta, np.array([60], dtype=np.uint32), b"x" * 60)
        d.switch(2)  # no room: every ring is owed the new generation
        rings[1].wait(0)
        rings[1].release()
        d.catch_up()  # ring 1 has room now: an empty batch carries generation 2 to it
        for r in rings:
            r.wait(0)
            r.release()
        d.catch_up()  # then the others
        left = []
        for r in rings:
            while (slot := r.wait(0)) is not None:
                b = read_batch(r.buf, slot[0])
                left.append((len(b), b.generation, b.seq))
                r.release()
        assert [(n, g) for n, g, _ in left] == [(1, 1), (0, 2), (0, 2), (1, 1), (0, 2)]
        assert sorted(seq for n, _, seq in left if not n) == [6, 7, 8]  # markers take the next sequence numbers
        for r in rings:
            r.close()
    finally:
        owner.unlink_all()
