"""The `maltrail` command's entry point: for `maltrail sensor`, the fork server starts first.

The fork server imports numpy and the workers' modules (a fifth of a second). Started before
this process imports the command line, the configuration code and the command's modules, it
does that alongside them instead of after them: about 50 ms of every sensor start, which
forensics over many small captures pays each time.

A finished sensor command leaves without the interpreter's teardown (`exit_now`)."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def main(argv: list[str] | None = None) -> int:
    """Run the command; the sensor command does not return (`exit_now`)."""
    args = sys.argv[1:] if argv is None else argv
    sensor = args[:1] == ["sensor"] and not {"-h", "--help"} & set(args)
    if sensor:
        from engine.processes import start_process_server  # noqa: PLC0415 - the point: before the rest

        start_process_server()
    from engine.cli import main as run  # noqa: PLC0415 - after the server's start

    code = run(args)
    if sensor:
        exit_now(code)
    return code


def exit_now(code: int) -> NoReturn:
    """Leave the process once the command is done, skipping the interpreter's teardown.

    The exit handlers still run (multiprocessing joins the sensor's children and removes its
    files, the segments' handler unlinks what is left); what is skipped is freeing every module
    and object one by one, 20-30 ms of each sensor run, with nothing left to write: the sensor's
    files are closed by then and only the standard streams are flushed here."""
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers Py_Finalize would run, before os._exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
