"""`maltrail bench`: how many workers does this link need so that nothing is dropped?

Generates (or takes) a capture of one traffic mix and replays it through the full pipeline for
each requested worker count: throughput, per-worker balance, peak ring occupancy, CPU and memory
(PSS) per process, then the smallest worker count within 5 % of the best throughput. With an
offered rate the replay is paced like a busy link and a full ring drops (and counts) packets, so
the answer becomes "the fewest workers that drop nothing at this rate".

Control code only: the hot path is the sensor's own. The trail set, index and capture are made
in a separate process, so the capture process measured here carries none of that memory.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from engine.config import ConfigError, SensorConfig
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.ipaddr import ip4_text
from engine.mixes import DEFAULT_PACKETS, DEFAULT_TRAIL_ROWS, DEFAULT_WORKERS, MIXES, UniqueShares
from engine.pcapio import read_batches, replay_problem
from engine.proctree import cpu_seconds, pss_kb
from engine.traffic import mixed_capture

if TYPE_CHECKING:
    from engine.sensor import Summary

WITHIN_BEST = 0.05  # the recommendation: fewest workers within this fraction of the best throughput
CPU_SAMPLE_SECONDS = 0.02
PSS_SAMPLE_SECONDS = 0.25
TRAIL_HIT_IPS = 5  # IPv4 trails of the index the generated capture talks to (real events)
_PREFIXES = ("", "www.", "cdn.", "mail.")
_TLDS = ("com", "net", "org", "ru", "xyz", "top")


@dataclass
class BenchOptions:
    """What `maltrail bench` was asked for (validated by `check`)."""

    mix: str = "unique"
    capture: str | None = None
    packets: int = DEFAULT_PACKETS
    workers: list[int] = field(default_factory=lambda: list(DEFAULT_WORKERS))
    trails: str | None = None
    trail_rows: int = DEFAULT_TRAIL_ROWS
    rate: float | None = None
    json_path: str | None = None
    progress: bool = False
    seed: int = 1  # of the generated capture (the generated trail set is always the same)
    shares: UniqueShares | None = None  # the unique mix's proportions, when not its defaults
    rounds: int = 1  # replays of each worker count, in turns; the median is reported

    def check(self) -> None:
        if self.mix not in MIXES:
            raise ConfigError(f"--mix: unknown traffic mix {self.mix!r} (one of {', '.join(MIXES)})")
        if self.shares is not None and not isinstance(MIXES[self.mix], UniqueShares):
            raise ConfigError(f"--share: only the unique mix has per-packet shares (not --mix {self.mix})")
        if not 1 <= self.rounds <= 100:
            raise ConfigError(f"--rounds: {self.rounds} is out of range (1..100)")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed: {self.seed} is out of range (0..2**63-1)")
        if not 1 <= self.packets <= 100_000_000:
            raise ConfigError(f"--packets: {self.packets} is out of range (1..100000000)")
        if not 1_000 <= self.trail_rows <= 20_000_000:
            raise ConfigError(f"--trail-rows: {self.trail_rows} is out of range (1000..20000000)")
        if self.rate is not None and not 0 < self.rate <= 100_000_000:
            raise ConfigError(f"--rate: {self.rate:g} is out of range (> 0 .. 100000000 packets/s)")
        if self.capture is not None and (problem := replay_problem(self.capture)):
            raise ConfigError(f"-r: {self.capture}: {problem}")
        if self.trails is not None and not Path(self.trails).exists():
            raise ConfigError(f"--trails: {self.trails} does not exist")
        if self.json_path is not None:
            parent = Path(self.json_path).resolve().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ConfigError(f"--json: cannot write {self.json_path} (no writable directory {parent})")


def parse_shares(texts: list[str]) -> UniqueShares:
    """`["quic=0.005", "dns=0.12"]` -> the unique mix's shares with those changed (the rest of the
    packets is bulk TCP data, which takes up what the others leave)."""
    kinds = [f.name for f in fields(UniqueShares)]
    changes: dict[str, float] = {}
    for text in texts:
        kind, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"--share: {text!r} is not KIND=FRACTION (e.g. quic=0.005)")
        if kind not in kinds:
            raise ConfigError(f"--share: unknown kind {kind!r} (one of {', '.join(kinds)})")
        try:
            changes[kind] = float(value)
        except ValueError:
            changes[kind] = math.nan
        if not 0 <= changes[kind] <= 1:
            raise ConfigError(f"--share: {value!r} is not a fraction of the packets (0..1, e.g. 0.005)")
    shares = replace(UniqueShares(), **changes)
    try:
        shares.kinds()
    except ValueError as e:
        total = sum(v for k, v in asdict(shares).items() if k != "ipv6")
        raise ConfigError(f"--share: {e} (given: {', '.join(texts)}; packet shares sum to {total:g})") from None
    return shares


def mix_label(options: BenchOptions) -> str:
    """The generated mix as the output names it: `unique`, or `unique, seed 2, quic=0.005`."""
    changed = [f"{k}={v:g}" for k, v in asdict(options.shares or UniqueShares()).items()
               if v != getattr(UniqueShares(), k)]
    return ", ".join([options.mix] + ([f"seed {options.seed}"] if options.seed != 1 else []) + changed)


def parse_workers(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4] (order kept, repeats dropped)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or not all(1 <= n <= 64 for n in counts):
        raise ConfigError(f"--workers: {text!r} is not a comma-separated list of worker counts (1..64)")
    return list(dict.fromkeys(counts))


# --- preparation (in a separate process) -------------------------------------------------------


def generate_trails(path: Path, rows: int, seed: int = 1) -> Path:
    """A stand-in for Maltrail's static trail set with its composition (about 1.4 % IPv4, 17 %
    IPv4:port, 0.1 % IPv6, 0.1 % ranges, the rest domains and URLs), as a trails.csv."""
    rng = random.Random(seed)
    r, bits = rng.random, rng.getrandbits

    def ip4() -> str:
        return f"{rng.randint(1, 223)}.{bits(8)}.{bits(8)}.{rng.randint(1, 254)}"

    with open(path, "w") as f:
        for i in range(rows):
            roll = r()
            if roll < 0.014:
                key = ip4()
            elif roll < 0.185:
                key = f"{ip4()}:{rng.randint(1, 65535)}"
            elif roll < 0.186:
                key = f"2a0{bits(4):x}:{bits(16):x}:{bits(16):x}::{bits(16):x}"
            elif roll < 0.187:
                key = f"{rng.randint(1, 223)}.{bits(8)}.{bits(8)}.0/24"
            elif roll < 0.9:
                key = f"{rng.choice(_PREFIXES)}gen{i:x}-{bits(20):x}.{rng.choice(_TLDS)}"
            else:
                key = f"gen{i:x}.example-{bits(16):x}.net/{rng.choice(('gate', 'panel', 'admin'))}{bits(10)}.php"
            f.write(f"{key},generated (bench),(static)\n")
    return path


@dataclass
class Prepared:
    """The index and capture a bench run replays."""

    index: str
    trail_source: str
    trail_entries: int
    capture: str
    generated: bool
    packets: int
    bytes: int
    seconds: float


def prepare(cfg: SensorConfig, options: BenchOptions, workdir: str) -> Prepared:
    """Index (given, built from the given sources, or generated) and capture (given or generated)."""
    started = time.monotonic()
    work = Path(workdir)
    if options.trails:
        from engine.sensor import prepare_index

        index = prepare_index(replace(cfg, trails=options.trails), work)
        source = options.trails
    else:
        csv = generate_trails(work / "generated-trails.csv", options.trail_rows)
        index = work / "trails.mtidx"
        build_index_file([str(csv)], index, [Path(w) for w in cfg.whitelist], cfg.default_whitelist)
        csv.unlink()
        source = f"generated, {options.trail_rows:,} rows"
    ix = TrailIndex(index)
    entries = len(ix)
    if options.capture:
        packets = size = 0
        for batch in read_batches(options.capture):
            packets += len(batch)
            size += int(batch.wirelen.sum(dtype=np.uint64))
        capture, generated = options.capture, False
    else:
        keys = ix.ip4_keys
        picks = np.linspace(0, len(keys) - 1, min(TRAIL_HIT_IPS, len(keys))).astype(int) if len(keys) else []
        trail_ips = [ip4_text(int(keys[i])) for i in picks]
        capture, generated = str(work / f"{options.mix}.pcap"), True
        info = mixed_capture(capture, options.packets, seed=options.seed, trail_ips=trail_ips, mix=options.mix,
                             shares=options.shares)
        packets, size = info["packets"], info["bytes"]
    return Prepared(str(index), source, entries, capture, generated, packets, size, time.monotonic() - started)


# --- measuring one run ---------------------------------------------------------------------------


class ProcessSampler:
    """CPU time and peak PSS of the sensor's processes, sampled from /proc while a run goes on.

    CPU is read every 20 ms (libc clock ticks are 10 ms), so a process's last sample is at most
    one period before it exits; PSS every 250 ms (reading smaps costs more)."""

    def __init__(self) -> None:
        self.targets: dict[str, tuple[int, int | None]] = {}
        self.base: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.pss_peak_kb: dict[str, int] = {}
        self.pss_total_peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, targets: dict[str, tuple[int, int | None]]) -> None:
        self.targets = targets
        for name, (pid, tid) in targets.items():
            self.base[name] = self.cpu[name] = cpu_seconds(pid, tid) or 0.0
        self._sample_pss()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample_cpu()

    def cpu_used(self) -> dict[str, float]:
        return {name: self.cpu[name] - self.base[name] for name in self.targets}

    def _run(self) -> None:
        next_pss = time.monotonic() + PSS_SAMPLE_SECONDS
        while not self._stop.wait(CPU_SAMPLE_SECONDS):
            self._sample_cpu()
            if time.monotonic() >= next_pss:
                next_pss += PSS_SAMPLE_SECONDS
                self._sample_pss()

    def _sample_cpu(self) -> None:
        for name, (pid, tid) in self.targets.items():
            value = cpu_seconds(pid, tid)
            if value is not None:
                self.cpu[name] = value

    def _sample_pss(self) -> None:
        total = 0
        for name, (pid, _) in self.targets.items():
            kb = pss_kb(pid)
            total += kb
            self.pss_peak_kb[name] = max(self.pss_peak_kb.get(name, 0), kb)
        self.pss_total_peak_kb = max(self.pss_total_peak_kb, total)


class ProgressBar:
    """A plain-text bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, enabled: bool, out: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.enabled = enabled
        self.out = out or sys.stderr
        self.width = width
        self.text = ""
        self._drawn = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        share = min(1.0, done / self.total)
        filled = int(share * self.width)
        self.out.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {share:4.0%}  {self.text}  "
                       f"{done:,}/{self.total:,} packets ")
        self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


