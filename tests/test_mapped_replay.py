"""Replays whose workers map the capture file instead of getting copies in their slots
(`engine/filelease.py`, `shm/filemap.py`): the read lease that keeps writers off, the packets a
worker reads back, when the file is let go, a writer arriving mid-replay, and the sensor end to end."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pcapng_support import block as pcapng_block
from pcapng_support import epb, idb, not_libpcap, resolution, shb

from engine import capture as capture_module
from engine import traffic as t
from engine.capture import Dispatcher
from engine.config import SensorConfig
from engine.filelease import ReadLease
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter, open_records, read_batches
from engine.sensor import run_sensor
from shm.filemap import FileWindows
from shm.packets import columns_end, read_batch
from shm.ring import Ring, create_ring
from shm.segments import SegmentOwner

T0 = 1_700_000_000


@pytest.fixture
def owner():
    owner = SegmentOwner()
    yield owner
    owner.unlink_all()


def _capture(path: Path, count: int, seed: int = 3) -> list[tuple[bytes, int, int, int]]:
    """A classic pcap of `count` random frames big enough for a replay to walk them (400-1500
    bytes); (frame, sec, usec, wire length) of each, as a reader must give them back."""
    rng = np.random.default_rng(seed)
    out = []
    with PcapWriter(path) as w:
        for i in range(count):
            frame = rng.integers(0, 256, int(rng.integers(400, 1500)), dtype=np.uint8).tobytes()
            w.write(frame, T0 + i * 0.001, wirelen=len(frame) + i % 5)
            out.append((frame, T0 + i // 1000, i % 1000 * 1000, len(frame) + i % 5))
    return out


def _read_back(ring: Ring, files: FileWindows, got: list[tuple[bytes, int, int, int]], mapped: list[bool],
               on_mapped: Callable[[], None] = lambda: None) -> None:
    """Consume every queued slot of `ring` as a worker does; whether each batch's packets were in the file."""
    while (slot := ring.wait(0)) is not None:
        batch = read_batch(ring.buf, slot[0], files)
        mapped.append(slot[1] == columns_end(len(batch)))  # the slot holds its columns and nothing more
        if mapped[-1]:
            on_mapped()
        for (sec, usec, off, cap), wire in zip(batch.meta.tolist(), batch.wirelen.tolist(), strict=True):
            got.append((batch.data[off : off + cap].tobytes(), sec, usec, wire))
        del batch
        ring.release()


