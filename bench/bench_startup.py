"""Start-up of the sensor command: wall time of `maltrail sensor -r tiny.pcap --trails full.mtidx
--workers 1` (`python -m engine.launch`, the command's entry point) as a subprocess, from its start
to its exit, with the full trail index. Forensics over many small captures pays this once per
capture (target: at most 0.4 s).

`MALTRAIL_STARTUP_BASE=/path/to/other/checkout` also times that checkout's code (with this
environment's packages), alternating run by run, so load from other work on the machine affects
both alike: before / after figures from one command. Without it, `MALTRAIL_BENCH_BASE` (the other
benchmarks' base) is the one timed, if set.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import targets
from turns import by_turns, checkouts, entry_point

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "corpus" / "dns_queries.pcap"  # 6 packets, 2 events
ROUNDS = 10
TARGET_SECONDS = 0.4  # issue 12


def _run(checkout: Path, index: Path, log_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", entry_point(checkout), "sensor", "-r", str(TINY), "--trails", str(index),
                    "--workers", "1", "--log-dir", str(log_dir)], cwd=checkout, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(checkout)})
    return time.perf_counter() - started


def _summary(times: list[float]) -> str:
    return (f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s "
            f"({len(times)} runs)")


@pytest.mark.unique
def test_sensor_startup(benchmark, full_index: Path, workdir: Path, trail_set_name: str) -> None:
    if not full_index.is_file():
        pytest.skip("no full trail index could be built")
    places = checkouts(os.environ.get("MALTRAIL_STARTUP_BASE") or os.environ.get("MALTRAIL_BENCH_BASE"))
    for name, checkout in places.items():  # warm the page cache and the bytecode caches
        _run(checkout, full_index, workdir / f"startup-logs-{name}")
    times = by_turns(benchmark, places, ROUNDS,
                     lambda name, checkout: _run(checkout, full_index, workdir / f"startup-logs-{name}"))
    for name, measured in times.items():
        print(f"\nsensor start to exit, tiny capture, {trail_set_name}, 1 worker, {name} "
              f"({places[name]}): {_summary(measured)}")
    targets.record(f"start-up, tiny capture, 1 worker (median of {ROUNDS})", statistics.median(times["this"]), "s",
                   TARGET_SECONDS, statistics.median(times["base"]) if "base" in times else None)
