"""Imported once by the fork server that starts the sensor's processes.

Everything a worker or the aggregator needs is imported here, and so is everything the
`maltrail` command imports at its start (each child re-runs the parent's main module to resolve
its target); not the sensor's own modules, which no child runs: the server is on the sensor's
start-up path, and each module here delays the first process start.
Then `gc.freeze()` moves these objects out of the collector's reach: otherwise the first
collection in each child writes to every object header and copies the whole inherited heap,
one private copy per worker.

The collection thresholds are raised too: the aggregator keeps its heuristic state in hundreds of
thousands of small sets and tuples, and the default thresholds spent about a quarter of its time
(0.51 -> 0.39 µs/packet on the mixed capture) re-scanning them; these processes create almost no
reference cycles.
"""

import gc
import signal
import warnings

import engine.aggregator  # noqa: F401
import engine.cli  # noqa: F401
import workers.worker  # noqa: F401
from workers.heuristics import http_rules

# `python -m engine.cli` makes each child run the main module again as `__mp_main__`, while this
# preload has already imported it as `engine.cli`: runpy warns about that, harmlessly, in every child.
warnings.filterwarnings("ignore", message="'engine.cli' found in sys.modules", category=RuntimeWarning)

http_rules.prepare()  # the pattern prefilters: loaded once here, inherited by every worker
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the server started; still ignored
gc.freeze()
gc.set_threshold(50_000, 20, 100)
