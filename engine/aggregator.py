"""The aggregator process: merges worker results in capture order and writes the events.

Workers finish batches in any order; the aggregator holds results until every earlier batch is
in, so the event stream (and everything stateful applied to it: throttle, later the heuristics)
is the same whatever the number of workers. It is the only writer of the daily log files, and
it publishes the live counters as a status file that `maltrail status` and the dashboard read.
It switches to a reloaded index (whitelist checks) at the first batch, in seq order, matched with
it, and reports the generation in use with the supervisor's reload figures.
"""

from __future__ import annotations

import heapq
import json
import os
import pickle
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from pathlib import Path
from typing import Any

from engine.eventlog import DailyLog, Event, format_event
from engine.heuristics import Heuristics, HeuristicSettings
from engine.index.generations import GenerationSpec, GenerationUser
from engine.index.mapped import TrailIndex
from engine.ipaddr import Addr
from engine.livestats import CaptureSource, CaptureStatus
from engine.outputs.process import OutputFeed
from engine.outputs.spec import EventSettings
from engine.proctree import pid_alive
from engine.quicstreams import QuicStreams
from engine.trails.ignore import IgnoreRules
from shm.ring import Ring, RingSet, RingSpec
from workers.observe import PROBES, TICK
from workers.payload import (
    OBS_DNS_QUERIES,
    OBS_DNS_QUERY,
    OBS_NXDOMAIN,
    OBS_QUIC,
    OBS_WEB,
    DetectionSettings,
    PayloadInspector,
)
from workers.queryobs import QueryColumns

STATUS_SECONDS = 1.0
PARENT_CHECK_SECONDS = 0.2  # how often an idle aggregator makes sure the sensor still runs
# While results keep coming, the aggregator polls its rings every POLL_SECONDS, as it always did
# (woken by each result instead, it tends to run on the core of the worker that has just rung: one
# set of 1-worker replays ran 30 % slower so, two others did not). QUIET_SECONDS without a result,
# it waits on their doorbell: a quiet link's aggregator sleeps.
POLL_SECONDS = 0.002
QUIET_SECONDS = 0.02


class Throttle:
    """Identical events (all fields but the microseconds) within one second collapse to one.

    The number collapsed is kept, per run and in total, so nothing is silently lost."""

    def __init__(self) -> None:
        self._sec = -1
        self._seen: dict[tuple[object, ...], int] = {}
        self.suppressed = 0

    def admit(self, event: Event) -> bool:
        if event[0] != self._sec:
            self._sec = event[0]
            self._seen.clear()
        key = event[2:]
        if key in self._seen:
            self._seen[key] += 1
            self.suppressed += 1
            return False
        self._seen[key] = 0
        return True


@dataclass
class EventPipeline:
    """ignore rules -> ignore regex -> IP whitelist (not for DNS-type events) -> throttle -> daily log
    (unless disabled) and outputs."""

    index: TrailIndex
    ignore: IgnoreRules
    log: DailyLog | None
    outputs: OutputFeed | None = None
    ignore_regex: re.Pattern[str] | None = None
    sensor: str = ""
    throttle: Throttle = field(default_factory=Throttle)
    written: int = 0
    ignored: int = 0
    ignored_regex: int = 0
    whitelisted: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    pending: list[Event] = field(default_factory=list)

    def process(self, events: Sequence[Event]) -> None:
        for ev in events:
            if self.ignore.matches(ev[2], ev[3], ev[4], ev[5]):
                self.ignored += 1
            elif self.ignore_regex is not None and self.ignore_regex.search(format_event(ev, self.sensor)):
                self.ignored_regex += 1
            elif ev[7] != "DNS" and (self.index.is_whitelisted_ip(ev[2]) or self.index.is_whitelisted_ip(ev[4])):
                self.whitelisted += 1
            elif self.throttle.admit(ev):
                self.pending.append(ev)

    def flush(self) -> None:
        """One write per batch and day; then the outputs' queues."""
        if self.pending:
            lines = [format_event(ev, self.sensor) for ev in self.pending]  # formatted once, for both
            self.written += self.log.write(self.pending, lines) if self.log is not None else len(self.pending)
            for ev in self.pending:
                self.by_type[ev[7]] = self.by_type.get(ev[7], 0) + 1
            if self.outputs is not None:
                self.outputs.submit([ev[0] for ev in self.pending], lines)
            self.pending.clear()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.outputs is not None:
            self.outputs.close()


