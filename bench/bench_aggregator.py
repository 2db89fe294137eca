"""The aggregator's work per packet of the mixed capture: unpickling a worker's results, heuristics
and throttle over its items, and the log write (`apply_items` + flush), as the aggregator does for
each batch. The worker items are made once, outside the timing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from engine.aggregator import EventPipeline, apply_items
from engine.eventlog import DailyLog
from engine.heuristics import Heuristics, HeuristicSettings
from engine.index.mapped import TrailIndex
from engine.pcapio import read_batches
from engine.resources import data_file
from engine.trails.ignore import IgnoreRules
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_items

BATCHES = 40


def test_aggregator_apply_and_write(benchmark, full_index: Path, mixed_pcap: Path, workdir: Path) -> None:
    index = TrailIndex(full_index)
    matcher, inspector = IpMatcher(index), PayloadInspector(index, DetectionSettings())
    messages, packets = [], 0
    for seq, batch in enumerate(read_batches(mixed_pcap, 4096)):
        if seq == BATCHES:
            break
        data = np.frombuffer(batch.data, dtype=np.uint8)
        items = batch_items(parse_batch(batch.meta, data, batch.linktype), data, matcher, inspector)
        messages.append(pickle.dumps((seq, 0, 1, {"packets": len(batch)}, items), protocol=5))
        packets += len(batch)
    rounds = iter(range(1000))

    def fresh() -> tuple[tuple[Heuristics, EventPipeline], dict]:
        log_dir = workdir / f"aggregator-{next(rounds)}"
        heuristics = Heuristics(HeuristicSettings(), index.is_whitelisted_ip)
        pipeline = EventPipeline(index, IgnoreRules.from_files([data_file("ignore_events.txt")]),
                                 DailyLog(log_dir, "bench"), sensor="bench")
        return (heuristics, pipeline), {}

    def aggregate(heuristics: Heuristics, pipeline: EventPipeline) -> None:
        for message in messages:
            _, _, _, _, items = pickle.loads(message)
            apply_items(items, heuristics, pipeline)
            pipeline.flush()
        pipeline.log.close()

    benchmark.pedantic(aggregate, setup=fresh, rounds=5)
    per_packet = benchmark.stats.stats.min / packets * 1e6
    benchmark.extra_info.update({"packets_per_round": packets, "us_per_packet": round(per_packet, 3)})
    print(f"\naggregator: {per_packet:.3f} µs/packet ({packets} packets, {BATCHES} batches, with unpickling)")
