"""Index lookups (batch IPv4, the per-packet path, and single string lookups) and index builds.

`test_trails_build_command` times `maltrail trails build` on the generated 1.5 M-row trails.csv as
users run it (a new process each round, start-up included; issue 12's target: at most 5 s), by
turns with the checkout `MALTRAIL_BENCH_BASE` names, if set."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import targets
from turns import by_turns, checkouts, entry_point

from engine.benchmark import DEFAULT_TRAIL_ROWS, generate_trails
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex

BATCH = 4096
BUILD_ROUNDS = 3
BUILD_TARGET_SECONDS = 5.0  # issue 12, the command on 1.5 M rows
STATIC = Path(__file__).resolve().parents[2] / "shared" / "trails" / "static"


def test_ip4_batch_lookup(benchmark, full_index: Path) -> None:
    ix = TrailIndex(full_index)
    ips = np.random.default_rng(2).integers(0, 2**32, BATCH, dtype=np.uint64).astype(np.uint32)
    benchmark.extra_info["packets_per_round"] = BATCH
    benchmark(ix.lookup_ip4, ips)


def test_domain_parent_walk(benchmark, full_index: Path) -> None:
    ix = TrailIndex(full_index)
    benchmark(ix.lookup_domain, "static.cdn.some-clean-site.example.org")


@pytest.fixture(scope="session")
def generated_csv(workdir: Path) -> Path:
    """The generated 1.5 M-row trails.csv (`maltrail bench`'s default trail set)."""
    return generate_trails(workdir / "generated-build.csv", DEFAULT_TRAIL_ROWS)


def test_build_from_generated_csv(benchmark, workdir: Path, generated_csv: Path) -> None:
    """`maltrail trails build --from trails.csv` without the command's start-up."""
    meta = benchmark.pedantic(build_index_file, args=([str(generated_csv)], workdir / "csv-build.mtidx"),
                              rounds=BUILD_ROUNDS)
    benchmark.extra_info["entries"] = meta["counts"]["entries"]


def _build_command(checkout: Path, csv: Path, out: Path) -> float:
    """Seconds of `maltrail trails build --from csv --out out` run in `checkout`."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", entry_point(checkout), "trails", "build", "--from", str(csv), "--out",
                    str(out)], cwd=checkout, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(checkout)})
    return time.perf_counter() - started


@pytest.mark.unique
def test_trails_build_command(benchmark, workdir: Path, generated_csv: Path) -> None:
    places = checkouts(os.environ.get("MALTRAIL_BENCH_BASE"))
    times = by_turns(benchmark, places, BUILD_ROUNDS, lambda name, checkout: _build_command(
        checkout, generated_csv, workdir / f"command-build-{name}.mtidx"))
    for name, measured in times.items():
        print(f"\ntrails build, {DEFAULT_TRAIL_ROWS:,}-row trails.csv, {name} ({places[name]}): median "
              f"{statistics.median(measured):.2f} s, min {min(measured):.2f} s ({len(measured)} runs)")
    targets.record(f"trails build, {DEFAULT_TRAIL_ROWS:,} rows (median of {BUILD_ROUNDS})",
                   statistics.median(times["this"]), "s", BUILD_TARGET_SECONDS,
                   statistics.median(times["base"]) if "base" in times else None)


def test_build_from_static_folder(benchmark, workdir: Path) -> None:
    """`maltrail trails build --from trails/static` without the command's start-up."""
    if not STATIC.is_dir():
        pytest.skip(f"{STATIC} not present: no static trail folder to build from")
    meta = benchmark.pedantic(build_index_file, args=([str(STATIC)], workdir / "static-build.mtidx"),
                              rounds=BUILD_ROUNDS)
    benchmark.extra_info["entries"] = meta["counts"]["entries"]
