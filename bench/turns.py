"""This checkout and a base checkout timed by turns, round after round, so that a spell of this
noisy machine slows both alike (`MALTRAIL_BENCH_BASE`, `MALTRAIL_STARTUP_BASE`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def checkouts(base: str | None) -> dict[str, Path]:
    """"this" checkout, and "base" when one is named."""
    return {"this": ROOT} | ({"base": Path(base).resolve()} if base else {})


def entry_point(checkout: Path) -> str:
    """The module `maltrail` runs in a checkout: older ones have no `engine.launch`."""
    return "engine.launch" if (checkout / "engine" / "launch.py").is_file() else "engine.cli"


def by_turns(benchmark: Any, places: dict[str, Path], rounds: int, run: Callable[[str, Path], float]
             ) -> dict[str, list[float]]:
    """Seconds of `run(name, checkout)` for each checkout, by turns over `rounds` rounds; each
    one's median goes into the benchmark's extra info."""
    times: dict[str, list[float]] = {name: [] for name in places}

    def one_round() -> None:
        for name, checkout in places.items():
            times[name].append(run(name, checkout))

    benchmark.pedantic(one_round, rounds=rounds)
    for name, measured in times.items():
        benchmark.extra_info[f"{name}_median_s"] = statistics.median(measured)
    return times
