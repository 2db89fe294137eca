"""The shared-memory ring under concurrency: nothing lost, duplicated or torn; wrap-around;
back-pressure for files; counted drops for live capture; the doorbell on which one consumer of
several rings (`RingSet`, the aggregator) waits."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from shm.packets import read_batch, write_batch
from shm.ring import Ring, RingSet, RingSpec, create_doorbell, create_ring
from shm.segments import PREFIX, SegmentOwner

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def owner() -> Iterator[SegmentOwner]:
    """The segments a test creates, unlinked after it, whatever happens in it."""
    owned = SegmentOwner()
    yield owned
    owned.unlink_all()


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


def test_concurrent_messages_wrap_around_without_loss_or_tearing(owner: SegmentOwner) -> None:
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


def test_packet_batches_cross_processes_intact(owner: SegmentOwner) -> None:
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


def test_live_mode_counts_drops_exactly_and_never_blocks(owner: SegmentOwner) -> None:
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
def test_consumer_wait_times_out(timeout: float, owner: SegmentOwner) -> None:
    ring = Ring(create_ring(owner, "empty", 2, 4096))
    assert ring.wait(timeout) is None
    assert ring.get(timeout) is None
    ring.close()


def _tagged_producer(spec: RingSpec, count: int, tag: int) -> None:
    """`count` messages (index, tag, then up to two slots of filler), then end of input."""
    ring = Ring(spec)
    rng = random.Random(tag)
    for i in range(count):
        ring.put(struct.pack("<QQ", i, tag) + bytes(rng.randint(0, 9000)))
        if i % 97 == 0:
            time.sleep(0.001)
    ring.put_eof()
    ring.close()


def test_a_ring_set_reads_every_ring_and_never_sleeps_through_a_message(owner: SegmentOwner) -> None:
    """`RingSet`, the aggregator's way of reading every worker's results: two producers' messages
    of one slot and of several arrive whole and in order, every wait on the shared doorbell ends
    with its ring, not with its timeout, and once every ring has ended a wait returns at once."""
    bell = create_doorbell()
    specs = [create_ring(owner, f"bell{w}", slots=3, slot_bytes=4096, doorbell=bell) for w in range(2)]
    reader = RingSet([Ring(s) for s in specs])
    procs = [CTX.Process(target=_tagged_producer, args=(spec, 400, w)) for w, spec in enumerate(specs)]
    for proc in procs:
        proc.start()
    seen = [0, 0]
    while reader.open:
        got = reader.next_messages()
        for msg in got:
            i, w = struct.unpack_from("<QQ", msg)
            assert i == seen[w], "lost or reordered message"
            seen[w] += 1
        if not got and reader.open:
            assert reader.wait(30.0), "slept through a message"
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    assert seen == [400, 400]
    asked = time.monotonic()
    assert not reader.wait(30.0)  # every ring has ended: nothing to wait for
    assert time.monotonic() - asked < 10.0, "waited after the end of input"
    for ring in reader.rings:
        ring.close()


def test_the_doorbell_rings_once_a_whole_message(owner: SegmentOwner) -> None:
    """A message over several slots rings once, after its last slot; the end of input rings too."""
    bell = create_doorbell()
    ring = Ring(create_ring(owner, "bell", slots=4, slot_bytes=4096, doorbell=bell))
    ring.put(bytes(3 * ring.payload_bytes - 1))  # three slots
    assert bell.acquire(False) and not bell.acquire(False)
    assert len(ring.get(0) or b"") == 3 * ring.payload_bytes - 1
    ring.put_eof()
    assert bell.acquire(False) and not bell.acquire(False)
    ring.close()


def test_a_ring_set_needs_one_doorbell(owner: SegmentOwner) -> None:
    rings = [Ring(create_ring(owner, "nobell", 2, 4096)),
             Ring(create_ring(owner, "bell", 2, 4096, create_doorbell()))]
    with pytest.raises(ValueError, match="do not share a doorbell"):
        RingSet(rings)
    for ring in rings:
        ring.close()
