"""The multiprocessing context the sensor's processes come from, and starting its fork server early.

Kept apart from `engine/sensor.py` (numpy, the workers' and the aggregator's modules) so the
`sensor` command can start the fork server before it imports those: the server is a fresh
interpreter importing the same modules, and the two then run side by side instead of one after
the other.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from multiprocessing.context import BaseContext


def process_context() -> BaseContext:
    """Children are forked from a server that has already imported numpy and our modules: their
    code and imported state stay shared pages, so a worker costs little memory beyond its work."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*_main_module(), "workers.preload"])
    return ctx


def _main_module() -> list[str]:
    """`engine.cli` when it is the main module (`python -m engine.cli`), which every child then
    runs again: imported once by the server instead (10 ms of imports the `maltrail` entry point
    does not need in the server)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return ["engine.cli"] if spec is not None and spec.name == "engine.cli" else []


def start_process_server(fork: bool = False) -> None:
    """Start the fork server now (it takes a few tenths of a second to import its modules); the
    first process start would otherwise wait for all of it.

    With `fork`, the server (and the resource tracker, if it is not running yet) is this process
    forked instead of a new interpreter, whose start (25-30 ms, more on a busy machine) is then off
    the server's path; numpy, which both import, is imported once, before the fork (50-60 ms of
    CPU the start-up's two cores no longer pay twice). The entry point asks for that before it
    imports anything else, and it is done only while this process runs one thread
    (`_fork_passfds`); else the server is a new interpreter. It is started ignoring SIGINT and
    SIGTERM, as the children it forks must be: Ctrl-C goes to the whole foreground group and
    `systemctl stop` sends SIGTERM to every process of the unit, and only the sensor decides how
    the pipeline stops (a fork server killed by it made every child look dead, exit code 255).

    No process of the sensor uses BLAS, whose thread pool (started by importing numpy) spins
    for about 40 ms per process at start on cores the start-up needs: one thread is asked for,
    unless the environment already says otherwise, before this process or the server imports
    numpy."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    process_context()
    if fork:
        import numpy  # noqa: F401, PLC0415 - shared with the server: see the docstring

        fork = _one_thread()
    with _stop_signals_held(), _forking() if fork else contextlib.nullcontext():
        multiprocessing.forkserver.ensure_running()


def _one_thread() -> bool:
    """Whether this process runs a single thread (numpy's BLAS starts more when the environment
    asks for them): only then is a fork safe."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


@contextlib.contextmanager
def _forking() -> Iterator[None]:
    """multiprocessing starts its helper processes through `util.spawnv_passfds` (a new interpreter
    running a `-c` command, given a few descriptors); meanwhile, `_fork_passfds` does instead."""
    util = multiprocessing.util
    spawn = util.spawnv_passfds
    util.spawnv_passfds = _fork_passfds
    try:
        yield
    finally:
        util.spawnv_passfds = spawn


def _fork_passfds(path: str, args: Sequence[str], passfds: Sequence[int]) -> int:
    """`util.spawnv_passfds` by a fork that runs the command (`args` ends with `-c`, the command) in
    the child. The child keeps open only the standard streams and `passfds`, as the new interpreter
    would: above all not the write end of the pipe whose end tells the server that the sensor is
    gone. It leaves with `os._exit`: the exit handlers it inherited are the sensor's."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        keep = {0, 1, 2, *passfds}
        for fd in map(int, os.listdir("/proc/self/fd")):  # there: `_one_thread` read /proc already
            if fd not in keep:
                with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                    os.close(fd)
        exec(compile(args[-1], path, "exec"), {"__name__": "__main__"})  # noqa: S102 - multiprocessing's own command
        code = 0
    except SystemExit as done:  # how the server ends once the sensor is gone
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the exit status
        import traceback  # noqa: PLC0415 - only on this path

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM are ignored (what the server inherits across exec) and blocked (so a
    Ctrl-C or a SIGTERM in this window stays pending instead of being discarded, and reaches this
    process once its own handler is back): the pattern of the standard library's resource tracker."""
    signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
