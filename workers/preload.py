"""Imported once by the fork server that starts the sensor's processes.

What a worker needs is imported here: every worker shares these pages. Not the aggregator's
own modules (one process: it imports them after its fork, alongside the workers' start,
`workers.entry`), nor the sensor's, which no child runs: the server is on the sensor's start-up
path, and each module here delays the first process start. Each child re-runs the parent's main
module to resolve its target: the `maltrail` entry point is light, and a sensor run as
`python -m engine.cli` has the server import `engine.cli` too (`engine.processes`).
Then the collector is settled (`workers.collector`): these objects frozen out of its reach, its
thresholds raised.
"""

import signal
import warnings

import workers.worker  # noqa: F401
from workers import collector
from workers.heuristics import http_rules

# `python -m engine.cli` makes each child run the main module again as `__mp_main__`, while this
# preload has already imported it as `engine.cli`: runpy warns about that, harmlessly, in every child.
warnings.filterwarnings("ignore", message="'engine.cli' found in sys.modules", category=RuntimeWarning)

http_rules.prepare()  # the pattern prefilters: loaded once here, inherited by every worker
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the server started; still ignored
collector.settle()
