"""Index lookups (batch IPv4, the per-packet path, and single string lookups) and index builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.benchmark import DEFAULT_TRAIL_ROWS, generate_trails
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex

BATCH = 4096
BUILD_ROUNDS = 3
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


def test_build_from_static_folder(benchmark, workdir: Path) -> None:
    """`maltrail trails build --from trails/static` without the command's start-up."""
    if not STATIC.is_dir():
        pytest.skip(f"{STATIC} not present: no static trail folder to build from")
    meta = benchmark.pedantic(build_index_file, args=([str(STATIC)], workdir / "static-build.mtidx"),
                              rounds=BUILD_ROUNDS)
    benchmark.extra_info["entries"] = meta["counts"]["entries"]
