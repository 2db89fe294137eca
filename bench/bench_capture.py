"""The capture side alone: pcap file to worker rings as a replay does it (`engine.capture.replay`:
the file leased and its packets left for the workers to map, so the slots get only the columns;
without a lease, records read straight into the slots when they are big enough, else libpcap's
batches copied in), classic pcap and pcapng, with consumer processes that only release the
slots. Target: at least 3 M packets/s."""

from __future__ import annotations

import multiprocessing
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.capture import Dispatcher, replay
from engine.pcapio import read_batches
from shm.ring import Ring, RingSpec, create_ring
from shm.segments import SegmentOwner

REPEAT = 3  # the capture three times per round


def _release_all(spec: RingSpec) -> None:
    ring = Ring(spec)
    while True:
        slot = ring.wait(30)
        ring.release()
        if slot is None or slot[2]:
            break
    ring.close()


def _file_to_rings(capture: Path, rings_count: int) -> tuple[int, float, float]:
    """(packets, wall seconds, this process's CPU seconds) of REPEAT replays of the capture."""
    owner = SegmentOwner()
    try:
        specs = [create_ring(owner, f"in{w}", max(2, 8 // rings_count), 4 << 20) for w in range(rings_count)]
        consumers = [multiprocessing.get_context("spawn").Process(target=_release_all, args=(s,)) for s in specs]
        for c in consumers:
            c.start()
        rings = [Ring(s) for s in specs]
        for ring in rings:  # wait until the consumers are attached, so process start is not timed
            ring.put(b"warm-up")
        while any(r.stats()["occupancy"] for r in rings):
            time.sleep(0.01)
        dispatcher = Dispatcher(rings, live=False, idle=lambda: None)
        started, cpu = time.perf_counter(), time.process_time()
        replay(dispatcher, [capture] * REPEAT, 4096, 0, lambda: None)
        dispatcher.finish()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        for c in consumers:
            c.join(30)
        for ring in rings:
            ring.close()
        return dispatcher.packets, seconds, cpu
    finally:
        owner.unlink_all()


@pytest.mark.parametrize(("mix", "rings"), [("mixed", 1), ("mixed", 2), ("unique", 1), ("syn-flood", 1)])
def test_capture_file_to_rings(benchmark, mix_pcap: Callable[[str], Path], mix: str, rings: int) -> None:
    """Throughput and the capture process's CPU per packet, of a leased file (the benchmark's own):
    its records walked in a map of it, whatever their size (870 bytes on average in the `unique`
    mix, smaller in `mixed` and `syn-flood`)."""
    _measure(benchmark, mix_pcap(mix), mix, rings, "mapped")


@pytest.mark.parametrize("mix", ["mixed", "unique", "syn-flood"])
def test_capture_file_to_rings_without_a_lease(benchmark, mix_pcap: Callable[[str], Path], mix: str) -> None:
    """The same with the file held open for writing meanwhile, so no lease: what a replay of a file
    still being written, or of another user's, costs (records big enough read into the slots, the
    others by libpcap)."""
    capture = mix_pcap(mix)
    with open(capture, "ab"):
        _measure(benchmark, capture, mix, 1, "copied (no lease)")


@pytest.mark.parametrize(("mix", "lease"), [("mixed", True), ("unique", True), ("mixed", False), ("unique", False)])
def test_capture_pcapng_file_to_rings(benchmark, mix_pcap: Callable[[str], Path], tmp_path: Path, mix: str,
                                      lease: bool) -> None:
    """The same packets as pcapng with nanosecond timestamps, as dumpcap, Wireshark and editcap
    write them: leased, its blocks walked in a map of it (`engine.pcapng`); held open for writing,
    its blocks read into the slots and walked there."""
    capture = _as_pcapng(mix_pcap(mix), tmp_path / f"{mix}.pcapng")
    if lease:
        _measure(benchmark, capture, mix, 1, "mapped pcapng")
    else:
        with open(capture, "ab"):
            _measure(benchmark, capture, mix, 1, "pcapng read into the slots (no lease)")


def _as_pcapng(capture: Path, path: Path) -> Path:
    """`capture`'s packets in a pcapng file: a section, one interface (nanoseconds), a block each."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        f.write(struct.pack("<IIHHIHHBxxxHHI", 1, 32, 1, 0, 262144, 9, 1, 9, 0, 0, 32))  # if_tsresol 9
        for batch in read_batches(capture):
            for (sec, usec, off, cap), wire in zip(batch.meta.tolist(), batch.wirelen.tolist(), strict=True):
                ticks = (sec * 1_000_000 + usec) * 1000
                pad = -cap % 4
                f.write(struct.pack("<IIIIIII", 6, 32 + cap + pad, 0, ticks >> 32, ticks & 0xFFFFFFFF, cap, wire))
                f.write(batch.data[off : off + cap] + bytes(pad) + struct.pack("<I", 32 + cap + pad))
    return path


_cpu_us: dict[tuple[str, int, str], float] = {}


def _measure(benchmark, capture: Path, mix: str, rings: int, how: str) -> None:
    results = []
    benchmark.pedantic(lambda: results.append(_file_to_rings(capture, rings)), rounds=3)
    packets, seconds, _ = min(results, key=lambda r: r[1])
    cpu = _cpu_us[mix, rings, how] = min(r[2] for r in results) / packets * 1e6
    rate = packets / seconds
    benchmark.extra_info.update({"packets": packets, "packets_per_second": round(rate), "cpu_us_per_packet": cpu,
                                 "read": how})
    mapped = _cpu_us.get((mix, rings, "mapped"))
    print(f"\ncapture side, {mix}, {rings} ring(s), {how}: {rate / 1e6:.2f} M packets/s ({packets} packets in "
          f"{seconds:.3f} s), {cpu:.3f} µs of capture CPU a packet"
          + (f" ({cpu / mapped:.2f}x the mapped classic replay's)" if how != "mapped" and mapped else ""))