class Counters:
    """Totals merged from every worker's per-batch counters."""

    def __init__(self, workers: int) -> None:
        self.totals: dict[str, int] = {}
        self.per_worker_packets = [0] * workers
        self.per_worker_busy_ns = [0] * workers
        self.per_worker_cpu_ns = [0] * workers

    def add(self, worker: int, counters: dict[str, int]) -> None:
        for k, v in counters.items():
            self.totals[k] = self.totals.get(k, 0) + v
        self.per_worker_packets[worker] += counters.get("packets", 0)
        self.per_worker_busy_ns[worker] += counters.get("busy_ns", 0)
        self.per_worker_cpu_ns[worker] += counters.get("cpu_ns", 0)


class SniCheck:
    """The workers' SNI -> event code over the aggregator's index, for the ClientHellos it
    reassembles; built on first use (most captures have none), again after a reload."""

    def __init__(self, index: TrailIndex, settings: DetectionSettings) -> None:
        self.index, self.settings = index, settings
        self._inspector: PayloadInspector | None = None

    def use_index(self, index: TrailIndex) -> None:
        self.index, self._inspector = index, None

    def __call__(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, sni: str) -> list[Event]:
        if self._inspector is None:
            self._inspector = PayloadInspector(self.index, self.settings)
        return self._inspector.sni_events(sec, usec, src, sport, dst, dport, sni)


class _QueryRun:
    """A batch's columnar DNS query observations (`OBS_DNS_QUERIES`), applied in capture order: the
    queries up to an item's row just before that item. A query's row may hold items before its
    observation (the row's tick, its address events, which carry no exhaustion domain) and after it
    (its own trail events, tagged with the domain: they must see the query counted)."""

    __slots__ = ("columns", "rows", "pos", "heuristics", "pipeline")

    def __init__(self, columns: QueryColumns, heuristics: Heuristics, pipeline: EventPipeline) -> None:
        self.columns, self.rows, self.pos = columns, columns.rows, 0
        self.heuristics, self.pipeline = heuristics, pipeline

    def until(self, row: int, kind: str, data: tuple) -> float:
        """Apply the queries that come before item (row, kind, data); returns the next one's row
        (infinity when none is left)."""
        after = kind == TICK or (kind == "event" and len(data) == 1)  # the items a query's row starts with
        rows = self.rows
        stop = (bisect_left if after else bisect_right)(rows, row, self.pos)
        return self._apply(stop)

    def finish(self) -> None:
        self._apply(len(self.rows))

    def _apply(self, stop: int) -> float:
        if stop > self.pos:
            found = self.heuristics.dns_queries(self.columns, self.pos, stop)
            if found:
                self.pipeline.process(found)
            self.pos = stop
        return self.rows[stop] if stop < len(self.rows) else _NONE_LEFT


_NONE_LEFT = float("inf")
_NO_QUERIES = QueryColumns((b"", "", None))


def apply_items(items: Sequence[tuple[int, str, tuple]], heuristics: Heuristics, pipeline: EventPipeline,
                quic: QuicStreams | None = None) -> None:
    """One batch's events and observations, in capture order, through the heuristics and the pipeline
    (QUIC CRYPTO chunks through `quic`, ignored without one). A columnar item of DNS queries is
    applied piecewise: each query before the first later item (`_QueryRun`)."""
    h = heuristics
    dns_query = h.dns_query
    run = _QueryRun(_NO_QUERIES, h, pipeline)
    next_query: float = _NONE_LEFT  # the row of the run's next query not yet applied
    for row, kind, data in items:  # the most frequent kinds first
        if row >= next_query:
            next_query = run.until(row, kind, data)
        if kind == OBS_DNS_QUERIES:
            run.finish()
            run = _QueryRun(QueryColumns(data), h, pipeline)
            next_query = run.rows[0]
        elif kind == OBS_DNS_QUERY:
            found = dns_query(*data)
            if found:
                pipeline.process(found)
        elif kind == PROBES:
            h.probes(*data)
        elif kind == "event":
            if len(data) == 1 or not h.suppressed(data[1]):
                pipeline.process(data[:1])
        elif kind == TICK:
            pipeline.process(h.tick(*data))
        elif kind == OBS_WEB:
            h.web_request(*data)
        elif kind == OBS_NXDOMAIN:
            pipeline.process(h.nxdomain(*data))
        elif kind == OBS_QUIC and quic is not None:
            pipeline.process(quic.add(*data))
    run.finish()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def index_fields(generation: int, index: TrailIndex, reloads: dict[str, Any]) -> dict[str, Any]:
    """The status file's `index`: the generation the events so far were matched with, and reloads."""
    return {"generation": generation, "built_at": index.meta.get("built_at"),
            "trails": int(index.meta.get("counts", {}).get("entries", 0)), **reloads}


