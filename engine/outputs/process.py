"""The outputs process, and the aggregator's non-blocking feed into it.

Encoding (CEF, ECS, community IDs, JSON) and sending run in their own process, so their CPU time
and their threads never take the aggregator's interpreter lock: measured in the same process, four
outputs held a replay to 12 % of its packets/s (bench/bench_outputs.py). The aggregator pickles
each batch's logged events into a shared-memory ring without waiting; a full ring (the outputs
process starved of CPU) drops that batch for every output and counts it. Inside, each output keeps
its own bounded queue (runner.py), so one dead receiver costs only its own events. Counters come
back to the aggregator over a pipe, every second and once more, final, after the drain. The
process runs at a lower CPU priority: on a saturated machine forwarding yields to detection.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

from engine.eventlog import Event
from engine.outputs.runner import Outputs
from engine.outputs.spec import EventSettings
from engine.proctree import pid_alive
from shm.ring import FLAG_EOF, Ring, RingSpec

STATS_SECONDS = 1.0
PENDING_MAX = 50_000  # events waiting on the aggregator's side for a free slot, then counted as dropped
CHUNK_EVENTS = 1024  # events per slot message (fewer if they do not fit)
NICENESS = 10  # below the capture, the workers and the aggregator: detection and the log come first


def run_outputs(feed: RingSpec, settings: EventSettings, sensor: str, stats: Connection, parent_pid: int,
                ready: Semaphore) -> None:
    """Until the aggregator's end-of-feed: submit each batch to every output; then drain them."""
    os.nice(NICENESS)
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
                outputs.submit(pickle.loads(msg))
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
    """Aggregator side: `submit` never waits. Events the ring has no slot for wait here (up to
    PENDING_MAX, then they are dropped and counted) and go with the next batch or status tick;
    `stats` are the outputs process's latest counters plus what this side dropped."""

    def __init__(self, settings: EventSettings) -> None:
        assert settings.feed is not None and settings.stats is not None
        self.ring = Ring(settings.feed)
        self.conn = settings.stats
        self.names = [s.name for s in settings.outputs]
        self.drain_seconds = max((s.drain_seconds for s in settings.outputs), default=0.0)
        self.pending: list[Event] = []
        self.backlog_dropped = 0
        self.latest: list[dict[str, Any]] = []
        self.closed = False

    def submit(self, events: Sequence[Event]) -> None:
        room = PENDING_MAX - len(self.pending)
        if len(events) > room:
            self.backlog_dropped += len(events) - max(0, room)
            events = events[:max(0, room)]
        self.pending.extend(events)
        self.flush()

    def flush(self, block: bool = False) -> None:
        """Hand pending events over, a slot's worth at a time, while slots are free (or, with
        `block`, waiting for them: at the end of the run)."""
        while self.pending:
            off = self.ring.reserve(block=block, timeout=0.2 if block else None)
            if off is None:
                return
            count = min(len(self.pending), CHUNK_EVENTS)
            while True:
                data = pickle.dumps(self.pending[:count], pickle.HIGHEST_PROTOCOL)
                if len(data) <= self.ring.payload_bytes or count == 1:
                    break
                count //= 2
            if len(data) > self.ring.payload_bytes:  # one event larger than a slot: never sendable
                self.backlog_dropped += 1
                data = pickle.dumps([], pickle.HIGHEST_PROTOCOL)
            self.ring.buf[off:off + len(data)] = data
            self.ring.publish(len(data))
            del self.pending[:count]

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
            self.backlog_dropped += len(self.pending)
            self.pending.clear()
            while self.ring.reserve(block=True, timeout=0.2) is None:
                if time.monotonic() > deadline:
                    return
            self.ring.publish(0, FLAG_EOF)
            while time.monotonic() < deadline:
                if self.conn.poll(0.1) and self._poll():
                    return
        finally:
            self.ring.close()
