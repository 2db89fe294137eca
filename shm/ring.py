"""Single-producer / single-consumer ring of fixed-size slots in one shared-memory segment.

Fixed slots make wrap-around trivial and let the consumer read a slot in place (numpy views, no
copy). Two counting semaphores carry the slot hand-over: `filled` (slots ready for the consumer)
and `free` (slots the producer may write). Their post/wait are full memory barriers, so a slot's
bytes are visible before the consumer sees it, on any CPU. The producer either waits for a free
slot (files: back-pressure) or gives up at once and counts the drop (live capture: never block).
A consumer of several rings (the aggregator, of every worker's results) can wait on one
`doorbell` semaphore that they share, rung once per whole message, instead of polling them: an
idle sensor's aggregator sleeps until a message lands.

Header (u64 words): 0 published slots, 1 dropped packets, 2 dropped batches, 3 peak occupancy,
8 consumed slots (its own cache line: only the consumer writes it).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Semaphore

import numpy as np

from shm.segments import SegmentOwner, attach, close_quietly

HEADER_BYTES = 128
SLOT_HEADER = 16  # u64 payload length, u64 flags
FLAG_EOF = 1  # the producer has finished; no payload
FLAG_MORE = 2  # the message continues in the next slot

_PUBLISHED, _DROP_PKTS, _DROP_BATCHES, _PEAK, _CONSUMED = 0, 1, 2, 3, 8


@dataclass
class RingSpec:
    """Everything a child process needs to attach (picklable at process start)."""

    name: str
    slots: int
    slot_bytes: int
    filled: Semaphore
    free: Semaphore
    doorbell: Semaphore | None = None  # shared with the other rings its consumer reads


def create_doorbell() -> Semaphore:
    """A doorbell for rings read by one consumer (`create_ring`)."""
    return multiprocessing.get_context("spawn").Semaphore(0)


def create_ring(owner: SegmentOwner, role: str, slots: int, slot_bytes: int,
                doorbell: Semaphore | None = None) -> RingSpec:
    slot_bytes = (slot_bytes + 63) // 64 * 64
    seg = owner.create(role, HEADER_BYTES + slots * slot_bytes)
    np.ndarray((HEADER_BYTES // 8,), dtype=np.uint64, buffer=seg.buf)[:] = 0
    ctx = multiprocessing.get_context("spawn")
    return RingSpec(seg.name, slots, slot_bytes, ctx.Semaphore(0), ctx.Semaphore(slots), doorbell)


class Ring:
    """One end (or both, in tests) of a ring."""

    def __init__(self, spec: RingSpec) -> None:
        self.spec = spec
        self._seg = attach(spec.name)
        self.buf = self._seg.buf
        self._hdr = np.ndarray((HEADER_BYTES // 8,), dtype=np.uint64, buffer=self.buf)
        self.payload_bytes = spec.slot_bytes - SLOT_HEADER
        self._head = 0  # consumer position
        self._tail = 0  # producer position
        self._slot_hdr = [
            np.ndarray((2,), dtype=np.uint64, buffer=self.buf, offset=HEADER_BYTES + i * spec.slot_bytes)
            for i in range(spec.slots)
        ]

    def close(self) -> None:
        self._slot_hdr.clear()
        self._hdr = None  # type: ignore[assignment]
        self.buf = None  # type: ignore[assignment]
        close_quietly(self._seg)

    def slot_offset(self, i: int) -> int:
        """Byte offset of slot i's payload in `buf`."""
        return HEADER_BYTES + i * self.spec.slot_bytes + SLOT_HEADER

    # ---- producer ------------------------------------------------------------------------
    def reserve(self, block: bool = True, timeout: float | None = None) -> int | None:
        """Wait for a free slot and return the byte offset of its payload (None: none free)."""
        if not self.spec.free.acquire(block, timeout if block else None):
            return None
        return self.slot_offset(self._tail)

    def cancel(self) -> None:
        """Give back a slot reserved and not published."""
        self.spec.free.release()

    def publish(self, nbytes: int, flags: int = 0) -> None:
        hdr = self._slot_hdr[self._tail]
        hdr[0] = nbytes
        hdr[1] = flags
        self._tail = (self._tail + 1) % self.spec.slots
        published = int(self._hdr[_PUBLISHED]) + 1
        self._hdr[_PUBLISHED] = published
        occupancy = published - int(self._hdr[_CONSUMED])
        if occupancy > int(self._hdr[_PEAK]):
            self._hdr[_PEAK] = occupancy
        self.spec.filled.release()
        if self.spec.doorbell is not None and not flags & FLAG_MORE:  # a whole message is there
            self.spec.doorbell.release()

    def count_drop(self, packets: int) -> None:
        self._hdr[_DROP_PKTS] += packets
        self._hdr[_DROP_BATCHES] += 1

    def put(self, data: bytes | memoryview, poll: float = 0.25, idle: Callable[[], None] | None = None) -> None:
        """Send one message of any size over as many slots as it needs, waiting for space.

        `idle` runs every `poll` seconds while waiting (it may raise to give up)."""
        view = memoryview(data)
        pos = 0
        while True:
            off = self.reserve(True, poll)
            if off is None:
                if idle is not None:
                    idle()
                continue
            chunk = view[pos : pos + self.payload_bytes]
            self.buf[off : off + len(chunk)] = chunk
            pos += len(chunk)
            more = pos < len(view)
            self.publish(len(chunk), FLAG_MORE if more else 0)
            if not more:
                return

    def put_eof(self, poll: float = 0.25, idle: Callable[[], None] | None = None) -> None:
        while self.reserve(True, poll) is None:
            if idle is not None:
                idle()
        self.publish(0, FLAG_EOF)

    # ---- consumer ------------------------------------------------------------------------
    def wait(self, timeout: float | None) -> tuple[int, int, int] | None:
        """Next filled slot as (payload offset, length, flags), or None on timeout."""
        if not self.spec.filled.acquire(True, timeout):
            return None
        hdr = self._slot_hdr[self._head]
        return self.slot_offset(self._head), int(hdr[0]), int(hdr[1])

    def release(self) -> None:
        self._head = (self._head + 1) % self.spec.slots
        self._hdr[_CONSUMED] = int(self._hdr[_CONSUMED]) + 1
        self.spec.free.release()

    def get(self, timeout: float | None) -> bytes | None:
        """Next whole message (b"" for EOF), or None on timeout before its first slot."""
        parts: list[bytes] = []
        while True:
            slot = self.wait(timeout if not parts else None)
            if slot is None:
                return None
            off, n, flags = slot
            parts.append(bytes(self.buf[off : off + n]))
            self.release()
            if flags & FLAG_EOF:
                return b""
            if not flags & FLAG_MORE:
                return b"".join(parts)

    # ---- statistics ----------------------------------------------------------------------
    def consumed(self) -> int:
        """Slots the consumer has released so far."""
        return int(self._hdr[_CONSUMED])

    def published(self) -> int:
        """Slots the producer has published so far."""
        return int(self._hdr[_PUBLISHED])

    def stats(self) -> dict[str, int]:
        published = int(self._hdr[_PUBLISHED])
        consumed = int(self._hdr[_CONSUMED])
        return {
            "occupancy": published - consumed,
            "peak_occupancy": int(self._hdr[_PEAK]),
            "dropped_packets": int(self._hdr[_DROP_PKTS]),
            "dropped_batches": int(self._hdr[_DROP_BATCHES]),
            "published": published,
            "slots": self.spec.slots,
        }


