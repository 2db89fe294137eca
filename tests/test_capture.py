"""The capture side: dispatch to the least-loaded ring, exact drop counting when rings are full
(live semantics), the shared capture counters, and the paced replay of `maltrail bench --rate`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.capture import CAPTURE_FIELDS, Dispatcher, paced
from engine.pcapio import Batch, PcapRecords, PcapWriter, open_records, read_batches
from shm.counters import SharedCounters, create_counters
from shm.packets import read_batch
from shm.ring import Ring, create_ring
from shm.segments import SegmentOwner


def _batch(n: int, size: int = 60, linktype: int = 1, first: int = 0) -> Batch:
    frames = [bytes([(first + i) % 256]) * size for i in range(n)]
    caplen = np.full(n, size, dtype=np.uint32)
    meta = np.stack([np.arange(n, dtype=np.uint32), np.zeros(n, np.uint32),
                     np.arange(n, dtype=np.uint32) * size, caplen], axis=1)
    return Batch(linktype, meta, caplen.copy(), b"".join(frames))


def _frames(batch: Batch) -> list[bytes]:
    return [batch.data[off:off + cap] for _, _, off, cap in batch.meta.tolist()]


def _drain(ring: Ring) -> list[int]:
    """Consume every queued slot; the packet count of each."""
    sizes = []
    while (slot := ring.wait(0)) is not None:
        sizes.append(len(read_batch(ring.buf, slot[0])))
        ring.release()
    return sizes


@pytest.fixture
def owner():
    owner = SegmentOwner()
    yield owner
    owner.unlink_all()


def test_batches_go_to_the_ring_with_fewest_packets_queued(owner: SegmentOwner) -> None:
    rings = [Ring(create_ring(owner, f"r{i}", 8, 1 << 20)) for i in range(2)]
    d = Dispatcher(rings, live=False, idle=lambda: None)
    d.send(1, *_parts(_batch(1000)))  # ring 0 (round-robin start)
    d.send(1, *_parts(_batch(10)))  # ring 1
    d.send(1, *_parts(_batch(10)))  # ring 1 again: 10 queued < 1000
    d.send(1, *_parts(_batch(10)))
    assert [r.stats()["published"] for r in rings] == [1, 3]
    assert _drain(rings[0]) == [1000]  # the slow worker catches up
    d.send(1, *_parts(_batch(10)))  # now ring 0 has nothing queued
    assert [r.stats()["published"] for r in rings] == [2, 3]
    for r in rings:
        r.close()


def _parts(batch: Batch) -> tuple[np.ndarray, np.ndarray, bytes]:
    return batch.meta, batch.wirelen, batch.data


def test_live_drops_are_counted_exactly_and_published(owner: SegmentOwner) -> None:
    rings = [Ring(create_ring(owner, f"r{i}", 2, 1 << 20)) for i in range(2)]
    spec = create_counters(owner, "capture", CAPTURE_FIELDS)
    counters = SharedCounters(spec)
    d = Dispatcher(rings, live=True, idle=lambda: None, counters=counters)
    sizes = [100, 7, 300, 1, 50, 20, 90, 13, 400]
    for n in sizes:
        d.send(1, *_parts(_batch(n)))
    delivered = _drain(rings[0]) + _drain(rings[1])
    assert len(delivered) == 4  # 2 slots per ring, nothing consumed while sending
    dropped = [r.stats()["dropped_packets"] for r in rings]
    assert sum(delivered) + sum(dropped) == sum(sizes) == d.packets
    assert sum(dropped) == d.dropped and sum(r.stats()["dropped_batches"] for r in rings) == len(sizes) - 4
    reader = SharedCounters(spec)  # another attachment, as the aggregator has
    assert reader.get("packets") == sum(sizes) and reader.get("ring_dropped") == d.dropped
    assert reader.get("batches") == len(sizes) and reader.get("live") == 1
    assert reader.get("bytes") == 60 * sum(sizes)
    reader.close()
    counters.close()
    for r in rings:
        r.close()


def _pcap(path: Path, n: int, linktype: int = 1, first: int = 0) -> Path:
    with PcapWriter(path, linktype=linktype) as w:
        for frame in _frames(_batch(n, 80, linktype, first)):
            w.write(frame, 1_700_000_000.0)
    return path


def test_paced_batches_join_files_in_order_without_mixing_link_types(tmp_path: Path) -> None:
    a, b = _pcap(tmp_path / "a.pcap", 25), _pcap(tmp_path / "b.pcap", 30, first=25)
    c = _pcap(tmp_path / "c.pcap", 12, linktype=101, first=55)
    source = [batch for path in (a, b, c) for batch in read_batches(path, 7)]
    out = list(paced(source, 1_000_000, 10))
    assert all(1 <= len(batch) <= 10 for batch in out)
    assert [frame for batch in out for frame in _frames(batch)] == [f for s in source for f in _frames(s)]
    assert any(len(batch) == 10 for batch in out)  # joined across the 7-packet file batches
    raw = source[-1].linktype  # libpcap reports LINKTYPE_RAW as DLT_RAW
    assert raw != 1
    linktypes = [batch.linktype for batch in out]
    assert linktypes == sorted(linktypes, key=lambda lt: lt == raw)  # raw packets never in an Ethernet batch
    assert sum(len(batch) for batch in out if batch.linktype == raw) == 12
    for batch in out:
        assert np.array_equal(batch.wirelen, batch.meta[:, 3])


def test_paced_release_follows_the_offered_rate(tmp_path: Path) -> None:
    path = _pcap(tmp_path / "a.pcap", 3000)
    started = time.monotonic()
    stamps = []
    released = 0
    for batch in paced(read_batches(path, 4096), 10_000, 500):
        released += len(batch)
        stamps.append((time.monotonic() - started, released))
    assert released == 3000
    for elapsed, total in stamps:  # never ahead of the rate
        assert total <= 10_000 * elapsed + 1
    assert stamps[-1][0] >= 0.29


def test_a_batch_larger_than_a_slot_is_split_with_its_packets_intact(owner: SegmentOwner) -> None:
    """Offsets may leave bytes between packets (a slot filled from a pcap file holds its record
    headers): the split must count those bytes too, or a piece overflows its slot."""
    frames = [bytes([i % 251]) * (100 + i % 500) for i in range(600)]
    gap = b"\xee" * 16
    data = b"".join(gap + f for f in frames)
    caplen = np.array([len(f) for f in frames], np.uint32)
    offsets = np.cumsum(caplen.astype(np.int64) + 16) - caplen
    meta = np.stack([np.zeros(600, np.uint32), np.zeros(600, np.uint32), offsets.astype(np.uint32), caplen], axis=1)
    ring = Ring(create_ring(owner, "r", 64, 16 << 10))
    Dispatcher([ring], live=False, idle=lambda: None).send(1, meta, caplen, data)
    got, slots = [], 0
    while (slot := ring.wait(0)) is not None:
        piece = read_batch(ring.buf, slot[0])
        got += [piece.data[off:off + cap].tobytes() for _, _, off, cap in piece.meta.tolist()]
        ring.release()
        slots += 1
    assert got == frames and slots > 10
    ring.close()


def test_an_interrupted_fill_gives_its_slot_back(owner: SegmentOwner, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside the record walk of `Dispatcher.fill`: the reserved slot is given back, so the
    end-of-input marker still finds room, and the interrupt goes on."""
    with PcapWriter(tmp_path / "f.pcap") as w:
        for i in range(50):
            w.write(bytes(1400), 1_700_000_000 + i)
    ring = Ring(create_ring(owner, "r", 2, 512 << 10))
    d = Dispatcher([ring], live=False, idle=lambda: None)
    records = open_records(tmp_path / "f.pcap")
    assert records is not None

    def interrupted(self: PcapRecords, buf: memoryview, end: int, count: int) -> tuple[list[int], int]:
        raise KeyboardInterrupt

    monkeypatch.setattr(PcapRecords, "_walk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        d.fill(records, 100)
    records.close()
    assert ring.spec.free.get_value() == 2 and d.packets == 0
    ring.close()


def test_a_replay_reads_a_file_straight_into_the_slots(owner: SegmentOwner, tmp_path: Path) -> None:
    """`Dispatcher.fill`: slots read from a classic pcap file hold its packets, stamps and wire
    lengths in order across rings, records cut by a slot's end go on in the next, and the end of
    the file gives back the slot it had reserved."""
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes() for _ in range(2000)]
    with PcapWriter(tmp_path / "f.pcap", nanosecond=True) as w:
        for i, frame in enumerate(frames):
            w.write(frame, 1_700_000_000 + i * 0.000_123, wirelen=len(frame) + i % 3)
    rings = [Ring(create_ring(owner, f"r{i}", 8, 512 << 10)) for i in range(2)]
    d = Dispatcher(rings, live=False, idle=lambda: None)
    records = open_records(tmp_path / "f.pcap")
    assert records is not None
    counts = [100, 8192, 8192, 8192, 8192, 8192]
    while d.fill(records, counts.pop(0) if counts else 8192):
        pass
    records.close()
    pieces = []
    for ring in rings:
        while (slot := ring.wait(0)) is not None:
            pieces.append(read_batch(ring.buf, slot[0]))
            ring.release()
    pieces.sort(key=lambda p: p.seq)
    assert [p.seq for p in pieces] == list(range(len(pieces))) and len(pieces[0]) == 100 and len(pieces) > 6
    got = [(p.data[off:off + cap].tobytes(), sec, usec, wire) for p in pieces
           for (sec, usec, off, cap), wire in zip(p.meta.tolist(), p.wirelen.tolist(), strict=True)]
    expected = [(f, *pcapio_stamp(1_700_000_000 + i * 0.000_123), len(f) + i % 3) for i, f in enumerate(frames)]
    assert got == expected
    assert d.packets == len(frames) and all(r.spec.free.get_value() == 8 for r in rings)
    for r in rings:
        r.close()


def pcapio_stamp(ts: float) -> tuple[int, int]:
    """(sec, usec) the reader gives for a stamp the writer rounded to the microsecond."""
    sec = int(ts)
    return sec, round((ts - sec) * 1e6)
