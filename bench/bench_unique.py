"""Where a worker's time goes on the `unique` mix, and whether the figure holds when the mix moves.

Worker CPU only (the whole worker path of `workers.worker.batch_items`, heuristics on, the full
trail set, in this process, with the workers' collector settings and batch size): each batch is
timed in every run and its best run kept, with the inspector and every module-level cache of the
worker fresh each run, so a busy machine costs the figure little and no cache carries over between
runs. Issue 12's pipeline targets (1 worker at most
1.2 µs/packet) are bounded by this figure.

- `test_worker_stages`: µs/packet of each stage (packet parsing, flow ticks and scan probes, IP
  trail matching, payload row selection, DNS, HTTP, TLS, QUIC) on the default unique mix.
- `test_mix_variants`: the total for other seeds and proportions of the mix; the review asked
  that the figures hold within 15 % of the default's.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import targets

from engine.config import SensorConfig
from engine.index.mapped import TrailIndex
from engine.mixes import UniqueShares
from engine.pcapio import read_batches
from engine.traffic import mixed_capture
from workers import collector
from workers.batch import PROTO_UDP, parse_batch
from workers.match import IpMatcher
from workers.observe import probe_items, tick_items
from workers.payload import DetectionSettings, PayloadInspector

PACKETS = 300_000
RUNS = 5  # each batch's best: this machine runs up to 2x slower for seconds at a time
SPREAD_TARGET_PCT = 15.0  # issue 12: the figures hold within 15 % when the mix's seed and shares move
VARIANTS: dict[str, tuple[int, UniqueShares]] = {  # each its own seed: they run side by side (below)
    "default (seed 1)": (1, UniqueShares()),
    "seed 2": (2, UniqueShares()),
    "seed 3": (3, UniqueShares()),
    "DNS x1.5 (seed 4)": (4, replace(UniqueShares(), dns=0.12)),
    "HTTP x2 (seed 5)": (5, replace(UniqueShares(), http=0.04)),
    "TLS x2 (seed 6)": (6, replace(UniqueShares(), tls=0.04)),
    "QUIC x0.5 (seed 7)": (7, replace(UniqueShares(), quic=0.005)),
    "IPv6 x4 (seed 8)": (8, replace(UniqueShares(), ipv6=0.16)),
}
Batches = list[tuple[np.ndarray, np.ndarray, int]]


def _batches(path: Path) -> Batches:
    """The capture in the sensor's batches (its default size: the per-batch cost is part of the figure)."""
    size = SensorConfig().batch_packets
    return [(b.meta, np.frombuffer(b.data, dtype=np.uint8), b.linktype) for b in read_batches(path, size)]


def _fresh(index: TrailIndex) -> tuple[IpMatcher, PayloadInspector]:
    """A worker's matchers as a new worker has them: no cache of an earlier run survives."""
    for obj in gc.get_objects():
        if isinstance(obj, functools._lru_cache_wrapper) and obj.__module__.startswith("workers"):
            obj.cache_clear()
    index._wl_domain_cache.clear()
    return IpMatcher(index), PayloadInspector(index, DetectionSettings(use_heuristics=True))


def _stage_rows(p, data: np.ndarray, inspector: PayloadInspector) -> dict[str, np.ndarray]:
    rows = inspector.rows(p)
    port53 = (p.sport[rows] == 53) | (p.dport[rows] == 53)
    udp = p.proto[rows] == PROTO_UDP
    tls = ~udp & ~port53 & (np.take(data, p.payload_off[rows], mode="clip") == 0x16)
    return {"DNS": rows[port53], "QUIC": rows[udp & ~port53], "TLS": rows[tls], "HTTP": rows[~udp & ~port53 & ~tls]}


