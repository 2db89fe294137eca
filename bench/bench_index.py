"""Index lookups: batch IPv4 (the per-packet path) and single string lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.index.mapped import TrailIndex

BATCH = 4096


def test_ip4_batch_lookup(benchmark, full_index: Path) -> None:
    ix = TrailIndex(full_index)
    ips = np.random.default_rng(2).integers(0, 2**32, BATCH, dtype=np.uint64).astype(np.uint32)
    benchmark.extra_info["packets_per_round"] = BATCH
    benchmark(ix.lookup_ip4, ips)


def test_domain_parent_walk(benchmark, full_index: Path) -> None:
    ix = TrailIndex(full_index)
    benchmark(ix.lookup_domain, "static.cdn.some-clean-site.example.org")
