"""The matcher worker process: packet batches in from its ring, results out to the aggregator.

A worker maps the trail index read-only and parses each batch in place in the ring slot (or in its
map of the replayed file the slot points into, `shm.filemap`). A batch carrying a newer index
generation (a reload) makes it switch between two batches: map the new index, build the matchers
over it, unmap the old one, and report the generation it now uses. It
exits when the capture sends end-of-input, and on its own when its parent disappears, so a killed
sensor never leaves workers (or their shared memory) behind.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Semaphore
from operator import itemgetter

import numpy as np

from engine.index.generations import GenerationSpec, GenerationUser
from engine.index.mapped import TrailIndex
from engine.proctree import pid_alive
from shm.filemap import FileWindows
from shm.packets import read_batch
from shm.ring import FLAG_EOF, Ring, RingSpec
from workers.batch import SUPPORTED_LINKTYPES, Parsed, parse_batch
from workers.match import IpMatcher
from workers.observe import probe_items, tick_items
from workers.payload import DetectionSettings, Item, PayloadInspector

POLL_SECONDS = 0.25

COUNTER_NAMES = ("packets", "bytes", "malformed", "non_ip", "ipv4", "ipv6", "unsupported_link", "busy_ns")


class ParentGone(SystemExit):
    """The sensor that started this process is gone: stop quietly."""


def batch_counters(parsed_version: np.ndarray, malformed: np.ndarray, wirelen: np.ndarray) -> dict[str, int]:
    ipv4 = int(np.count_nonzero(parsed_version == 4))
    ipv6 = int(np.count_nonzero(parsed_version == 6))
    bad = int(np.count_nonzero(malformed))
    return {
        "packets": len(wirelen),
        "bytes": int(wirelen.sum(dtype=np.uint64)),
        "malformed": bad,
        "non_ip": int(np.count_nonzero((parsed_version == 0) & ~malformed)),
        "ipv4": ipv4,
        "ipv6": ipv6,
    }


def _check_parent(parent_pid: int) -> None:
    if not pid_alive(parent_pid):  # workers are forked by a fork server: the sensor is not their parent
        raise ParentGone(3)


def batch_items(parsed: Parsed, data: np.ndarray, matcher: IpMatcher, inspector: PayloadInspector) -> list[Item]:
    """Everything the aggregator needs from a batch, in capture order (a row's tick first)."""
    items: list[Item] = tick_items(parsed)  # first: the sort is stable, so a row's tick stays ahead
    items += [(row, "event", (ev,)) for row, ev in matcher.events(parsed)]
    items += inspector.inspect(parsed, data, inspector.rows(parsed))
    items += probe_items(parsed)
    items.sort(key=itemgetter(0))
    return items


@dataclass
class Detection:
    """One index generation and the matchers built over it (their caches belong to that index)."""

    generation: int
    index: TrailIndex
    matcher: IpMatcher
    inspector: PayloadInspector

    @classmethod
    def open(cls, user: GenerationUser, generation: int, settings: DetectionSettings) -> Detection:
        index = user.open(generation)
        inspector = PayloadInspector(index, settings)
        inspector.warm()
        return cls(generation, index, IpMatcher(index), inspector)

    def close(self) -> None:
        index = self.index
        del self.matcher, self.inspector, self.index
        index.close()


def run_worker(worker_id: int, generations: GenerationSpec, in_spec: RingSpec, out_spec: RingSpec,
               parent_pid: int, ready: Semaphore, settings: DetectionSettings) -> None:
    user = GenerationUser(generations, f"worker{worker_id}")
    detection = Detection.open(user, 1, settings)
    user.report(1)
    ring_in, ring_out = Ring(in_spec), Ring(out_spec)
    files = FileWindows()
    ready.release()
    try:
        while True:
            slot = ring_in.wait(POLL_SECONDS)
            if slot is None:
                _check_parent(parent_pid)
                continue
            off, _, flags = slot
            if flags & FLAG_EOF:
                ring_in.release()
                ring_out.put_eof(POLL_SECONDS, lambda: _check_parent(parent_pid))
                return
            started, cpu = time.perf_counter_ns(), time.process_time_ns()
            batch = read_batch(ring_in.buf, off, files)
            seq, generation = batch.seq, batch.generation
            if generation != detection.generation:  # a reload: between two batches, never within one
                new = Detection.open(user, generation, settings)
                detection.close()
                detection = new
                user.report(generation)
            if not len(batch):  # carries only the generation
                items: list[Item] = []
                counters = {"packets": 0}
            elif batch.linktype in SUPPORTED_LINKTYPES:
                parsed = parse_batch(batch.meta, batch.data, batch.linktype)
                items = batch_items(parsed, batch.data, detection.matcher, detection.inspector)
                counters = batch_counters(parsed.version, parsed.malformed, batch.wirelen)
                del parsed
            else:
                items = []
                counters = {"packets": len(batch), "bytes": int(batch.wirelen.sum(dtype=np.uint64)),
                            "unsupported_link": len(batch)}
            del batch
            ring_in.release()
            counters["busy_ns"] = time.perf_counter_ns() - started
            counters["cpu_ns"] = time.process_time_ns() - cpu
            message = pickle.dumps((seq, worker_id, generation, counters, items), protocol=5)
            ring_out.put(message, POLL_SECONDS, lambda: _check_parent(parent_pid))
    finally:
        files.close()
        ring_in.close()
        ring_out.close()
        user.close()
