"""The outputs' cost per event, piece by piece (issue 13): the aggregator's hand-off of a batch,
the outputs process taking a batch into four outputs whose receivers are dead, and the encoders.
The events are bench_outputs.py's (one source, distinct source ports), unpickled as the aggregator
gets them from a worker (distinct string objects).

    .venv/bin/pytest bench/bench_output_encoding.py --benchmark-enable -s
"""

from __future__ import annotations

import pickle
import socket
import time

import pytest

from engine.eventlog import Event, format_event
from engine.outputs.formats import cef_message, community_id, ecs_line, syslog_frame
from engine.outputs.handoff import batches, record
from engine.outputs.runner import Outputs
from engine.outputs.spec import output_specs
from engine.severity import HIGH

BATCH = 410  # events in one aggregator batch at bench_outputs.py's rate (4096 packets, 1 in 10 a hit)


def _events(count: int) -> list[Event]:
    return [pickle.loads(pickle.dumps((1_700_000_000 + i // 10_000, i % 1_000_000, "10.0.0.66", 1024 + i % 64_000,
                                       "66.66.66.66", 443, "TCP", "IP", "66.66.66.66", "malware (bench)", "(static)")))
            for i in range(count)]


def _dead_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_handoff_pack(benchmark) -> None:
    events = _events(BATCH)
    lines = [format_event(ev, "bench") for ev in events]
    benchmark(lambda: record([ev[0] for ev in events], lines))
    benchmark.extra_info["us_per_event"] = round(benchmark.stats.stats.median / BATCH * 1e6, 3)


def test_take_batches_into_dead_outputs(benchmark) -> None:
    """Four outputs (as bench_outputs.py) whose receivers are gone and whose queues are full."""
    port = _dead_port()
    address = f"127.0.0.1:{port}"
    outputs = Outputs(output_specs([
        {"type": "syslog", "address": address, "protocol": "tcp"},
        {"type": "json", "address": address, "protocol": "tcp"},
        {"type": "maltrail", "address": address},
        {"type": "webhook", "url": f"http://{address}/", "min_severity": "low", "throttle_seconds": 0},
    ]), "bench", [])
    events = _events(BATCH)
    message = record([ev[0] for ev in events], [format_event(ev, "bench") for ev in events])
    for _ in range(30):  # fill the queues (10,000 each)
        for batch in batches(message):
            outputs.submit(batch)
    time.sleep(0.2)

    def take() -> None:
        for batch in batches(message):
            outputs.submit(batch)

    try:
        benchmark(take)
    finally:
        outputs.close()
    benchmark.extra_info["us_per_event"] = round(benchmark.stats.stats.median / BATCH * 1e6, 3)
    assert all(o["dropped_queue_full"] > 0 for o in outputs.stats())


@pytest.mark.parametrize("encoding", ["ecs", "cef", "community_id"])
def test_encode_one_event(benchmark, encoding: str) -> None:
    ev = _events(1)[0]
    line = format_event(ev, "bench").rstrip("\n")
    run = {"ecs": lambda: ecs_line(ev, "bench", HIGH, line),
           "cef": lambda: syslog_frame(cef_message(ev, "bench", HIGH), ev, HIGH, 1, "host", True),
           "community_id": lambda: community_id(ev)}[encoding]
    benchmark(run)
