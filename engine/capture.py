"""The capture side: packet batches from files or an interface into the worker rings.

A batch from pcapy-ng is copied once, column by column, into a free ring slot. Each batch goes
to the worker with the fewest packets queued (round-robin among equals), skipping a full ring
when another has room, so batches of uneven size (live capture hands over what has arrived) and
a worker slowed by a heavy batch do not unbalance the work. Reading files, a full pipeline makes
the capture wait (back-pressure, nothing lost); capturing live it never waits: the batch is
dropped and counted on the ring it was meant for. Every batch carries the trail index generation
to match it with; after a reload, a ring that gets no batch soon is sent an empty one carrying
the new generation, so an idle worker lets go of the old index too. `paced` turns a file into
a busy link (packets released at a fixed rate) for `maltrail bench --rate`. A replay of a file it
holds a read lease on sends only each batch's columns and where its packets lie in the file, which
the workers map (`shm.filemap`); the file is closed, and the lease let go, only once no slot
pointing into it is left unconsumed.

What only the capture side knows (packets read, libpcap's kernel statistics) goes to a small
shared counters segment that the aggregator copies into the status file.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from engine.pcapio import Batch, CaptureError, Records, open_records, read_batches
from shm.counters import SharedCounters
from shm.packets import batch_bytes, columns_end, write_batch, write_columns
from shm.ring import Ring

log = logging.getLogger("maltrail")

PER_PACKET_BYTES = 20  # meta row + wire length in the slot
CAPTURE_FIELDS = ("packets", "bytes", "batches", "ring_dropped", "live", "kernel_valid", "kernel_received",
                  "kernel_dropped", "kernel_ifdropped", "offered_pps")
MAX_TICK = 0.1  # libpcap's read timeout in live capture: the longest a packet waits to be handed over
MIN_TICK = 0.001
AWAIT_POLL = 0.001  # seconds between looks while waiting for the workers to be done with a mapped file


class Dispatcher:
    """Assigns batch sequence numbers and writes batches into worker rings."""

    def __init__(self, rings: list[Ring], live: bool, idle: Callable[[], None], poll: float = 0.2,
                 counters: SharedCounters | None = None) -> None:
        self.rings = rings
        self.live = live
        self.idle = idle
        self.poll = poll
        self.counters = counters
        self.seq = 0
        self.generation = 1
        self.batches = 0
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        if counters is not None:
            counters.set(live=int(live))
        self.finished = False
        self._eof_sent = 0
        self._next = 0
        self._in_slots: list[deque[int]] = [deque() for _ in rings]  # packets of each unconsumed slot
        self._released = [0] * len(rings)  # slots seen consumed
        self._queued = [0] * len(rings)  # packets published, not yet consumed
        self._behind: set[int] = set()  # rings whose last batch carries an older generation
        self._held: list[tuple[Records, list[int]]] = []  # mapped files read, and the slots to await

    def switch(self, generation: int) -> None:
        """From the next batch on, match with `generation`; every ring is owed a batch carrying it."""
        self.generation = generation
        self._behind = set(range(len(self.rings)))
        self.catch_up()

    def catch_up(self) -> None:
        """An empty batch with the current generation to each ring still owed one, where a slot is free."""
        for w in sorted(self._behind):
            ring = self.rings[w]
            off = ring.reserve(block=False)
            if off is None:
                continue
            empty = np.zeros((0, 4), dtype=np.uint32)
            ring.publish(write_batch(ring.buf, off, self.seq, 0, empty, empty[:, 0], b"", self.generation))
            self.seq += 1
            self._in_slots[w].append(0)
            self._behind.discard(w)

    @property
    def room(self) -> int:
        """Bytes of one slot for a batch's columns and packets."""
        return self.rings[0].payload_bytes - batch_bytes(0, 0) - 8

    @property
    def read_bytes(self) -> int:
        """About the most bytes of packets a batch read by libpcap should hold (`next_count`): seven
        eighths of a slot, so that a batch of mean-sized packets seldom needs a second one."""
        return self.room * 7 // 8

    def send(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: bytes) -> None:
        """Send a batch, split into pieces that each fit one slot."""
        n = len(wirelen)
        room = self.room
        if (n and int(meta[0, 2]) == 0 and int(meta[-1, 2]) + int(meta[-1, 3]) == len(data)
                and len(data) + n * PER_PACKET_BYTES <= room):  # a whole batch that fits one slot
            self._put(linktype, meta, wirelen, memoryview(data))
            return
        start = 0
        ends = meta[:, 2].astype(np.int64) + meta[:, 3]
        while start < n:
            need = ends[start:] - int(meta[start, 2]) + PER_PACKET_BYTES * np.arange(1, n - start + 1)
            count = max(1, int(np.searchsorted(need, room, side="right")))
            stop = start + count
            base = int(meta[start, 2])
            end = int(meta[stop - 1, 2]) + int(meta[stop - 1, 3])
            piece = meta[start:stop].copy()
            piece[:, 2] -= base
            self._put(linktype, piece, wirelen[start:stop], memoryview(data)[base:end])
            start = stop

    def publish(self) -> None:
        """Totals so far to the shared counters (after every slot written or dropped, and at the end)."""
        if self.counters is not None:
            self.counters.set(packets=self.packets, bytes=self.bytes, batches=self.batches, ring_dropped=self.dropped)

    def _put(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: memoryview) -> None:
        """One slot's worth, counted once it is published or dropped (an interrupt in between
        leaves the totals consistent)."""
        target, off = self._reserve()
        if off is None:
            self.rings[target].count_drop(len(wirelen))
            self.dropped += len(wirelen)
            self._count(wirelen)
            return
        ring = self.rings[target]
        ring.publish(write_batch(ring.buf, off, self.seq, linktype, meta, wirelen, data, self.generation))
        self._sent(target, wirelen)

    def fill(self, records: Records, count: int) -> bool:
        """A replay's next slot, up to `count` packets read straight from the file (no copy of the
        packets here), or located in it for the workers to map; False at the end of what these
        records read. Waits for room, as reading files does."""
        if records.mapped:
            return self._fill_mapped(records, count)
        target, off = self._reserve()
        ring = self.rings[target]
        assert off is not None, "fill is for replays, which wait for room"
        count = max(1, min(count, (ring.payload_bytes - columns_end(0) - records.largest) // PER_PACKET_BYTES))
        at = columns_end(count)
        try:
            taken = records.fill(ring.buf[off + at : off + ring.payload_bytes], count)
        except BaseException:
            ring.cancel()
            raise
        if taken is None:
            ring.cancel()
            return False
        meta, wirelen, used = taken
        ring.publish(write_columns(ring.buf, off, self.seq, records.linktype, meta, wirelen, at, used, self.generation))
        self._sent(target, wirelen)
        return True

    def _fill_mapped(self, records: Records, count: int) -> bool:
        """`fill` for a mapped file: the slot gets the columns, the workers map the packets. Someone
        waiting to write to the file makes it wait for the workers, then read the rest into slots."""
        if records.lease_broken:
            self._await(self._marks())
            records.unmap()
            return self.fill(records, count)
        ring = self.rings[0]
        taken = records.take(max(1, min(count, (ring.payload_bytes - columns_end(0)) // PER_PACKET_BYTES)))
        if taken is None:
            return False
        meta, wirelen, used, at = taken
        target, off = self._reserve()
        assert off is not None, "fill is for replays, which wait for room"
        ring = self.rings[target]
        ring.publish(write_columns(ring.buf, off, self.seq, records.linktype, meta, wirelen, at, used, self.generation,
                                   records.source))
        self._sent(target, wirelen)
        return True

    def done_with(self, records: Records) -> None:
        """A replayed file read to its end (or given up): closed at once, or, mapped, once the
        workers have consumed every slot that may point into it."""
        if records.mapped:
            self._held.append((records, self._marks()))
        else:
            records.close()
        self._release_files(wait=False)

    def _release_files(self, wait: bool) -> None:
        keep = []
        for records, marks in self._held:
            if wait:
                self._await(marks)
            if self._consumed(marks):
                records.close()
            else:
                keep.append((records, marks))
        self._held = keep

    def close_files(self) -> None:
        """Every file still held, closed whatever the workers still do (the sensor is ending)."""
        for records, _ in self._held:
            records.close()
        self._held = []

    def _marks(self) -> list[int]:
        return [ring.published() for ring in self.rings]

    def _consumed(self, marks: list[int]) -> bool:
        return all(ring.consumed() >= mark for ring, mark in zip(self.rings, marks, strict=True))

    def _await(self, marks: list[int]) -> None:
        """Until every ring's consumer has released the slots published by `marks`."""
        while not self._consumed(marks):
            self.idle()
            time.sleep(AWAIT_POLL)

    def _reserve(self) -> tuple[int, int | None]:
        """The ring to write to and its reserved slot; the slot is None when every ring is full in
        live capture (the batch is dropped). Reading files, it waits for the least loaded ring."""
        order = self._order()
        for w in order:
            off = self.rings[w].reserve(block=False)
            if off is not None:
                return w, off
        first = order[0]
        if self.live:
            return first, None
        off = self.rings[first].reserve(True, self.poll)
        while off is None:
            self.idle()
            off = self.rings[first].reserve(True, self.poll)
        return first, off

    def _sent(self, target: int, wirelen: np.ndarray) -> None:
        self.seq += 1
        self._behind.discard(target)
        self._in_slots[target].append(len(wirelen))
        self._queued[target] += len(wirelen)
        self._count(wirelen)

    def _order(self) -> list[int]:
        """Rings by packets queued, then round-robin from the last choice."""
        n = len(self.rings)
        start = self._next
        self._next = (start + 1) % n
        if n == 1:
            return [0]
        for w, ring in enumerate(self.rings):
            consumed, slots = ring.consumed(), self._in_slots[w]
            while self._released[w] < consumed and slots:
                self._queued[w] -= slots.popleft()
                self._released[w] += 1
        return sorted(range(n), key=lambda w: (self._queued[w], (w - start) % n))

    def _count(self, wirelen: np.ndarray) -> None:
        self.packets += len(wirelen)
        self.bytes += int(wirelen.sum(dtype=np.uint64))
        self.batches += 1
        self.publish()

    def finish(self) -> None:
        """End-of-input marker to every worker (once, even if interrupted half-way); the totals
        are published first, so the aggregator's final status has them."""
        self.publish()
        for ring in self.rings[self._eof_sent :]:
            ring.put_eof(self.poll, self.idle)
            self._eof_sent += 1
        self._release_files(wait=True)
        self.finished = True


def replay(dispatcher: Dispatcher, paths: Iterable[Path], max_packets: int, first_packets: int,
           after_batch: Callable[[], None]) -> None:
    """Capture files as fast as the workers take them: mapped by the workers where the capture can
    lease the file, else read straight into the ring slots (`Dispatcher.fill`: pcapng, and classic
    pcap with big enough records), anything else sent in batches. The first slot holds at most
    `first_packets` (0: no limit), so the workers start sooner."""
    first = first_packets
    for path in paths:
        records = open_records(path, map_file=True)
        if records is None:
            _send(dispatcher, read_batches(path, max_packets, first, dispatcher.read_bytes), after_batch)
        else:
            try:
                while dispatcher.fill(records, first or max_packets):
                    first = 0
                    after_batch()
            finally:
                dispatcher.done_with(records)
            if records.handed_over:  # pcapng blocks that libpcap alone may judge: it reads on from there
                try:
                    _send(dispatcher, read_batches(path, max_packets, 0, dispatcher.read_bytes, records.delivered),
                          after_batch)
                except CaptureError as exc:  # truncated or replaced since (a writer broke the lease)
                    log.warning("%s (rest of the file ignored)", exc)
        first = 0


def _send(dispatcher: Dispatcher, batches: Iterable[Batch], after_batch: Callable[[], None]) -> None:
    for batch in batches:
        dispatcher.send(batch.linktype, batch.meta, batch.wirelen, batch.data)
        after_batch()


class _Cursor:
    """Packets of a batch stream taken in any count, joined across batch boundaries (never
    across a change of link type)."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches = iter(batches)
        self._current: Batch | None = None
        self._pos = 0

    def take(self, count: int) -> Batch | None:
        parts: list[tuple[Batch, int, int]] = []
        while count > 0:
            if self._current is None or self._pos >= len(self._current):
                self._current, self._pos = next(self._batches, None), 0
                if self._current is None:
                    break
                continue
            if parts and self._current.linktype != parts[0][0].linktype:
                break
            stop = min(len(self._current), self._pos + count)
            parts.append((self._current, self._pos, stop))
            count -= stop - self._pos
            self._pos = stop
        if not parts:
            return None
        if len(parts) == 1:
            batch, start, stop = parts[0]
            return Batch(batch.linktype, batch.meta[start:stop], batch.wirelen[start:stop], batch.data)
        return _join(parts)


def _join(parts: list[tuple[Batch, int, int]]) -> Batch:
    """One batch from row ranges of several (one copy of their packet bytes)."""
    metas, wires, chunks, size = [], [], [], 0
    for batch, start, stop in parts:
        meta = batch.meta[start:stop].copy()
        first, last = int(meta[0, 2]), int(meta[-1, 2]) + int(meta[-1, 3])
        meta[:, 2] -= np.uint32(first)
        meta[:, 2] += np.uint32(size)
        metas.append(meta)
        wires.append(batch.wirelen[start:stop])
        chunks.append(memoryview(batch.data)[first:last])
        size += last - first
    return Batch(parts[0][0].linktype, np.concatenate(metas), np.concatenate(wires), b"".join(chunks))


def paced(batches: Iterable[Batch], rate: float, max_packets: int) -> Iterator[Batch]:
    """Packets released at `rate` per second, as a live link hands them over: at every tick, the
    packets due since the previous one, in batches of at most `max_packets`. A tick lasts what a
    full batch takes at this rate, within [1 ms, 100 ms] (libpcap's read timeout)."""
    tick = min(MAX_TICK, max(MIN_TICK, max_packets / rate))
    cursor = _Cursor(batches)
    start = time.monotonic()
    next_tick = start + tick
    sent = 0
    while True:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        now = time.monotonic()
        next_tick = max(next_tick + tick, now)
        budget = int((now - start) * rate) - sent
        while budget > 0:
            batch = cursor.take(min(budget, max_packets))
            if batch is None:
                return
            yield batch
            sent += len(batch)
            budget -= len(batch)