class _Monitor:
    """The sensor's hooks for one run: start sampling once every process is ready, advance the
    progress bar, stop sampling when the pipeline has drained."""

    def __init__(self, sampler: ProcessSampler, bar: ProgressBar, offset: int) -> None:
        self.sampler, self.bar, self.offset = sampler, bar, offset
        self.started_at = self.last_batch_at = 0.0
        self.captured = 0

    def started(self, pids: dict[str, int]) -> None:
        self.started_at = self.last_batch_at = time.monotonic()
        targets: dict[str, tuple[int, int | None]] = {"capture": (os.getpid(), threading.get_native_id())}
        targets.update((name, (pid, None)) for name, pid in pids.items())
        self.sampler.start(targets)

    def progress(self, captured: int) -> None:
        self.captured = captured
        self.last_batch_at = time.monotonic()
        self.bar.update(self.offset + captured)

    def drained(self) -> None:
        self.sampler.stop()
        self.bar.update(self.offset + self.captured, force=True)


def _run_result(workers: int, summary: Summary, sampler: ProcessSampler, monitor: _Monitor) -> dict[str, Any]:
    packets, seconds = summary.packets, summary.wall_seconds
    status = summary.status
    rings = status["rings"]
    cpu = sampler.cpu_used()
    for i, batches_cpu in enumerate(status.get("per_worker_cpu_seconds", [])):  # a floor: the sampler misses
        cpu[f"worker-{i}"] = max(cpu.get(f"worker-{i}", 0.0), batches_cpu)  # what a worker spends after its last sample
    capture_seconds = max(1e-9, monitor.last_batch_at - monitor.started_at)
    return {
        "workers": workers,
        "packets": packets,
        "captured": summary.captured,
        "seconds": round(seconds, 6),  # a short run lasts tens of ms: 4 places put µs/packet off by 0.1 %
        "startup_seconds": round(summary.startup_seconds, 3),
        "packets_per_second": round(packets / seconds, 1) if seconds > 0 else 0.0,
        "us_per_packet": round(seconds / packets * 1e6, 4) if packets else 0.0,
        "per_worker_packets": status["per_worker_packets"],
        "balance": [round(n / packets, 4) if packets else 0.0 for n in status["per_worker_packets"]],
        "ring_slots": rings[0]["slots"] if rings else 0,
        "peak_ring_occupancy": [r["peak_occupancy"] for r in rings],
        "ring_drops": summary.ring_drops,
        "drops": sum(summary.ring_drops),
        "offered_pps": summary.offered_pps,
        "achieved_offered_pps": round(summary.captured / capture_seconds, 1) if summary.offered_pps else None,
        "events": status["events_written"],
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "cpu_percent": {k: round(100 * v / seconds, 1) if seconds > 0 else 0.0 for k, v in cpu.items()},
        "pss_mb": {k: round(v / 1024, 1) for k, v in sampler.pss_peak_kb.items()},
        "pss_mb_total": round(sampler.pss_total_peak_kb / 1024, 1),
    }


