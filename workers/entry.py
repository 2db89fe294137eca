"""The targets the sensor starts its children with, named without importing what they run.

The fork server has imported the worker's and the aggregator's modules (`workers/preload.py`);
the sensor process never runs them, so it does not pay for importing them at its start.
"""

from __future__ import annotations

from typing import Any


def worker(*args: Any) -> None:
    """`workers.worker.run_worker` in a child."""
    from workers.worker import run_worker

    run_worker(*args)


def aggregator(*args: Any) -> None:
    """`engine.aggregator.run_aggregator` in a child."""
    from engine.aggregator import run_aggregator

    run_aggregator(*args)
