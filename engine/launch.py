"""The `maltrail` command's entry point: for `maltrail sensor`, the fork server starts first.

The fork server imports numpy and the workers' modules (a fifth of a second). Started before
this process imports the command line, the configuration code and the command's modules, it
does that alongside them instead of after them: about 50 ms of every sensor start, which
forensics over many small captures pays each time."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sensor"] and not {"-h", "--help"} & set(args):
        from engine.processes import start_process_server  # noqa: PLC0415 - the point: before the rest

        start_process_server()
    from engine.cli import main as run  # noqa: PLC0415 - after the server's start

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
