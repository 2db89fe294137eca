"""Whole pipeline: replay of each traffic mix with the full trail set, 1 and 2 workers.

The mixed capture is given three times in one run (900k packets) so the figure is steady state,
not dominated by the fixed cost of draining the pipeline at the end; the other mixes once. Targets
on the mixed capture: 1 worker at most 1.5 µs/packet, 2 workers at least 1.6x the packets/s of 1.
The unique mix (issue 12) is a 900k-packet capture replayed once, three rounds, as giving it three
times would repeat every name; targets: 1 worker <= 1.2 µs/packet, 2 workers <= 0.8 µs/packet.

`MALTRAIL_BENCH_BASE=/path/to/other/checkout` adds `test_replay_unique_against_base`: the `maltrail
sensor` command of this checkout and of that one (with this environment's packages), run by turns
on the unique capture, compared on the wall time their summaries report: before / after figures
and their ratio from one command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import targets
from turns import checkouts

from engine.config import SensorConfig
from engine.sensor import run_sensor
from engine.traffic import MIXES

PIPELINE_TARGETS = {1: 1.2, 2: 0.8}  # issue 12: µs/packet on the unique mix
_us_per_packet: dict[tuple[str, int], float] = {}


def _replay(benchmark, mix: str, workers: int, capture: Path, full_index: Path, workdir: Path, copies: int,
            rounds: int) -> None:
    cfg = SensorConfig(name="bench", trails=str(full_index), log_dir=str(workdir / f"logs-{mix}-{workers}"),
                       workers=workers)
    summaries = []
    benchmark.pedantic(lambda: summaries.append(run_sensor(cfg, [capture] * copies)), rounds=rounds)
    best = min(summaries, key=lambda s: s.wall_seconds)
    us = best.wall_seconds / best.packets * 1e6
    _us_per_packet[mix, workers] = us
    info = {"mix": mix, "workers": workers, "packets": best.packets, "us_per_packet": round(us, 3),
            "packets_per_second": round(best.packets / best.wall_seconds),
            "startup_seconds": round(best.startup_seconds, 3), "events": best.status["events_written"],
            "balance": [round(n / best.packets, 3) for n in best.status["per_worker_packets"]]}
    if workers > 1 and (mix, 1) in _us_per_packet:
        info["speedup_over_1_worker"] = round(_us_per_packet[mix, 1] / us, 3)
    benchmark.extra_info.update(info)
    if mix == "unique":
        targets.record(f"pipeline, unique capture, {workers} worker(s)", us, "µs/packet", PIPELINE_TARGETS[workers])
    assert best.status["events_written"] > 0
    print(f"\n{mix}, {workers} worker(s): {best.packets} packets, {us:.3f} µs/packet (capture start to summary), "
          f"startup {best.startup_seconds:.2f} s, {best.status['events_written']} events"
          + (f", {info['speedup_over_1_worker']:.2f}x the packets/s of 1 worker" if "speedup_over_1_worker" in info
             else ""))


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_mixed(benchmark, workers: int, full_index: Path, mixed_pcap: Path, workdir: Path) -> None:
    _replay(benchmark, "mixed", workers, mixed_pcap, full_index, workdir, copies=3, rounds=3)


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_unique(benchmark, workers: int, full_index: Path, unique_pcap: Path, workdir: Path) -> None:
    _replay(benchmark, "unique", workers, unique_pcap, full_index, workdir, copies=1, rounds=3)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("mix", [m for m in MIXES if m not in ("mixed", "unique")])
def test_replay_mix(benchmark, mix: str, workers: int, full_index: Path, mix_pcap: Callable[[str], Path],
                    workdir: Path) -> None:
    _replay(benchmark, mix, workers, mix_pcap(mix), full_index, workdir, copies=1, rounds=1)


def _sensor_us_per_packet(checkout: Path, capture: Path, index: Path, workers: int, log_dir: Path) -> float:
    """µs/packet from the summary of `maltrail sensor` run in `checkout` (capture start to summary)."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "sensor", "-r", str(capture), "--trails", str(index),
                           "--workers", str(workers), "--log-dir", str(log_dir)], cwd=checkout, check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    packets = int(re.search(r"^  packets +([\d,]+)", done.stdout, re.M).group(1).replace(",", ""))
    wall = float(re.search(r"^  wall time +([\d.]+) s", done.stdout, re.M).group(1))
    return wall / packets * 1e6


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_unique_against_base(benchmark, workers: int, full_index: Path, unique_pcap: Path,
                                    workdir: Path) -> None:
    base = os.environ.get("MALTRAIL_BENCH_BASE")
    if not base:
        pytest.skip("set MALTRAIL_BENCH_BASE to another checkout to compare with it")
    places = checkouts(base)
    best: dict[str, float] = {}

    def one_round() -> None:
        for name, checkout in places.items():
            us = _sensor_us_per_packet(checkout, unique_pcap, full_index, workers, workdir / f"cmp-{name}-{workers}")
            best[name] = min(best.get(name, float("inf")), us)

    benchmark.pedantic(one_round, rounds=3)
    ratio = best["base"] / best["this"]
    benchmark.extra_info.update({"this_us_per_packet": round(best["this"], 3),
                                 "base_us_per_packet": round(best["base"], 3), "ratio_base_to_this": round(ratio, 2)})
    targets.record(f"same, {workers} worker(s), by turns with the base", best["this"], "µs/packet",
                   PIPELINE_TARGETS[workers], best["base"])
    print(f"\nunique, {workers} worker(s): this {best['this']:.3f} µs/packet, base {base} {best['base']:.3f}: "
          f"{ratio:.2f}x")
