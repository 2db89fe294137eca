"""What a new item costs the worker: µs of worker CPU per new HTTP request, DNS query name, TLS
ClientHello and QUIC Initial, through the whole worker path (parse_batch, IP matching, payload
inspection, observations: `workers.worker.batch_items`, then the pickling of the batch's items into
the message the worker sends the aggregator) with heuristics on and the full trail set.

Every item of every round is new to the inspector - new name, path, User-Agent, SNI, connection id,
client address and port - so no cache of the worker can hide the cost (the review of
`bench_payload` found that replayed plans made repeated items look free). Batches are built before
timing, and timed in CPU time of the thread (`time.thread_time`): a virtual machine's host takes the
CPU away from it for a fifth of the time in some minutes (steal), which wall time would count as the
worker's. Targets (issue 12): HTTP request <= 10 µs, DNS name <= 3 µs, ClientHello <= 4 µs.
The garbage collector runs with the workers' settings (`workers.collector`): with the default
thresholds it would re-scan this process's young objects hundreds of times more often than a
worker's does, a cost no worker pays.

`MALTRAIL_BENCH_BASE=/path/to/other/checkout` also measures that checkout's code (this file run as
a script there, with this environment's packages), case by case right after this one's, so both
see the same machine load: before / after figures and their ratio from one command.
Each turn runs in a fresh process (no module-level cache of an earlier turn survives), and the
best of `MALTRAIL_BENCH_TURNS` turns (3 unless set) is kept, alternating with the base when there
is one: this machine changes speed by up to 2x for seconds at a time, so one turn says little."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from random import Random

import pytest
import targets

from engine import traffic as t
from engine.index.mapped import TrailIndex
from workers import collector
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_items

BATCH = 512
ROUNDS = 20
TURNS = int(os.environ.get("MALTRAIL_BENCH_TURNS", 3))  # fresh processes, alternating with a base; the best kept
CHECKOUT = Path(__file__).resolve().parents[1]
TARGETS_US = {"http_request": 10.0, "dns_query": 3.0, "tls_client_hello": 4.0}




def _client(n: int) -> tuple[str, int]:
    """Client address and port of item `n`: a pair never used before."""
    return f"10.{n >> 24 & 0xFF or 1}.{n >> 16 & 0xFF}.{n >> 8 & 0xFF or 1}", 1024 + n % 64512


def _http(n: int, rng: Random) -> bytes:
    client, port = _client(n)
    request = t.unique_http_request(n, t.unique_name(n, rng), rng)
    return t.ethernet(t.tcp4(client, "93.184.216.34", port, 80, t.PSH | t.ACK, request, seq=1, ack=1))


def _dns(n: int, rng: Random) -> bytes:
    client, port = _client(n)
    return t.ethernet(t.udp4(client, "10.0.0.53", port, 53, t.dns_query(t.unique_name(n, rng), txid=n & 0xFFFF)))


def _tls(n: int, rng: Random) -> bytes:
    client, port = _client(n)
    hello = t.tls_client_hello(t.unique_name(n, rng))
    return t.ethernet(t.tcp4(client, "93.184.216.34", port, 443, t.PSH | t.ACK, hello, seq=1, ack=1))


def _quic(n: int, rng: Random) -> bytes:
    client, port = _client(n)
    initial = t.quic_initial(t.unique_name(n, rng), dcid=rng.randbytes(8))
    return t.ethernet(t.udp4(client, "93.184.216.34", port, 443, initial))


CASES: dict[str, Callable[[int, Random], bytes]] = {
    "http_request": _http, "dns_query": _dns, "tls_client_hello": _tls, "quic_initial": _quic}


def _measure(case: str, index: Path) -> tuple[float, float]:
    """(best, mean) µs per item over ROUNDS batches of BATCH new items, after a warm-up batch."""
    collector.settle()
    ix = TrailIndex(index)
    matcher, inspector = IpMatcher(ix), PayloadInspector(ix, DetectionSettings(use_heuristics=True))
    rng, build = Random(12), CASES[case]
    batches = [t.frames_batch([build(r * BATCH + i + 1, rng) for i in range(BATCH)]) for r in range(ROUNDS + 1)]
    times = []
    for meta, data in batches:
        started = time.thread_time()
        pickle.dumps(batch_items(parse_batch(meta, data, 1), data, matcher, inspector), protocol=5)
        times.append(time.thread_time() - started)
    times = times[1:]  # the warm-up batch: first-call costs (imports, lazy tables) are not per item
    return min(times) / BATCH * 1e6, sum(times) / len(times) / BATCH * 1e6


def _measure_in(checkout: Path, case: str, index: Path) -> tuple[float, float]:
    """`_measure` in a fresh process: this file run as a script in `checkout` (this one or the
    base), under the workers' collector settings (older checkouts do not set them)."""
    script = (f"import gc, os, runpy, sys; gc.freeze(); gc.set_threshold(*{collector.THRESHOLDS}); "
              f"sys.argv = sys.argv[1:]; sys.path.insert(1, os.path.dirname(sys.argv[0])); "  # for `targets`
              f"runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).resolve()), case, str(index)], cwd=checkout,
                          check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    best, mean = json.loads(done.stdout.strip().splitlines()[-1])
    return best, mean


@pytest.mark.unique
@pytest.mark.parametrize("case", list(CASES))
def test_new_item(benchmark, case: str, full_index: Path) -> None:
    base = os.environ.get("MALTRAIL_BENCH_BASE")
    figures: dict[str, tuple[float, float]] = {}

    def measure() -> None:
        for _ in range(TURNS):  # by turns, so both see the same spells of a noisy machine
            this = _measure_in(CHECKOUT, case, full_index)
            figures["this"] = min(figures.get("this", this), this)
            if base:
                other = _measure_in(Path(base).resolve(), case, full_index)
                figures["base"] = min(figures.get("base", other), other)

    benchmark.pedantic(measure, rounds=1)
    best, mean = figures["this"]
    benchmark.extra_info.update({"us_per_item_min": round(best, 2), "us_per_item_mean": round(mean, 2),
                                 "target_us": TARGETS_US.get(case)})
    target = f", target <= {TARGETS_US[case]:g} µs" if case in TARGETS_US else ""
    print(f"\nnew {case}: {best:.2f} µs/item best, {mean:.2f} µs/item mean (batches of {BATCH}, all new{target})")
    targets.record(f"new {case.replace('_', ' ')}, worker CPU", best, "µs/item", TARGETS_US.get(case),
                   figures["base"][0] if "base" in figures else None)
    if "base" in figures:
        base_best, base_mean = figures["base"]
        benchmark.extra_info.update({"base_us_per_item_min": round(base_best, 2), "ratio_base_to_this": round(
            base_best / best, 2)})
        print(f"  base {base}: {base_best:.2f} µs/item best, {base_mean:.2f} mean: {base_best / best:.2f}x this one")


if __name__ == "__main__":  # run by `_measure_base` inside the other checkout
    print(json.dumps(_measure(sys.argv[1], Path(sys.argv[2]))))
