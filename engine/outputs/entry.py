"""The outputs process's target, named without importing what it runs (the sensor process never
runs it, so it does not pay for importing the encoders)."""

from __future__ import annotations

from typing import Any

FEED_SLOTS = 32  # batches of events in flight to the outputs process
FEED_SLOT_BYTES = 256 << 10


def outputs(*args: Any) -> None:
    """`engine.outputs.process.run_outputs` in a child."""
    from engine.outputs.process import run_outputs

    run_outputs(*args)
