"""The capture side: packet batches from files or an interface into the worker rings.

A batch from pcapy-ng is copied once, column by column, into a free ring slot. Batches are
spread round-robin over the workers, skipping a full ring when another has room. Reading files,
a full pipeline makes the capture wait (back-pressure, nothing lost); capturing live it never
waits: the batch is dropped and counted on the ring it was meant for. `paced` turns a file into
a busy link (packets released at a fixed rate) for `maltrail bench --rate`.

What only the capture side knows (packets read, libpcap's kernel statistics) goes to a small
shared counters segment that the aggregator copies into the status file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from engine.pcapio import Batch
from shm.counters import SharedCounters
from shm.packets import batch_bytes, write_batch
from shm.ring import Ring

PER_PACKET_BYTES = 20  # meta row + wire length in the slot
CAPTURE_FIELDS = ("packets", "bytes", "batches", "ring_dropped", "live", "kernel_valid", "kernel_received",
                  "kernel_dropped", "kernel_ifdropped", "offered_pps")
MAX_TICK = 0.1  # libpcap's read timeout in live capture: the longest a packet waits to be handed over
MIN_TICK = 0.001


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
        self.batches = 0
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        if counters is not None:
            counters.set(live=int(live))
        self.finished = False
        self._eof_sent = 0
        self._next = 0

    def send(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: bytes) -> None:
        """Send a batch, split into pieces that each fit one slot."""
        n = len(wirelen)
        room = self.rings[0].payload_bytes - batch_bytes(0, 0) - 8
        start = 0
        while start < n:
            need = np.cumsum(meta[start:, 3].astype(np.int64) + PER_PACKET_BYTES)
            count = max(1, int(np.searchsorted(need, room, side="right")))
            stop = start + count
            base = int(meta[start, 2])
            end = int(meta[stop - 1, 2]) + int(meta[stop - 1, 3])
            piece = meta[start:stop].copy()
            piece[:, 2] -= base
            self._put(linktype, piece, wirelen[start:stop], memoryview(data)[base:end])
            start = stop
        self.batches += 1
        self.publish()

    def publish(self) -> None:
        """Totals so far to the shared counters (after every batch, and at the end)."""
        if self.counters is not None:
            self.counters.set(packets=self.packets, bytes=self.bytes, batches=self.batches, ring_dropped=self.dropped)

    def _put(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: memoryview) -> None:
        """One slot's worth, counted once it is published or dropped (an interrupt in between
        leaves the totals consistent)."""
        rings = self.rings
        first = self._next
        self._next = (first + 1) % len(rings)
        target, off = None, None
        for k in range(len(rings)):
            w = (first + k) % len(rings)
            off = rings[w].reserve(block=False)
            if off is not None:
                target = w
                break
        if target is None:
            if self.live:
                rings[first].count_drop(len(wirelen))
                self.dropped += len(wirelen)
                self._count(wirelen)
                return
            target = first
            off = rings[first].reserve(True, self.poll)
            while off is None:
                self.idle()
                off = rings[first].reserve(True, self.poll)
        ring = rings[target]
        used = write_batch(ring.buf, off, self.seq, linktype, meta, wirelen, data)
        ring.publish(used)
        self.seq += 1
        self._count(wirelen)

    def _count(self, wirelen: np.ndarray) -> None:
        self.packets += len(wirelen)
        self.bytes += int(wirelen.sum(dtype=np.uint64))

    def finish(self) -> None:
        """End-of-input marker to every worker (once, even if interrupted half-way); the totals
        are published first, so the aggregator's final status has them."""
        self.publish()
        for ring in self.rings[self._eof_sent :]:
            ring.put_eof(self.poll, self.idle)
            self._eof_sent += 1
        self.finished = True


def paced(batches: Iterable[Batch], rate: float, max_packets: int) -> Iterator[Batch]:
    """Packets released at `rate` per second, as a live link hands them over: at every tick, the
    packets due since the previous one, in batches of at most `max_packets`. A tick lasts what a
    full batch takes at this rate, within [1 ms, 100 ms] (libpcap's read timeout)."""
    tick = min(MAX_TICK, max(MIN_TICK, max_packets / rate))
    start = time.monotonic()
    next_tick = start + tick
    sent = budget = 0
    for batch in batches:
        pos, n = 0, len(batch)
        while pos < n:
            if budget <= 0:
                time.sleep(max(0.0, next_tick - time.monotonic()))
                now = time.monotonic()
                next_tick = max(next_tick + tick, now)
                budget = int((now - start) * rate) - sent
                continue
            stop = pos + min(budget, n - pos, max_packets)
            yield Batch(batch.linktype, batch.meta[pos:stop], batch.wirelen[pos:stop], batch.data)
            budget -= stop - pos
            sent += stop - pos
            pos = stop