def _one_batch(meta: np.ndarray, data: np.ndarray, linktype: int, matcher: IpMatcher,
               inspector: PayloadInspector) -> dict[str, float]:
    """CPU seconds of the thread per stage of one batch through the worker path (`time.thread_time`:
    the time the host takes the virtual CPU away, steal, is not the worker's)."""
    took: dict[str, float] = {}

    def timed(stage: str, work: Callable[[], object]) -> object:
        started = time.thread_time()
        result = work()
        took[stage] = took.get(stage, 0.0) + time.thread_time() - started
        return result

    p = timed("parse", lambda: parse_batch(meta, data, linktype))
    timed("ticks and probes", lambda: (tick_items(p), probe_items(p)))
    timed("IP trails", lambda: matcher.events(p))
    stages = timed("payload selection", lambda: _stage_rows(p, data, inspector))
    for stage, rows in stages.items():
        timed(stage, lambda rows=rows: inspector.inspect(p, data, rows))
    return took


def _run(batches: Batches, index: TrailIndex, best: list[dict[str, float]]) -> None:
    """One run over the capture with a fresh worker state, keeping each batch's best per stage."""
    matcher, inspector = _fresh(index)
    for i, (meta, data, linktype) in enumerate(batches):
        for stage, seconds in _one_batch(meta, data, linktype, matcher, inspector).items():
            best[i][stage] = min(best[i].get(stage, float("inf")), seconds)


def _stage_totals(best: list[dict[str, float]]) -> dict[str, float]:
    return {stage: sum(b[stage] for b in best) for stage in best[0]}


def _timed_stages(batches: Batches, index: TrailIndex) -> dict[str, float]:
    """Seconds per stage over the capture, each batch's best of RUNS runs."""
    collector.settle()
    best: list[dict[str, float]] = [{} for _ in batches]
    for _ in range(RUNS):
        _run(batches, index, best)
    return _stage_totals(best)


@pytest.fixture(scope="module")
def variant_pcap(workdir: Path, full_index: Path) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            seed, shares = VARIANTS[name]
            path = workdir / f"unique-variant-{len(made)}.pcap"
            mixed_capture(path, PACKETS, seed=seed, mix="unique", shares=shares)
            made[name] = path
        return made[name]

    return make


def test_worker_stages(benchmark, full_index: Path, variant_pcap: Callable[[str], Path], trail_set_name: str) -> None:
    batches = _batches(variant_pcap("default (seed 1)"))
    packets = sum(len(meta) for meta, _, _ in batches)
    index = TrailIndex(full_index)
    stages: dict[str, float] = {}
    benchmark.pedantic(lambda: stages.update(_timed_stages(batches, index)), rounds=1)
    total = sum(stages.values())
    benchmark.extra_info.update({f"us_per_packet_{k}": round(v / packets * 1e6, 3) for k, v in stages.items()})
    benchmark.extra_info["us_per_packet_total"] = round(total / packets * 1e6, 3)
    targets.record("worker CPU, unique mix (the stages below)", total / packets * 1e6, "µs/packet")
    print(f"\nworker on the unique mix ({packets:,} packets, {trail_set_name}): "
          f"{total / packets * 1e6:.3f} µs/packet")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:18} {seconds / packets * 1e6:6.3f} µs/packet  {100 * seconds / total:5.1f} %")


def _kind_rows(batches: Batches, index: TrailIndex) -> dict[str, int]:
    """Packets that reach each payload stage over the capture."""
    inspector = PayloadInspector(index, DetectionSettings(use_heuristics=True))
    counts: dict[str, int] = {}
    for meta, data, linktype in batches:
        for stage, rows in _stage_rows(parse_batch(meta, data, linktype), data, inspector).items():
            counts[stage] = counts.get(stage, 0) + len(rows)
    return counts


