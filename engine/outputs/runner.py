"""Each output in its own thread behind a bounded queue, fed by the aggregator.

The aggregator only ever does a non-blocking put: a slow or dead receiver fills that output's
queue, and the events past the bound are counted as dropped for that output alone. Nothing an
output does can stall the pipeline or the daily log. At the end of a run each output gets
`drain_seconds` to empty its queue; what is still queued then is counted as dropped too.

Queues hold (epoch seconds, log line) pairs as handed over (handoff.py): an event is parsed and
encoded by the sending thread, only once its receiver has accepted a connection, so a dead
receiver costs a count per batch, neither a parse nor an encoding per event.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from engine.eventlog import Event
from engine.outputs.formats import cef_message, ecs_line, maltrail_datagram, syslog_frame, webhook_body
from engine.outputs.handoff import Batch, parse_events
from engine.outputs.spec import OutputSpec
from engine.outputs.transports import PermanentError, Transport, transport_for
from engine.severity import LEVELS, LOW, Severity

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
BATCH_MAX = 256  # events joined into one write on a stream or a file (one datagram each on UDP and HTTP)
THROTTLE_KEYS_MAX = 100_000

Item = tuple[int, bytes]  # (epoch seconds, log line without its newline)
Encoder = Callable[[Sequence[Item]], list[bytes]]


def encoder(spec: OutputSpec, sensor: str, severity: Severity) -> Encoder:
    """The bytes each queued event becomes on this output."""
    if spec.type == "maltrail":  # Maltrail's datagram is `<sec> <log line>`: nothing to parse
        return lambda items: [maltrail_datagram(sec, line) for sec, line in items]
    if spec.type == "syslog":
        hostname = spec.hostname or socket.gethostname()
        octets = spec.protocol != "udp"

        def one(ev: Event, level: int, line: bytes) -> bytes:
            return syslog_frame(cef_message(ev, sensor, level), ev, level, spec.facility, hostname, octets)
    elif spec.type == "json":
        def one(ev: Event, level: int, line: bytes) -> bytes:
            return ecs_line(ev, sensor, level, line.decode("utf-8", "surrogateescape"))
    else:
        def one(ev: Event, level: int, line: bytes) -> bytes:
            return webhook_body(ev, sensor, level, spec.template)

    def encode(items: Sequence[Item]) -> list[bytes]:
        of = severity.of
        return [one(ev, of(ev[7], ev[8], ev[9], ev[10]), line)
                for ev, (_, line) in zip(parse_events(items), items, strict=True)]
    return encode


class WindowThrottle:
    """One event per (source, trail) within `seconds` of event time; the rest are counted."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._last: dict[tuple[str, str], int] = {}

    def admit(self, event: Event) -> bool:
        if not self.seconds:
            return True
        key = (event[2], event[8])
        last = self._last.get(key)
        if last is not None and event[0] - last < self.seconds:
            return False
        if len(self._last) >= THROTTLE_KEYS_MAX:
            self._last = {k: t for k, t in self._last.items() if event[0] - t < self.seconds}
        self._last[key] = event[0]
        return True


