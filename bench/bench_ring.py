"""Ring throughput: a producer process writing 4096-packet batches, this process consuming."""

from __future__ import annotations

import multiprocessing

import numpy as np

from shm.packets import read_batch, write_batch
from shm.ring import Ring, RingSpec, create_ring
from shm.segments import SegmentOwner

BATCHES = 200
N = 4096


def _producer(spec: RingSpec) -> None:
    ring = Ring(spec)
    caplen = np.full(N, 300, dtype=np.uint32)
    meta = np.stack([caplen, caplen, np.arange(N, dtype=np.uint32) * 300, caplen], axis=1)
    data = bytes(N * 300)
    for seq in range(BATCHES):
        off = ring.reserve(True)
        ring.publish(write_batch(ring.buf, off, seq, 1, meta, caplen, data))
    ring.put_eof()
    ring.close()


def _transfer() -> int:
    owner = SegmentOwner()
    try:
        spec = create_ring(owner, "bench", 8, 4 << 20)
        ring = Ring(spec)
        proc = multiprocessing.get_context("spawn").Process(target=_producer, args=(spec,))
        proc.start()
        packets = 0
        while True:
            off, _, flags = ring.wait(30)
            if flags:
                ring.release()
                break
            packets += len(read_batch(ring.buf, off))
            ring.release()
        proc.join()
        ring.close()
        return packets
    finally:
        owner.unlink_all()


def test_ring_transfer(benchmark) -> None:
    benchmark.extra_info["packets_per_round"] = BATCHES * N
    assert benchmark.pedantic(_transfer, rounds=3) == BATCHES * N
