"""Settings for the whole test session."""

import signal

# Tests stop sensors with SIGINT, as a terminal's Ctrl-C does. A suite started with SIGINT ignored (a
# script's background job, nohup) would hand that on to every sensor it starts, which would then
# rightly ignore it; with Python's own handler here, the processes the tests start get the default.
signal.signal(signal.SIGINT, signal.default_int_handler)