class RingSet:
    """The consumer of several rings sharing one doorbell (`create_ring`): the aggregator's way of
    reading every worker's results. A pass takes the next message of each ring that has one, and
    one ring of the bell per message; only after a pass that found nothing does the consumer wait
    on the bell. A message published after its ring was passed rings after that pass, so the
    wait never sleeps through it."""

    def __init__(self, rings: list[Ring]) -> None:
        bell = rings[0].spec.doorbell if rings else None
        if bell is None or any(r.spec.doorbell is not bell for r in rings):
            raise ValueError("the rings do not share a doorbell")
        self.rings = rings
        self.open = set(range(len(rings)))  # rings whose end of input has not come yet
        self._bell = bell

    def next_messages(self) -> list[bytes]:
        """One pass: the next whole message of each open ring that has one (a ring's end of input
        closes it and is not returned). Empty: then `wait`."""
        out: list[bytes] = []
        for w in sorted(self.open):
            msg = self.rings[w].get(0)
            if msg is None:
                continue
            self._bell.acquire(False)  # this message's ring: the bell counts what is still unread
            if msg == b"":
                self.open.discard(w)
            else:
                out.append(msg)
        return out

    def wait(self, timeout: float) -> bool:
        """Until a message may have landed (True), at most `timeout` seconds (False); at once when
        every ring has ended (nothing more can land: the end of a replay must not wait)."""
        return bool(self.open) and self._bell.acquire(True, timeout)
