"""Batch parsing and matching of the realistic mixed capture, per 4096-packet batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.index.mapped import TrailIndex
from engine.pcapio import read_batches
from workers.batch import parse_batch
from workers.match import IpMatcher


def _first_batch(mixed_pcap: Path):
    batch = next(iter(read_batches(mixed_pcap, 4096)))
    return batch.meta, np.frombuffer(batch.data, dtype=np.uint8), batch.linktype


def test_parse_batch(benchmark, mixed_pcap: Path) -> None:
    meta, data, linktype = _first_batch(mixed_pcap)
    benchmark.extra_info["packets_per_round"] = len(meta)
    benchmark(parse_batch, meta, data, linktype)


def test_parse_and_match_batch(benchmark, mixed_pcap: Path, full_index: Path) -> None:
    meta, data, linktype = _first_batch(mixed_pcap)
    matcher = IpMatcher(TrailIndex(full_index))
    benchmark.extra_info["packets_per_round"] = len(meta)
    benchmark(lambda: matcher.events(parse_batch(meta, data, linktype)))