def run_aggregator(
    generations: GenerationSpec,
    out_specs: list[RingSpec],
    in_specs: list[RingSpec],
    log_dir: str,
    sensor_name: str,
    ignore_files: list[str],
    status_path: str,
    parent_pid: int,
    conn: Connection,
    reload_notes: Connection,
    ready: Semaphore,
    heuristic_settings: HeuristicSettings,
    capture: CaptureSource,
    detection: DetectionSettings,
    event_settings: EventSettings,
) -> None:
    user = GenerationUser(generations, "aggregator")
    generation = 1
    user.report(generation)
    reloads: dict[str, Any] = {"reloads": 0, "reload_failures": 0, "last_reload_at": None, "last_reload_error": None}
    pipeline = EventPipeline(
        user.open(generation), IgnoreRules.from_files([Path(p) for p in ignore_files]),
        DailyLog(Path(log_dir), sensor_name) if event_settings.local_log else None,
        OutputFeed(event_settings) if event_settings.feed is not None else None,
        re.compile(event_settings.ignore_regex, re.IGNORECASE) if event_settings.ignore_regex else None, sensor_name)
    rings = [Ring(s) for s in out_specs]
    results = RingSet(rings)
    packet_rings = [Ring(s) for s in in_specs]  # read-only use: occupancy and drops
    counters = Counters(len(rings))
    capture_status = CaptureStatus(capture, len(rings))
    heuristics = Heuristics(heuristic_settings, pipeline.index.is_whitelisted_ip)
    sni_check = SniCheck(pipeline.index, detection)
    quic = QuicStreams(sni_check)
    ready.release()
    pending: list[tuple[int, int, int, dict[str, int], list[Event]]] = []
    next_seq = 0
    started = time.time()
    last_status = last_parent_check = last_result = 0.0

    def status(final: bool) -> dict[str, Any]:
        while reload_notes.poll(0):
            reloads.update(reload_notes.recv())
        now = time.time()
        return {
            "pid": os.getpid(),
            "sensor_pid": parent_pid,
            "sensor": sensor_name,
            "started": started,
            "updated": now,
            "final": final,
            "counters": dict(counters.totals),
            "per_worker_packets": counters.per_worker_packets,
            "per_worker_busy_seconds": [ns / 1e9 for ns in counters.per_worker_busy_ns],
            "per_worker_cpu_seconds": [ns / 1e9 for ns in counters.per_worker_cpu_ns],  # on batches, as each counts it
            "rings": [r.stats() for r in packet_rings],
            "events_written": pipeline.written,
            "events_suppressed": pipeline.throttle.suppressed,
            "events_ignored": pipeline.ignored,
            "events_ignored_regex": pipeline.ignored_regex,
            "events_by_type": dict(pipeline.by_type),
            "local_log": pipeline.log is not None,
            "outputs": pipeline.outputs.stats() if pipeline.outputs is not None else [],
            "events_whitelisted": pipeline.whitelisted,
            "index": index_fields(generation, pipeline.index, reloads),
            **capture_status.fields(counters.per_worker_packets, counters.per_worker_busy_ns),
        }

    try:
        while results.open or pending:
            got = results.next_messages()
            for msg in got:
                heapq.heappush(pending, pickle.loads(msg))
            while pending and pending[0][0] == next_seq:
                _, worker, batch_generation, batch_counters, items = heapq.heappop(pending)
                if batch_generation != generation:  # a reload, at this batch in capture order
                    old, generation = pipeline.index, batch_generation
                    pipeline.index = user.open(generation)
                    heuristics.use_whitelist(pipeline.index.is_whitelisted_ip)
                    sni_check.use_index(pipeline.index)
                    old.close()
                    del old
                    user.report(generation)
                counters.add(worker, batch_counters)
                apply_items(items, heuristics, pipeline, quic)
                pipeline.flush()
                next_seq += 1
            if not results.open and pending:
                # End of input with a gap: a batch never arrived (its worker died); keep order.
                next_seq = pending[0][0]
                continue
            now = time.monotonic()
            if got:
                last_result = now
            if now - last_status >= STATUS_SECONDS:
                last_status = now
                if pipeline.outputs is not None:
                    pipeline.outputs.flush()  # events that found no free slot at their batch
                _write_json(Path(status_path), status(False))
            if not got and results.open:
                if now - last_parent_check >= PARENT_CHECK_SECONDS:  # not at every poll: a /proc read each
                    last_parent_check = now
                    if not pid_alive(parent_pid):
                        return
                if now - last_result < QUIET_SECONDS:
                    time.sleep(POLL_SECONDS)
                else:
                    results.wait(PARENT_CHECK_SECONDS)
        pipeline.close()  # drains the outputs before the final counters
        final = status(True)
        _write_json(Path(status_path), final)
        conn.send(final)
    finally:
        pipeline.close()
        capture_status.close()
        for r in rings + packet_rings:
            r.close()
        user.close()
