"""The shared-memory ring under concurrency: nothing lost, duplicated or torn; wrap-around;
back-pressure for files; counted drops for live capture."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import struct
import time

import numpy as np
import pytest

from shm.packets import read_batch, write_batch
from shm.ring import Ring, RingSpec, create_doorbell, create_ring
from shm.segments import PREFIX, SegmentOwner

CTX = multiprocessing.get_context("spawn")


def _message(i: int, rng: random.Random, max_len: int) -> bytes:
    body = rng.randbytes(rng.randint(0, max_len))
    return struct.pack("<Q", i) + hashlib.sha1(body).digest() + body


def _producer(spec: RingSpec, count: int, max_len: int, seed: int) -> None:
    ring = Ring(spec)
    rng = random.Random(seed)
    for i in range(count):
        ring.put(_message(i, rng, max_len))
        if i % 97 == 0:
            time.sleep(0.001)  # let the consumer catch up sometimes, fall behind other times
    ring.put_eof()
    ring.close()


def test_concurrent_messages_wrap_around_without_loss_or_tearing() -> None:
    owner = SegmentOwner()
    try:
        spec = create_ring(owner, "stress", slots=4, slot_bytes=4096)
        ring = Ring(spec)
        count = 3000
        proc = CTX.Process(target=_producer, args=(spec, count, 10_000, 5))  # many span several slots
        proc.start()
        seen = 0
        while True:
            msg = ring.get(10.0)
            assert msg is not None, "producer stalled"
            if msg == b"":
                break
            (i,) = struct.unpack_from("<Q", msg)
            assert i == seen, "lost, duplicated or reordered message"
            assert hashlib.sha1(msg[28:]).digest() == msg[8:28], "torn message"
            seen += 1
            if seen % 500 == 0:
                time.sleep(0.05)  # consumer slower than producer: back-pressure must hold it
        proc.join(10)
        assert proc.exitcode == 0
        assert seen == count
        stats = ring.stats()
        assert stats["published"] > count  # multi-slot messages and many wraps of 4 slots
        assert stats["peak_occupancy"] <= 4
        ring.close()
    finally:
        owner.unlink_all()


def _batch_producer(spec: RingSpec, batches: int) -> None:
    ring = Ring(spec)
    rng = np.random.default_rng(1)
    for seq in range(batches):
        n = int(rng.integers(1, 300))
        caplen = rng.integers(0, 200, n).astype(np.uint32)
        offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
        data = rng.integers(0, 256, int(caplen.sum()), dtype=np.uint8).tobytes()
        meta = np.stack([np.full(n, seq, np.uint32), np.arange(n, dtype=np.uint32), offsets, caplen], axis=1)
        off = ring.reserve(True)
        used = write_batch(ring.buf, off, seq, 1, meta, caplen + 5, data)
        ring.publish(used)
    ring.put_eof()
    ring.close()


def test_packet_batches_cross_processes_intact() -> None:
    owner = SegmentOwner()
    try:
        spec = create_ring(owner, "batches", slots=3, slot_bytes=128 * 1024)
        ring = Ring(spec)
        proc = CTX.Process(target=_batch_producer, args=(spec, 400))
        proc.start()
        rng = np.random.default_rng(1)
        seq = 0
        while True:
            slot = ring.wait(10.0)
            assert slot is not None
            off, _, flags = slot
            if flags:
                ring.release()
                break
            batch = read_batch(ring.buf, off)
            n = int(rng.integers(1, 300))
            caplen = rng.integers(0, 200, n).astype(np.uint32)
            data = rng.integers(0, 256, int(caplen.sum()), dtype=np.uint8)
            assert batch.seq == seq and len(batch) == n and batch.linktype == 1
            assert np.array_equal(batch.meta[:, 3], caplen)
            assert np.array_equal(batch.wirelen, caplen + 5)
            assert np.array_equal(batch.data, data)
            del batch
            ring.release()
            seq += 1
        proc.join(10)
        assert seq == 400
        ring.close()
    finally:
        owner.unlink_all()


def test_live_mode_counts_drops_exactly_and_never_blocks() -> None:
    owner = SegmentOwner()
    try:
        ring = Ring(create_ring(owner, "live", slots=2, slot_bytes=4096))
        sent = dropped = 0
        started = time.monotonic()
        for _ in range(10):
            off = ring.reserve(block=False)
            if off is None:
                ring.count_drop(7)
                dropped += 7
            else:
                ring.publish(0)
                sent += 1
        assert time.monotonic() - started < 1.0  # never waited
        assert sent == 2
        stats = ring.stats()
        assert stats["dropped_packets"] == dropped == 56
        assert stats["dropped_batches"] == 8
        assert stats["occupancy"] == 2
        ring.close()
    finally:
        owner.unlink_all()


def test_segments_are_unlinked_by_owner() -> None:
    owner = SegmentOwner()
    create_ring(owner, "a", 2, 4096)
    names = owner.names
    assert all(os.path.exists(f"/dev/shm/{n}") for n in names)
    owner.unlink_all()
    owner.unlink_all()  # idempotent
    assert not any(os.path.exists(f"/dev/shm/{n}") for n in names)
    assert all(n.startswith(PREFIX) for n in names)


@pytest.mark.parametrize("timeout", [0, 0.05])
def test_consumer_wait_times_out(timeout: float) -> None:
    owner = SegmentOwner()
    try:
        ring = Ring(create_ring(owner, "empty", 2, 4096))
        assert ring.wait(timeout) is None
        assert ring.get(timeout) is None
        ring.close()
    finally:
        owner.unlink_all()


def test_rings_sharing_a_doorbell_wake_their_consumer_once_a_message() -> None:
    """The aggregator's way of reading every worker's results: a pass over the rings takes one ring
    of the bell per message read, and only a pass that found nothing waits on the bell. Two
    producers, messages of one slot and of several: nothing is lost or reordered, every wait ends
    with a message (the consumer never sleeps through one), and the bell rang once a whole message
    (not once a slot)."""
    owner = SegmentOwner()
    try:
        bell = create_doorbell()
        specs = [create_ring(owner, f"bell{w}", slots=3, slot_bytes=4096, doorbell=bell) for w in range(2)]
        rings = [Ring(s) for s in specs]
        procs = [CTX.Process(target=_producer, args=(spec, 400, 9000, w)) for w, spec in enumerate(specs)]
        for proc in procs:
            proc.start()
        seen, open_rings, rung = [0, 0], {0, 1}, 0
        while open_rings:
            got = False
            for w in sorted(open_rings):
                msg = rings[w].get(0)
                if msg is None:
                    continue
                got = True
                rung += bell.acquire(False)
                if msg == b"":
                    open_rings.discard(w)
                    continue
                assert struct.unpack_from("<Q", msg)[0] == seen[w], "lost or reordered message"
                seen[w] += 1
            if not got:
                assert bell.acquire(True, 10.0), "slept through a message"
                rung += 1
        for proc in procs:
            proc.join(10)
            assert proc.exitcode == 0
        while bell.acquire(False):  # rung after its message was read
            rung += 1
        assert seen == [400, 400]
        assert rung == 2 * 401, "not one ring a whole message (400 and the end of input, each producer)"
        for ring in rings:
            ring.close()
    finally:
        owner.unlink_all()
