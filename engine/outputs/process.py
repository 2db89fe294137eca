"""The outputs process, and the aggregator's non-blocking feed into it.

Encoding (CEF, ECS, community IDs, JSON) and sending run in their own process, so their CPU time
and their threads never take the aggregator's interpreter lock: measured in the same process, four
outputs held a replay to 12 % of its packets/s (bench/bench_outputs.py). The aggregator copies
each batch's log lines, packed (handoff.py), into a shared-memory ring without waiting; records
that find no free slot wait on its side up to PENDING_MAX events, past which they are dropped
for every output and counted. Inside, each output keeps
its own bounded queue (runner.py), so one dead receiver costs only its own events. Counters come
back to the aggregator over a pipe, every second and once more, final, after the drain. The
process runs at a lower CPU priority: on a saturated machine forwarding yields to detection.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

from engine.outputs.handoff import batches, record
from engine.outputs.runner import Outputs
from engine.outputs.spec import EventSettings
from engine.proctree import pid_alive
from shm.ring import FLAG_EOF, Ring, RingSpec

STATS_SECONDS = 1.0
PENDING_MAX = 50_000  # events waiting on the aggregator's side for a free slot, then counted as dropped
NICENESS = 10  # below the capture, the workers and the aggregator: detection and the log come first


def run_outputs(feed: RingSpec, settings: EventSettings, sensor: str, stats: Connection, parent_pid: int,
                ready: Semaphore) -> None:
    """Until the aggregator's end-of-feed: submit each batch to every output; then drain them."""
    os.nice(NICENESS)
    csv.field_size_limit(max(csv.field_size_limit(), feed.slot_bytes))  # a line may fill a slot (handoff.py)
    ring = Ring(feed)
    outputs = Outputs(settings.outputs, sensor, list(settings.severity_rules))
    ready.release()
    last = time.monotonic()
    try:
        while True:
            msg = ring.get(0.2)
            if msg == b"":
                break
            if msg is not None:
                for batch in batches(msg):
                    outputs.submit(batch)
            elif not pid_alive(parent_pid):
                return
            if time.monotonic() - last >= STATS_SECONDS:
                last = time.monotonic()
                stats.send((False, outputs.stats()))
        outputs.close()
        stats.send((True, outputs.stats()))
    finally:
        ring.close()


class OutputFeed:
    """Aggregator side: `submit` never waits. Records the ring has no slot for wait here (up to
    PENDING_MAX events, then they are dropped and counted) and go, several to a slot, with the next
    batch or status tick; `stats` are the outputs process's latest counters plus what this side
    dropped."""

    def __init__(self, settings: EventSettings) -> None:
        assert settings.feed is not None and settings.stats is not None
        self.ring = Ring(settings.feed)
        self.conn = settings.stats
        self.names = [s.name for s in settings.outputs]
        self.drain_seconds = max((s.drain_seconds for s in settings.outputs), default=0.0)
        self.pending: deque[tuple[bytes, int]] = deque()  # (record, events in it)
        self.pending_events = 0
        self.backlog_dropped = 0
        self.latest: list[dict[str, Any]] = []
        self.closed = False

    def submit(self, secs: Sequence[int], lines: Sequence[str]) -> None:
        """One batch: each event's epoch seconds and log line (with its newline)."""
        room = PENDING_MAX - self.pending_events
        if len(secs) > room:
            self.backlog_dropped += len(secs) - max(0, room)
            secs, lines = secs[:max(0, room)], lines[:max(0, room)]
        self._queue(secs, lines)
        self.flush()

    def _queue(self, secs: Sequence[int], lines: Sequence[str]) -> None:
        """Pending records no larger than a slot: a batch too large is split; a single event too
        large for a slot can never be sent and is counted as dropped."""
        if not secs:
            return
        data = record(secs, lines)
        if len(data) <= self.ring.payload_bytes:
            self.pending.append((data, len(secs)))
            self.pending_events += len(secs)
        elif len(secs) == 1:
            self.backlog_dropped += 1
        else:
            half = len(secs) // 2
            self._queue(secs[:half], lines[:half])
            self._queue(secs[half:], lines[half:])

    def flush(self, block: bool = False) -> None:
        """Hand pending records over, as many as fit in each slot, while slots are free (or, with
        `block`, waiting for them: at the end of the run)."""
        while self.pending:
            off = self.ring.reserve(block=block, timeout=0.2 if block else None)
            if off is None:
                return
            used = 0
            while self.pending and used + len(self.pending[0][0]) <= self.ring.payload_bytes:
                data, count = self.pending.popleft()
                self.ring.buf[off + used:off + used + len(data)] = data
                used += len(data)
                self.pending_events -= count
            self.ring.publish(used)

    def _poll(self) -> bool:
        """Take every counter message waiting; True once the final one came."""
        final = False
        while self.conn.poll(0):
            final, self.latest = self.conn.recv()
        return final

    def stats(self) -> list[dict[str, Any]]:
        self._poll()
        out = []
        for i, name in enumerate(self.names):
            row = dict(self.latest[i]) if i < len(self.latest) else {"name": name, "type": "", "target": "",
                                                                     "sent": 0, "dropped": 0, "retrying": False}
            row["dropped_backlog"] = self.backlog_dropped
            row["dropped"] = row.get("dropped", 0) + self.backlog_dropped
            out.append(row)
        return out

    def close(self) -> None:
        """End of the feed; wait (the longest drain_seconds, and a margin) for the final counters."""
        if self.closed:
            return
        self.closed = True
        deadline = time.monotonic() + self.drain_seconds + 10.0
        try:
            while self.pending and time.monotonic() < deadline:
                self.flush(block=True)
            self.backlog_dropped += self.pending_events
            self.pending.clear()
            self.pending_events = 0
            while self.ring.reserve(block=True, timeout=0.2) is None:
                if time.monotonic() > deadline:
                    return
            self.ring.publish(0, FLAG_EOF)
            while time.monotonic() < deadline:
                if self.conn.poll(0.1) and self._poll():
                    return
        finally:
            self.ring.close()
