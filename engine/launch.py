"""The `maltrail` command's entry point: for `maltrail sensor`, the fork server starts first.

The fork server imports numpy and the workers' modules (a fifth of a second). Started before
this process imports the command line, the configuration code and the command's modules, it
does that alongside them instead of after them: about 50 ms of every sensor start, which
forensics over many small captures pays each time.

A finished sensor command leaves without the interpreter's teardown (`engine.cli.exit_now`).
Nothing here imports more than `sys` before the server starts: `typing` alone is 5 ms."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command; the sensor command does not return (`exit_now`)."""
    args = sys.argv[1:] if argv is None else argv
    sensor = args[:1] == ["sensor"] and not {"-h", "--help"} & set(args)
    if sensor:
        from engine.processes import start_process_server  # noqa: PLC0415 - the point: before the rest

        start_process_server(fork=True)
    from engine.cli import exit_now  # noqa: PLC0415 - after the server's start
    from engine.cli import main as run  # noqa: PLC0415

    code = run(args)
    if sensor:
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
