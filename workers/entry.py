"""The targets the sensor starts its children with, named without importing what they run.

The fork server has imported the worker's modules (`workers/preload.py`); the sensor process
never runs them, so it does not pay for importing them at its start. The aggregator imports its
own modules (about 15 ms) after its fork, while the workers map the index: one process, so there
are no pages to share, and the server forks the first child that much sooner.
"""

from __future__ import annotations

from typing import Any


def worker(*args: Any) -> None:
    """`workers.worker.run_worker` in a child."""
    from workers.worker import run_worker

    run_worker(*args)


def aggregator(*args: Any) -> None:
    """`engine.aggregator.run_aggregator` in a child; its modules' objects join the frozen ones."""
    from engine.aggregator import run_aggregator
    from workers import collector

    collector.settle()
    run_aggregator(*args)