# --- the whole bench ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "kernel": platform.release()}


def representative(rounds: list[dict[str, Any]], rate: float | None) -> dict[str, Any]:
    """One worker count's run to report out of its rounds (taken in turns with the other counts, so
    a slow spell of the machine falls on all of them): the median by µs/packet, or with an offered
    rate the one that dropped most, since a link that drops once is not sustained. Every round's
    µs/packet and drops go with it."""
    by_speed = sorted(rounds, key=lambda r: r["us_per_packet"])
    pick = by_speed[(len(by_speed) - 1) // 2]
    if rate is not None:
        pick = max(by_speed, key=lambda r: r["drops"]) if any(r["drops"] for r in rounds) else pick
    if len(rounds) == 1:
        return pick
    return {**pick, "rounds_us_per_packet": [r["us_per_packet"] for r in rounds],
            "rounds_drops": [r["drops"] for r in rounds]}


def recommend(runs: list[dict[str, Any]], rate: float | None) -> dict[str, Any]:
    """Throughput: the fewest workers within 5 % of the best. Offered rate: the fewest with no drop."""
    if rate is None:
        best = max(r["packets_per_second"] for r in runs)
        pick = min((r for r in runs if r["packets_per_second"] >= (1 - WITHIN_BEST) * best), key=lambda r: r["workers"])
        return {"workers": pick["workers"], "packets_per_second": pick["packets_per_second"],
                "text": f"recommendation: {pick['workers']} worker(s), within {WITHIN_BEST:.0%} of the best "
                        f"throughput; sustains about {pick['packets_per_second']:,.0f} packets/s with this mix"}
    clean = [r for r in runs if r["drops"] == 0]
    if clean:
        pick = min(clean, key=lambda r: r["workers"])
        return {"workers": pick["workers"], "packets_per_second": rate,
                "text": f"recommendation: at {rate:,.0f} packets/s offered, {pick['workers']} worker(s) keep "
                        f"drops at zero"}
    least = min(runs, key=lambda r: (r["drops"], r["workers"]))
    share = least["drops"] / max(1, least["captured"])
    return {"workers": None, "packets_per_second": rate,
            "text": f"recommendation: no tested worker count keeps drops at zero at {rate:,.0f} packets/s "
                    f"(fewest: {least['workers']} worker(s), {least['drops']:,} dropped, {share:.1%})"}


def _pct(values: list[float]) -> str:
    return " ".join(f"{v:.0f}" for v in values)


def table(runs: list[dict[str, Any]], rate: float | None) -> list[str]:
    """The results as aligned text: one row per worker count."""
    head = ["workers"]
    if rate is not None:
        head += ["offered/s", "drops", "drop %"]
    head += ["packets/s", "µs/packet", "balance %", "peak ring", "CPU % capture|workers|aggregator",
             "PSS MB capture|workers|aggregator|total"]
    rows = [head]
    for r in runs:
        workers = [k for k in r["cpu_percent"] if k.startswith("worker-")]
        row = [str(r["workers"])]
        if rate is not None:
            row += [f"{r['achieved_offered_pps']:,.0f}", f"{r['drops']:,}",
                    f"{100 * r['drops'] / max(1, r['captured']):.2f}"]
        cpu, pss = r["cpu_percent"], r["pss_mb"]
        row += [
            f"{r['packets_per_second']:,.0f}",
            f"{r['us_per_packet']:.3f}",
            "/".join(f"{100 * b:.0f}" for b in r["balance"]),
            f"{max(r['peak_ring_occupancy'], default=0)}/{r['ring_slots']}",
            f"{cpu.get('capture', 0):.0f} | {_pct([cpu[k] for k in workers])} | {cpu.get('aggregator', 0):.0f}",
            f"{pss.get('capture', 0):.0f} | {_pct([pss.get(k, 0) for k in workers])} | "
            f"{pss.get('aggregator', 0):.0f} | {r['pss_mb_total']:.0f}",
        ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return ["  ".join(cell.rjust(w) if i < len(head) - 2 else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]


def run_bench(cfg: SensorConfig, options: BenchOptions, out: TextIO | None = None,
              err: TextIO | None = None) -> dict[str, Any]:
    """Prepare, replay once per worker count, print the table and the recommendation."""
    out, err = out or sys.stdout, err or sys.stderr
    options.check()
    with tempfile.TemporaryDirectory(prefix="maltrail-bench-") as work:
        what = (f"capture {options.capture}" if options.capture
                else f"{options.packets:,}-packet {mix_label(options)} capture")
        trails = options.trails or f"generated {options.trail_rows:,}-row trail set"
        print(f"preparing: {trails}, {what} ...", file=err, flush=True)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            prepared = pool.submit(prepare, cfg, options, work).result()
        print(f"prepared in {prepared.seconds:.1f} s: {prepared.trail_entries:,} trails, {prepared.packets:,} "
              f"packets ({prepared.bytes / max(1, prepared.packets):.0f}-byte mean frame)", file=err, flush=True)
        turns = [workers for _ in range(options.rounds) for workers in options.workers]
        bar = ProgressBar(prepared.packets * len(turns), options.progress, err)
        every: list[dict[str, Any]] = []
        for i, workers in enumerate(turns):
            run_cfg = replace(cfg, name="bench", trails=prepared.index, custom_trails=[], workers=workers,
                              log_dir=str(Path(work) / f"logs-{workers}"),
                              status_file=str(Path(work) / f"status-{workers}.json"))
            sampler = ProcessSampler()
            monitor = _Monitor(sampler, bar, i * prepared.packets)
            bar.text = f"{workers} worker(s), run {i + 1}/{len(turns)}"
            from engine.sensor import run_sensor

            summary = run_sensor(run_cfg, [Path(prepared.capture)], offered_pps=options.rate, monitor=monitor)
            if summary.interrupted:  # the sensor drained and stopped: so does the bench
                bar.close()
                raise KeyboardInterrupt
            every.append(_run_result(workers, summary, sampler, monitor))
        bar.close()
    runs = [representative([r for r in every if r["workers"] == workers], options.rate) for workers in options.workers]
    advice = recommend(runs, options.rate)
    result = {
        "machine": machine(),
        "options": {k: v for k, v in asdict(options).items() if k not in ("progress", "json_path")},
        "trails": {"source": prepared.trail_source, "entries": prepared.trail_entries},
        "capture": {"source": options.capture or f"generated ({mix_label(options)})", "packets": prepared.packets,
                    "bytes": prepared.bytes, "mean_frame": round(prepared.bytes / max(1, prepared.packets), 1)},
        "config": {"batch_packets": cfg.batch_packets, "ring_slots": cfg.ring_slots, "ring_slot_kb": cfg.ring_slot_kb},
        "runs": runs,
        "recommendation": advice,
    }
    mode = f"offered at {options.rate:,.0f} packets/s" if options.rate else "as fast as possible"
    print(f"{result['capture']['source']}: {prepared.packets:,} packets, {result['capture']['mean_frame']:.0f}-byte "
          f"mean frame, {prepared.trail_entries:,} trails, replayed {mode}", file=out)
    print("\n".join(table(runs, options.rate)), file=out)
    if options.rounds > 1:
        print(f"median of {options.rounds} rounds taken in turns; µs/packet of each: " + "; ".join(
            f"{r['workers']} worker(s) " + " ".join(f"{v:.3f}" for v in r["rounds_us_per_packet"]) for r in runs),
            file=out)
    if options.rate:
        short = [r for r in runs if r["achieved_offered_pps"] < (1 - WITHIN_BEST) * options.rate]
        for r in short:
            print(f"note: with {r['workers']} worker(s) the capture side offered only "
                  f"{r['achieved_offered_pps']:,.0f} packets/s", file=out)
    print(advice["text"], file=out, flush=True)
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(result, indent=1) + "\n")
    return result
