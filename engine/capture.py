"""The capture side: packet batches from files or an interface into the worker rings.

A batch from pcapy-ng is copied once, column by column, into a free ring slot. Batches are
spread round-robin over the workers, skipping a full ring when another has room. Reading files,
a full pipeline makes the capture wait (back-pressure, nothing lost); capturing live it never
waits: the batch is dropped and counted on the ring it was meant for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shm.packets import batch_bytes, write_batch
from shm.ring import Ring

PER_PACKET_BYTES = 20  # meta row + wire length in the slot


class Dispatcher:
    """Assigns batch sequence numbers and writes batches into worker rings."""

    def __init__(self, rings: list[Ring], live: bool, idle: Callable[[], None], poll: float = 0.2) -> None:
        self.rings = rings
        self.live = live
        self.idle = idle
        self.poll = poll
        self.seq = 0
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.finished = False
        self._eof_sent = 0
        self._next = 0

    def send(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: bytes) -> None:
        """Send a batch, split into pieces that each fit one slot."""
        n = len(wirelen)
        self.packets += n
        self.bytes += int(wirelen.sum(dtype=np.uint64))
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

    def _put(self, linktype: int, meta: np.ndarray, wirelen: np.ndarray, data: memoryview) -> None:
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

    def finish(self) -> None:
        """End-of-input marker to every worker (once, even if interrupted half-way)."""
        for ring in self.rings[self._eof_sent :]:
            ring.put_eof(self.poll, self.idle)
            self._eof_sent += 1
        self.finished = True
