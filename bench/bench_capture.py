"""The capture side alone: pcap file to worker rings as a replay does it (`engine.capture.replay`:
records read straight into the slots when they are big enough, else libpcap's batches copied in),
with consumer processes that only release the slots. Target: at least 3 M packets/s."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from engine.capture import Dispatcher, replay
from shm.ring import Ring, RingSpec, create_ring
from shm.segments import SegmentOwner

REPEAT = 3  # the 300k-packet capture three times per round


def _release_all(spec: RingSpec) -> None:
    ring = Ring(spec)
    while True:
        slot = ring.wait(30)
        ring.release()
        if slot is None or slot[2]:
            break
    ring.close()


def _file_to_rings(capture: Path, rings_count: int) -> tuple[int, float]:
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
        started = time.perf_counter()
        replay(dispatcher, [capture] * REPEAT, 4096, 0, lambda: None)
        dispatcher.finish()
        seconds = time.perf_counter() - started
        for c in consumers:
            c.join(30)
        for ring in rings:
            ring.close()
        return dispatcher.packets, seconds
    finally:
        owner.unlink_all()


@pytest.mark.parametrize("rings", [1, 2])
def test_capture_file_to_rings(benchmark, mixed_pcap: Path, rings: int) -> None:
    results = []
    benchmark.pedantic(lambda: results.append(_file_to_rings(mixed_pcap, rings)), rounds=3)
    packets, seconds = min(results, key=lambda r: r[1])
    rate = packets / seconds
    benchmark.extra_info.update({"packets": packets, "packets_per_second": round(rate)})
    print(f"\ncapture side, {rings} ring(s): {rate / 1e6:.2f} M packets/s ({packets} packets in {seconds:.3f} s)")
