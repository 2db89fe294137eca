"""The issue-12 target table the benchmarks print at the end of `bash scripts/bench.sh -k unique`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def targets(monkeypatch: pytest.MonkeyPatch):
    """A fresh copy of bench/targets.py (its registry empty)."""
    spec = importlib.util.spec_from_file_location("bench_targets_under_test", ROOT / "bench" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_table_says_met_or_not_and_gives_the_base_ratio(targets) -> None:
    assert targets.table() == []  # nothing measured: no table
    targets.record("new http request, worker CPU", 9.5, "µs/item", 10.0, 285.0)
    targets.record("pipeline, unique capture, 2 worker(s)", 0.85, "µs/packet", 0.8)
    targets.record("worker CPU, unique mix", 0.7, "µs/packet")
    targets.REFERENCE_MS.extend([15.0, 25.5])
    header, http, pipeline, worker, reference = targets.table()
    assert header.split()[:4] == ["what", "figure", "unit", "target"]
    assert http.split()[-5:] == ["≤", "10", "met", "285.000", "(30.00x)"]
    assert pipeline.split()[-3:] == ["0.8", "NOT", "met"]
    assert worker.split()[-2:] == ["0.700", "µs/packet"]
    assert reference.endswith("15.0 ms, 25.5 ms")


def test_reference_loop_takes_time(targets) -> None:
    assert targets.reference_ms() > 0