def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_read_lease_holds_a_writer_off_until_released(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    before = signal.getsignal(signal.SIGIO)
    lease = ReadLease.take(fd)
    assert lease is not None and not lease.broken
    assert signal.getsignal(signal.SIGIO) is signal.SIG_IGN  # the break's SIGIO would end the process
    writer = subprocess.Popen([sys.executable, "-c", f"import os; os.truncate({str(path)!r}, 0)"])
    _until(lambda: lease.broken)
    time.sleep(0.2)
    assert writer.poll() is None and path.stat().st_size == 4096  # the truncate waits for the holder
    lease.release()
    assert writer.wait(10) == 0 and path.stat().st_size == 0
    assert signal.getsignal(signal.SIGIO) == before
    os.close(fd)


def test_no_lease_where_a_writer_is_there_or_off_the_main_thread(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    before = signal.getsignal(signal.SIGIO)
    with open(path, "ab"):
        assert ReadLease.take(fd) is None
    assert signal.getsignal(signal.SIGIO) == before
    taken: list[ReadLease | None] = []
    thread = threading.Thread(target=lambda: taken.append(ReadLease.take(fd)))
    thread.start()
    thread.join()
    assert taken == [None]
    lease = ReadLease.take(fd)  # nothing else in the way
    assert lease is not None
    lease.release()
    os.close(fd)


def test_no_map_where_the_workers_could_not_open_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers open the file through /proc/PID/fd: where that is refused (a /proc mounted
    with restrictions), the replay copies instead, and holds no lease."""
    _capture(tmp_path / "f.pcap", 10)
    real_open = os.open

    def no_proc(path: str, *args: int) -> int:
        if str(path).startswith("/proc/"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", no_proc)
    records = open_records(tmp_path / "f.pcap", map_file=True)
    assert records is not None and not records.mapped  # big records: read into the slots
    with open(tmp_path / "f.pcap", "ab"):  # not leased: a writer gets through at once
        pass
    records.close()


def test_mapped_slots_hold_only_columns_and_read_back_through_the_file(owner: SegmentOwner, tmp_path: Path) -> None:
    """Every packet, stamp and wire length in order across two rings, from slots that hold no
    packet bytes; the file stays open (and leased) until the slots pointing into it are consumed."""
    expected = _capture(tmp_path / "f.pcap", 3000)
    rings = [Ring(create_ring(owner, f"r{i}", 8, 256 << 10)) for i in range(2)]
    d = Dispatcher(rings, live=False, idle=lambda: None)
    records = open_records(tmp_path / "f.pcap")
    assert records is not None and records.map()
    counts = [100, 700, 1, 2000]
    while d.fill(records, counts.pop(0) if counts else 500):
        pass
    d.done_with(records)
    assert records.mapped  # slots still point into it
    slot = rings[0].wait(0)
    assert slot is not None
    with pytest.raises(ValueError, match="FileWindows"):
        read_batch(rings[0].buf, slot[0])
    rings[0].spec.filled.release()  # put back what the look took
    files = FileWindows()
    got: list[tuple[bytes, int, int, int]] = []
    mapped: list[bool] = []
    for ring in rings:
        _read_back(ring, files, got, mapped)
    assert all(mapped) and len(mapped) >= 5
    assert sorted(got, key=lambda p: (p[1], p[2])) == expected
    d.finish()
    assert not records.mapped  # consumed: closed and let go
    files.close()
    for ring in rings:
        ring.close()


def test_a_writer_mid_replay_waits_for_the_workers_then_the_rest_is_copied(owner: SegmentOwner,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    expected = _capture(path, 2000)
    ring = Ring(create_ring(owner, "r", 4, 1 << 20))
    files = FileWindows()
    got: list[tuple[bytes, int, int, int]] = []
    mapped: list[bool] = []
    leased: list[bool] = []  # whether the lease was still held as each mapped slot was consumed
    d = Dispatcher([ring], live=False, idle=lambda: _read_back(ring, files, got, mapped,
                                                               lambda: leased.append(records.mapped)))
    records = open_records(path)
    assert records is not None and records.map()
    assert d.fill(records, 300) and d.fill(records, 300)
    writer = subprocess.Popen([sys.executable, "-c", f"open({str(path)!r}, 'ab').close(); print('opened')"],
                              stdout=subprocess.PIPE, text=True)
    _until(lambda: records.lease_broken)
    assert writer.poll() is None
    while d.fill(records, 300):  # the first waits for both mapped slots to be consumed, then copies
        d.idle()
    d.done_with(records)
    assert writer.wait(10) == 0 and writer.stdout is not None and writer.stdout.read() == "opened\n"
    d.idle()
    assert got == expected
    assert mapped[:2] == [True, True] and not any(mapped[2:]) and len(mapped) > 2
    assert leased == [True, True]
    d.finish()
    files.close()
    ring.close()


def _big_capture(path: Path, packets: int) -> tuple[Path, int]:
    """The `unique` mix (frames of 880 bytes on average: a replay maps them), one SYN in 50 to the
    trail address; the path and how many such SYNs. A path ending in .pcapng gets the same packets
    as dumpcap writes them: pcapng, nanosecond timestamps."""
    classic = path.with_suffix(".pcap")
    stats = t.unique_capture(classic, packets, seed=4, trail_ips=["66.66.66.66"])
    if path.suffix == ".pcapng":
        with open(path, "wb") as f:
            f.write(shb() + idb(snaplen=262144, options=resolution(9)))
            for b in read_batches(classic):
                for (sec, usec, off, cap), wire in zip(b.meta.tolist(), b.wirelen.tolist(), strict=True):
                    f.write(epb((sec * 10**6 + usec) * 1000, b.data[off : off + cap], wire=wire))
    return path, stats["trail_syns"]


class _WatchWorkers:
    """A run monitor that records whether a worker had the capture file mapped, and can start a
    process that runs `writer` (Python code; `PATH` is the capture) once `start_at` packets are
    captured."""

    def __init__(self, capture: Path, writer: str = "", start_at: int = 0) -> None:
        self.capture, self.writer, self.start_at = capture, writer, start_at
        self.workers: list[int] = []
        self.seen_mapped = False
        self.mapped_after_writer: list[bool] = []  # at each batch after the writer started
        self.process: subprocess.Popen[bytes] | None = None

    def started(self, pids: dict[str, int]) -> None:
        self.workers = [pid for name, pid in pids.items() if name.startswith("worker")]

    def progress(self, captured: int) -> None:
        mapped = False
        for pid in self.workers:
            with contextlib.suppress(OSError):  # a worker that has ended
                mapped |= str(self.capture) in Path(f"/proc/{pid}/maps").read_text()
        self.seen_mapped |= mapped
        if self.process is not None:
            self.mapped_after_writer.append(mapped)
        if self.writer and self.process is None and captured >= self.start_at:
            self.process = subprocess.Popen([sys.executable, "-c", f"PATH = {str(self.capture)!r}\n{self.writer}"])
            time.sleep(0.3)  # it is waiting for the lease by now

    def drained(self) -> None:
        pass


def _index(tmp_path: Path) -> Path:
    (tmp_path / "trails.csv").write_text("66.66.66.66,malware (test),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "trails.mtidx")
    return tmp_path / "trails.mtidx"


def test_the_sensor_maps_a_replayed_file_and_reports_what_copies_report(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers map the file the sensor replays (seen in their /proc maps), classic pcap or pcapng,
    and the events are those of the same replay with copies (the file held open for writing: no
    lease: the records are read into the slots, a pcapng file's too, libpcap reading none)."""
    capture, syns = _big_capture(tmp_path / "c.pcapng", 6000)
    index = _index(tmp_path)
    logs = {}
    for mode in ("mapped", "copied", "mapped pcapng", "copied pcapng"):
        log_dir = tmp_path / mode.replace(" ", "_")
        cfg = SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=2, batch_packets=256)
        path = capture if mode.endswith("pcapng") else capture.with_suffix(".pcap")
        watch = _WatchWorkers(path)
        if mode.startswith("copied"):
            with open(path, "ab"), monkeypatch.context() as patch:
                if mode.endswith("pcapng"):
                    patch.setattr(capture_module, "read_batches", not_libpcap)
                summary = run_sensor(cfg, [path], monitor=watch)
        else:
            summary = run_sensor(cfg, [path], monitor=watch)
        assert watch.seen_mapped == mode.startswith("mapped")
        assert summary.packets == 6000 and summary.status["counters"].get("malformed", 0) == 0
        logs[mode] = sorted(line for f in log_dir.glob("*.log") for line in f.read_text().splitlines())
    assert logs["mapped"] == logs["copied"] == logs["mapped pcapng"] == logs["copied pcapng"]
    assert syns and sum("66.66.66.66" in line for line in logs["mapped"]) >= 1


def test_libpcap_reads_on_where_a_pcapng_file_needs_it(tmp_path: Path) -> None:
    """One sensor run over three files: a pcapng file with an obsolete Packet Block in its middle
    (libpcap reads on from there), the classic file, and a pcapng file damaged at its 4,000th
    block (libpcap reads on, then stops there). The events are those of the classic file's
    packets, three times over with the third cut at the damage."""
    classic = _big_capture(tmp_path / "c.pcap", 6000)[0]
    packets = [(b.data[off : off + cap], sec, usec, wire) for b in read_batches(classic)
               for (sec, usec, off, cap), wire in zip(b.meta.tolist(), b.wirelen.tolist(), strict=True)]

    def pcapng(path: Path, odd: int, block: Callable[[bytes, int, int, int], bytes]) -> Path:
        with open(path, "wb") as f:
            f.write(shb() + idb(snaplen=262144))
            for i, (frame, sec, usec, wire) in enumerate(packets):
                f.write(block(frame, sec, usec, wire) if i == odd else epb(sec * 10**6 + usec, frame, wire=wire))
        return path

    def obsolete(frame: bytes, sec: int, usec: int, wire: int) -> bytes:
        ticks = sec * 10**6 + usec
        return pcapng_block(2, struct.pack("<HHIIII", 0, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), wire) + frame)

    with_pb = pcapng(tmp_path / "pb.pcapng", 3000, obsolete)
    damaged = pcapng(tmp_path / "damaged.pcapng", 4000,
                     lambda frame, sec, usec, wire: epb(sec * 10**6 + usec, frame, wire=wire, trailer=1))
    cut = tmp_path / "first4000.pcap"
    with PcapWriter(cut) as w:
        for frame, sec, usec, wire in packets[:4000]:
            w.write(frame, sec + usec / 1e6, wirelen=wire)
    index = _index(tmp_path)
    logs = {}
    for name, files in (("pcapng", [with_pb, classic, damaged]), ("classic", [classic, classic, cut])):
        log_dir = tmp_path / name
        cfg = SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=2, batch_packets=256)
        watch = _WatchWorkers(with_pb)
        summary = run_sensor(cfg, files, monitor=watch)
        assert summary.packets == 16000 and summary.status["counters"].get("malformed", 0) == 0
        assert watch.seen_mapped == (name == "pcapng")
        logs[name] = sorted(line for f in log_dir.glob("*.log") for line in f.read_text().splitlines())
    assert logs["pcapng"] and logs["pcapng"] == logs["classic"]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_writer_during_the_replay_waits_then_the_rest_is_copied(tmp_path: Path, kind: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A process opening the file for writing mid-replay (and changing nothing) waits for the
    workers to be done with what they mapped; the replay reads the rest into the slots (libpcap
    reads none of a pcapng file) and reports every packet and event of an undisturbed replay."""
    if kind == "pcapng":
        monkeypatch.setattr(capture_module, "read_batches", not_libpcap)
    capture, _ = _big_capture(tmp_path / f"c.{kind}", 20000)
    index = _index(tmp_path)
    logs = {}
    for writer in ("", "open(PATH, 'ab').close()"):
        log_dir = tmp_path / f"logs{len(writer)}"
        cfg = SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=2, batch_packets=256)
        watch = _WatchWorkers(capture, writer, start_at=5000)  # some 20 batches mapped first
        summary = run_sensor(cfg, [capture], monitor=watch)
        assert watch.seen_mapped and summary.packets == 20000
        assert watch.process is None or watch.process.wait(10) == 0
        if writer:  # the rest of the replay was copied: the workers mapped the file no more
            assert len(watch.mapped_after_writer) > 10 and not any(watch.mapped_after_writer[-10:])
        logs[writer] = sorted(line for f in log_dir.glob("*.log") for line in f.read_text().splitlines())
    assert logs[""] and logs[""] == logs["open(PATH, 'ab').close()"]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_file_truncated_during_the_replay_ends_it_cleanly(tmp_path: Path, kind: str) -> None:
    """Without the lease, the workers mapping the file would die of SIGBUS: here the truncate waits
    until they are done with it, and the replay ends where the file now does."""
    capture, _ = _big_capture(tmp_path / f"c.{kind}", 20000)
    cfg = SensorConfig(name="t", trails=str(_index(tmp_path)), log_dir=str(tmp_path / "logs"), workers=2,
                       batch_packets=256)
    watch = _WatchWorkers(capture, "import os; os.truncate(PATH, 0)")
    summary = run_sensor(cfg, [capture], monitor=watch)
    assert watch.process is not None and watch.process.wait(10) == 0
    assert capture.stat().st_size == 0
    assert 0 < summary.packets < 20000
    assert summary.status["counters"]["packets"] == summary.packets
