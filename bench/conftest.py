"""Shared fixtures for the benchmarks: the full static trail set (or a generated stand-in) and
the realistic mixed capture, built once per session."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.ipaddr import ip4_text
from engine.traffic import mixed_capture

SHARED = Path(__file__).resolve().parents[2] / "shared"
STATIC = SHARED / "trails" / "static"
MIXED_PACKETS = 300_000
TRAIL_IPS = ("198.51.100.66", "203.0.113.44", "192.0.2.77")


def _generated_trails(path: Path, rows: int) -> Path:
    """A stand-in for the static set when ../shared is absent: IPs, domains and URLs."""
    rng = random.Random(1)
    with open(path, "w") as f:
        for i in range(rows):
            kind = i % 3
            if kind == 0:
                key = ".".join(str(rng.randint(1, 254)) for _ in range(4))
            elif kind == 1:
                key = f"host{i}.example-{rng.randint(0, 99999)}.com"
            else:
                key = f"site{i}.example.net/gate{rng.randint(0, 999)}.php"
            f.write(f"{key},generated (bench),(static)\n")
        for ip in TRAIL_IPS:
            f.write(f"{ip},malware (bench),(static)\n")
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def full_index(workdir: Path) -> Path:
    out = workdir / "full.mtidx"
    if STATIC.is_dir():
        build_index_file([str(STATIC)], out)
    else:
        build_index_file([str(_generated_trails(workdir / "generated.csv", 1_500_000))], out)
    return out


@pytest.fixture(scope="session")
def mixed_pcap(workdir: Path, full_index: Path) -> Path:
    """The mixed capture, with a few flows to IPv4 trails that really are in the index."""
    keys = TrailIndex(full_index).ip4_keys
    trail_ips = [ip4_text(int(keys[i])) for i in np.linspace(0, len(keys) - 1, 5).astype(int)]
    path = workdir / "mixed.pcap"
    mixed_capture(path, MIXED_PACKETS, seed=1, trail_ips=trail_ips)
    return path
