"""Issue 12's targets in one table at the end of a benchmark run (`bash scripts/bench.sh -k unique`).

The benchmarks that measure a target record their figure here; with `MALTRAIL_BENCH_BASE` set, they
also record the base checkout's figure from the same run (by turns), and the table gives the ratio.
A pure-Python reference loop is timed when the run starts and when it ends: this 2-core machine
changes speed by up to 2x for minutes at a time, and the loop says which kind of minutes the figures
come from (the base ratios, measured by turns, do not depend on it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

REFERENCE_ITERATIONS = 300_000


@dataclass(frozen=True)
class Figure:
    what: str
    value: float
    unit: str
    target: float | None = None  # at most this
    base: float | None = None  # the base checkout's figure, same unit

    def line(self) -> str:
        target = f"≤ {self.target:g}" if self.target is not None else ""
        verdict = ("met" if self.value <= self.target else "NOT met") if self.target is not None else ""
        base = f"{self.base:.3f} ({self.base / self.value:.2f}x)" if self.base and self.value > 0 else ""
        return f"{self.what:<48} {self.value:>9.3f} {self.unit:<9} {target:<7} {verdict:<8} {base}"


FIGURES: list[Figure] = []
REFERENCE_MS: list[float] = []


def record(what: str, value: float, unit: str, target: float | None = None, base: float | None = None) -> None:
    FIGURES.append(Figure(what, value, unit, target, base))


def reference_ms() -> float:
    """Milliseconds of a fixed pure-Python loop: the machine's speed at this moment."""
    started, x = time.perf_counter(), 0
    for i in range(REFERENCE_ITERATIONS):
        x += i & 7
    return (time.perf_counter() - started) * 1e3


def table() -> list[str]:
    """The recorded figures, one line each, under a header; nothing when none was recorded."""
    if not FIGURES:
        return []
    lines = [f"{'what':<48} {'figure':>9} {'unit':<9} {'target':<7} {'':<8} base (base / this)"]
    lines += [figure.line() for figure in FIGURES]
    if REFERENCE_MS:
        lines.append(f"reference loop ({REFERENCE_ITERATIONS:,} iterations of pure Python) at the start and the end "
                     f"of the run: {' ms, '.join(f'{ms:.1f}' for ms in REFERENCE_MS)} ms")
    return lines