def test_mix_variants(benchmark, full_index: Path, variant_pcap: Callable[[str], Path]) -> None:
    """µs/packet of each variant, and µs per packet of each payload kind (what a DNS packet, a QUIC
    Initial ... costs): the mean moves with the shares by construction, the per-kind costs should
    not move with seed or shares.

    The variants run side by side, batch i of each in turn, each with a worker state of its own
    (their seeds differ, so no variant's items are in another's caches): this machine runs up to 2x
    slower for minutes at a time, and variants measured one after the other differed by a third
    when such a spell took some of them. A variant's deviation is the median over the runs of its
    µs/packet against the default's in the same run; the figures shown are each batch's best.

    "By shares": the variant's µs/packet against what its own packets would cost at the default's
    costs of each kind (a QUIC Initial costs some 30 packets of the mix: half as many Initials take
    about 15 % off the mean by themselves). This is what a change of seed or shares does beyond its
    proportions; both deviations are reported, each against 15 %."""
    index = TrailIndex(full_index)
    figures: dict[str, float] = {}
    per_kind: dict[str, dict[str, float]] = {}
    other: dict[str, float] = {}  # µs/packet of the stages every packet takes (parse ... payload selection)
    captures = {name: _batches(variant_pcap(name)) for name in VARIANTS}
    kinds = {name: _kind_rows(batches, index) for name, batches in captures.items()}
    packets = {name: sum(len(meta) for meta, _, _ in batches) for name, batches in captures.items()}
    base_name = "default (seed 1)"
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}

    def measure() -> None:
        best = {name: [{} for _ in batches] for name, batches in captures.items()}
        names = list(captures)
        for r in range(RUNS):
            collector.settle()
            states = {name: _fresh(index) for name in names}  # every module-level cache cleared first
            took = dict.fromkeys(names, 0.0)
            order = names[r % len(names) :] + names[: r % len(names)]  # who goes first changes each run
            for i in range(max(len(batches) for batches in captures.values())):
                for name in order:
                    if i < len(captures[name]):
                        stages = _one_batch(*captures[name][i], *states[name])
                        took[name] += sum(stages.values())
                        for stage, seconds in stages.items():
                            best[name][i][stage] = min(best[name][i].get(stage, float("inf")), seconds)
            for name in names:
                ratios[name].append(took[name] / packets[name] / (took[base_name] / packets[base_name]))
        for name in names:
            totals = _stage_totals(best[name])
            figures[name] = sum(totals.values()) / packets[name] * 1e6
            per_kind[name] = {k: totals[k] / n * 1e6 for k, n in kinds[name].items() if n}
            other[name] = sum(v for k, v in totals.items() if k not in kinds[name]) / packets[name] * 1e6

    benchmark.pedantic(measure, rounds=1)
    deviation = {name: statistics.median(values) - 1 for name, values in ratios.items()}
    spread = max(abs(v) for v in deviation.values())
    # what the variant's own packets of each kind would cost at the default's costs: its shares alone
    expected = {name: other[base_name] + sum(n * per_kind[base_name][k] for k, n in kinds[name].items() if n)
                / packets[name] for name in VARIANTS}
    beyond = {name: figures[name] / expected[name] - 1 for name in VARIANTS}
    beyond_spread = max(abs(v) for v in beyond.values())
    kind_spread = {k: max(abs(per_kind[n][k] / per_kind[base_name][k] - 1) for n in VARIANTS if k in per_kind[n])
                   for k in per_kind[base_name]}
    benchmark.extra_info.update({f"us_per_packet {k}": round(v, 3) for k, v in figures.items()})
    benchmark.extra_info["largest_deviation_pct"] = round(100 * spread, 1)
    benchmark.extra_info.update({f"largest_deviation_pct_per_{k}": round(100 * v, 1) for k, v in kind_spread.items()})
    kind_names = list(per_kind[base_name])
    print("\n  variant              µs/packet   deviation  by shares  " + "  ".join(f"µs/{k:>5}" for k in kind_names))
    for name, value in figures.items():
        cells = "  ".join(f"{per_kind[name].get(k, float('nan')):9.2f}" for k in kind_names)
        print(f"  {name:20} {value:9.3f}   {100 * deviation[name]:+7.1f} %  {100 * beyond[name]:+7.1f} %  {cells}")
    targets.record(f"µs/packet of {len(VARIANTS) - 1} mix variants, largest deviation", 100 * spread, "%",
                   SPREAD_TARGET_PCT)
    targets.record("same, beyond what each variant's shares predict", 100 * beyond_spread, "%", SPREAD_TARGET_PCT)
    benchmark.extra_info["largest_deviation_beyond_shares_pct"] = round(100 * beyond_spread, 1)
    print(f"largest deviation of µs/packet from the default mix (median over the runs): {100 * spread:.1f} %; of the "
          "cost per packet (each batch's best) of "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in kind_spread.items()) + " (asked: within 15 %)")
