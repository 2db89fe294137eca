"""The garbage-collector settings of the sensor's worker and aggregator processes.

`freeze` moves every object alive now (the fork server's imports) out of the collector's reach:
otherwise the first collection in each child writes to every object header and copies the whole
inherited heap, one private copy per worker. The thresholds are raised because these processes
create almost no reference cycles, while the aggregator keeps its heuristic state in hundreds of
thousands of small sets and tuples: the default thresholds spent about a quarter of its time
(0.51 -> 0.39 µs/packet on the mixed capture) re-scanning them. Benchmarks of worker costs apply
the same settings, so they measure the collector the workers really run with.
"""

import gc

THRESHOLDS = (50_000, 20, 100)


def settle() -> None:
    """Freeze what exists and raise the collection thresholds."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