class OutputWorker:
    """One output: `offer_batch` (outputs process's main thread, never blocks) and the sending thread."""

    def __init__(self, spec: OutputSpec, sensor: str, severity: Severity) -> None:
        self.spec = spec
        self.encode = encoder(spec, sensor, severity)
        self.severity = severity
        self.min_level = LEVELS[spec.min_severity]
        self.throttle = WindowThrottle(spec.throttle_seconds if spec.type == "webhook" else 0)
        # A deque: append and popleft are atomic, so the offering side pays a length check and an
        # extend per batch, no lock (a full queue is the common case while a receiver is down).
        self.queue: deque[Item] = deque()
        self._wake = threading.Event()
        # offer side
        self.filtered = self.throttled = self.dropped_full = 0
        # sending side
        self.sent = self.failed = self.retries = self.abandoned = 0
        self.retrying = False
        self._failures = 0  # consecutive failed deliveries
        self.last_error = ""
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._transport: Transport | None = None
        self.batching = spec.type != "webhook" and (bool(spec.path) or spec.protocol != "udp")
        self._thread = threading.Thread(target=self._run, name=f"output-{spec.name}", daemon=True)
        self._thread.start()

    def offer_batch(self, batch: Batch) -> None:
        """Queue what fits and count the rest. Without a severity floor or a throttle nothing is
        parsed here: a full queue costs one subtraction for the whole batch."""
        if self.min_level > LOW or self.throttle.seconds:
            self._offer_each(batch)
            return
        room = max(0, self.spec.queue_size - len(self.queue))
        if room < len(batch):
            self.dropped_full += len(batch) - room
        if room:
            self.queue.extend(zip(batch.secs[:room], batch.lines[:room], strict=True))
            self._wake.set()

    def _offer_each(self, batch: Batch) -> None:
        of = self.severity.of
        queued = False
        for ev, item in zip(batch.events, zip(batch.secs, batch.lines, strict=True), strict=True):
            if of(ev[7], ev[8], ev[9], ev[10]) < self.min_level:
                self.filtered += 1
            elif not self.throttle.admit(ev):
                self.throttled += 1
            elif len(self.queue) >= self.spec.queue_size:
                self.dropped_full += 1
            else:
                self.queue.append(item)
                queued = True
        if queued:
            self._wake.set()

    def _take(self, most: int) -> list[tuple[Event, int]]:
        items = []
        pop = self.queue.popleft
        while len(items) < most:
            try:
                items.append(pop())
            except IndexError:
                break
        return items

    def _run(self) -> None:
        self._transport = transport = transport_for(self.spec)
        try:
            while not self._abort.is_set():
                items = self._take(BATCH_MAX if self.batching else 1)
                if items:
                    self._deliver(transport, items)
                    continue
                self.sent += transport.settle()
                if self._closing.is_set():
                    if not transport.unconfirmed():
                        return
                    self._abort.wait(0.02)  # the receiver's acknowledgements, until the deadline
                    continue
                self._wake.clear()
                if not self.queue:  # an offer between the take and the clear set it again
                    self._wake.wait(0.05)
        finally:
            transport.close()
            self.sent += transport.settle()  # acknowledged before the end

    def _deliver(self, transport: Any, items: list[Item]) -> None:
        """Send `items`, retrying with back-off; counted as sent or failed. They are encoded once
        the transport is open (a refused connection costs no encoding). After a failure the next
        delivery waits too (growing up to BACKOFF_MAX, reset by a success), so a dead receiver
        costs a few attempts a second, not a CPU spinning on refused connections."""
        if self._failures:
            self._abort.wait(min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX))
        data = b""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                self.retries += 1
                self.retrying = True
                if self._abort.wait(min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX)):
                    break
            try:
                transport.open()
                data = data or b"".join(self.encode(items))
                self.sent += transport.send(data, len(items))
            except PermanentError as exc:
                self.last_error = str(exc)
                break
            except OSError as exc:
                self.last_error = str(exc) or type(exc).__name__
                continue
            self.retrying = False
            self._failures = 0
            return
        self.failed += len(items)
        self._failures += 1
        self.retrying = not self._abort.is_set()

    def begin_close(self) -> None:
        """The thread stops once the queue is empty."""
        self._closing.set()
        self._wake.set()

    def close(self, deadline: float) -> None:
        """Let the thread empty the queue until `deadline` (monotonic), then stop it."""
        self.begin_close()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        self._thread.join()
        self.abandoned += len(self.queue)
        self.retrying = False

    def stats(self) -> dict[str, Any]:
        """`sent`: delivered (the receiver acknowledged it, on TCP and TLS: transports.py);
        `unacknowledged`: written on a connection that ended first; `in_flight`: written, not yet known."""
        transport = self._transport
        lost, in_flight = (transport.lost, transport.unconfirmed()) if transport is not None else (0, 0)
        dropped = self.dropped_full + self.failed + self.abandoned + lost
        return {"name": self.spec.name, "type": self.spec.type, "target": self.spec.target, "sent": self.sent,
                "dropped": dropped, "dropped_queue_full": self.dropped_full, "failed": self.failed,
                "abandoned_at_exit": self.abandoned, "unacknowledged": lost, "in_flight": in_flight,
                "retrying": self.retrying, "retries": self.retries,
                "queued": len(self.queue), "queue_size": self.spec.queue_size, "filtered": self.filtered,
                "throttled": self.throttled, "last_error": self.last_error}


class Outputs:
    """Every configured output; each batch the aggregator hands over goes to `submit`."""

    def __init__(self, specs: Sequence[OutputSpec], sensor: str, severity_rules: list[dict[str, str]]) -> None:
        severity = Severity(severity_rules)
        self.workers = [OutputWorker(spec, sensor, severity) for spec in specs]

    def submit(self, batch: Batch) -> None:
        for w in self.workers:
            w.offer_batch(batch)

    def stats(self) -> list[dict[str, Any]]:
        return [w.stats() for w in self.workers]

    def close(self) -> None:
        """Drain every output in parallel, each within its own `drain_seconds`."""
        start = time.monotonic()
        for w in self.workers:
            w.begin_close()
        for w in self.workers:
            w.close(start + w.spec.drain_seconds)
