"""The `maltrail` command: sensor, status, bench, trails build, check, demo, server, user.

Control code only: argument parsing, configuration and error reporting. Every expected failure
ends as one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from engine.config import ConfigError, SensorConfig, load_config, load_update_config
from engine.mixes import DEFAULT_PACKETS, DEFAULT_TRAIL_ROWS, DEFAULT_WORKERS, MIXES, UniqueShares
from engine.processes import start_process_server
from engine.ship.cli import register as register_ship
from engine.ship.cli import ship_lines, ship_status, shipper_beside
from engine.trails.ignore import IgnoreRulesError
from engine.trails.whitelist import WhitelistError
from engine.update.errors import UpdateError

if TYPE_CHECKING:
    from engine.update.timer import UpdateTimer
from webui.cli import register as register_webui

LIGHT_ERRORS = (ConfigError, WhitelistError, IgnoreRulesError, UpdateError)


def expected_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line. Commands import what they run when they run it (start-up of
    `trails build`, `check` or `update` does not pay for the sensor's or the dashboard's modules;
    the sensor starts its fork server before importing numpy); an error of a module is only
    raised once that module is loaded anyway."""
    from engine.index.build import IndexBuildError
    from engine.index.fileformat import IndexFormatError
    from engine.livestats import StatusError
    from engine.pcapio import CaptureError
    from engine.sensor import SensorError
    from engine.trails.sources import TrailSourceError

    return (*LIGHT_ERRORS, CaptureError, IndexFormatError, StatusError, IndexBuildError, TrailSourceError,
            SensorError)
STATE_EXIT = {"running": 0, "stopped": 1, "stale": 1}


def _config_path(args: argparse.Namespace) -> Path | None:
    path = Path(args.config) if args.config else None
    if path is None and Path("maltrail.toml").is_file():
        path = Path("maltrail.toml")
    return path


def _config(args: argparse.Namespace) -> SensorConfig:
    return load_config(_config_path(args))


def cmd_sensor(args: argparse.Namespace) -> int:
    start_process_server()  # imports what the workers need while this process imports the rest
    cfg = _config(args)
    for name in ("trails", "log_dir", "workers", "bpf", "snaplen", "metrics"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.no_promisc:
        cfg.promisc = False
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise ConfigError(f"--workers: {args.workers} is out of range (1..64)")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError(f"--rate: {args.rate} must be > 0 packets/s")
    if args.report is not None and not 0 <= args.report <= 86400:
        raise ConfigError(f"--report: {args.report} is out of range (0..86400 seconds)")
    interface = args.interface or (cfg.interface if not args.read else None)
    timer = _update_timer(args, cfg)
    try:
        from engine.sensor import run_sensor

        with shipper_beside(_config_path(args), cfg):
            summary = run_sensor(cfg, [Path(p) for p in args.read or []], interface, report_seconds=args.report,
                                 offered_pps=args.rate, on_reloader=timer.start if timer is not None else None)
    finally:
        if timer is not None:
            timer.stop()
    print("\n".join(summary.lines()))
    return 0


def _update_timer(args: argparse.Namespace, cfg: SensorConfig) -> UpdateTimer | None:
    """With `[update] sensor_updates`, the sensor owns the update: a missing index is built before
    the sensor starts (a fresh install detects real threats after one command), later ones every
    period while it runs."""
    path = _config_path(args)
    ucfg = load_update_config(path)
    if not ucfg.sensor_updates:
        return None
    from engine.update.timer import UpdateTimer, check_owner

    index = check_owner(cfg, ucfg)
    timer = UpdateTimer(path.resolve() if path is not None else None, index, ucfg)
    if not index.exists() and timer.run_once() != 0:
        raise UpdateError(f"[update] sensor_updates: the first update of {index} failed (see above)")
    return timer


def _status_path(args: argparse.Namespace) -> Path:
    if args.status_file:
        return Path(args.status_file)
    if args.log_dir:
        return Path(args.log_dir) / "sensor-status.json"
    cfg = _config(args)
    return Path(cfg.status_file) if cfg.status_file else Path(cfg.log_dir).expanduser() / "sensor-status.json"


def _show_status(path: Path, as_json: bool, watching: bool, ship: dict | None = None) -> int:
    from engine.livestats import StatusError, read_status, sensor_state, status_text

    try:
        status = read_status(path)
    except StatusError as exc:
        if ship is not None and not as_json:  # the shipper's state is worth showing without a sensor
            print("\n".join([f"sensor: {exc}", *ship_lines(ship)]), flush=True)
            return 1
        if not watching:
            raise
        print(json.dumps({"state": "absent", "reason": str(exc)}) if as_json else f"waiting: {exc}", flush=True)
        return 1
    state, why = sensor_state(status)
    shipping = {"ship": ship} if ship is not None else {}
    if as_json:
        print(json.dumps({"state": state, "reason": why, **status, **shipping}, indent=None if watching else 1),
              flush=True)
    else:
        print("\n".join(status_text(status, state, why) + (ship_lines(ship) if ship is not None else [])),
              flush=True)
    return STATE_EXIT[state]


def cmd_status(args: argparse.Namespace) -> int:
    path = _status_path(args)
    log_dir = Path(args.log_dir) if args.log_dir else None
    if not args.watch:
        return _show_status(path, args.json, False, ship_status(_config_path(args), log_dir))
    if args.interval <= 0:
        raise ConfigError(f"--interval: {args.interval} must be > 0 seconds")
    clear = sys.stdout.isatty() and not args.json
    while True:
        if clear:
            print("\x1b[H\x1b[2J", end="")
        elif not args.json:
            print()
        _show_status(path, args.json, True, ship_status(_config_path(args), log_dir))
        time.sleep(args.interval)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.read and args.mix:
        raise ConfigError("-r and --mix: give a capture or a traffic mix to generate, not both")
    if args.read and args.packets is not None:
        raise ConfigError("-r and --packets: a given capture is replayed whole")
    if args.trails and args.trail_rows is not None:
        raise ConfigError("--trails and --trail-rows: --trail-rows sizes the generated trail set only")
    if args.read and (args.seed is not None or args.share):
        raise ConfigError(f"-r and {'--seed' if args.seed is not None else '--share'}: a given capture is replayed "
                          "as it is")
    from engine.benchmark import BenchOptions, parse_shares, parse_workers, run_bench

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    options = BenchOptions(mix=args.mix or "unique", capture=args.read, workers=parse_workers(args.workers),
                           packets=DEFAULT_PACKETS if args.packets is None else args.packets, trails=args.trails,
                           trail_rows=DEFAULT_TRAIL_ROWS if args.trail_rows is None else args.trail_rows,
                           rate=args.rate, json_path=args.json, progress=progress,
                           seed=1 if args.seed is None else args.seed, rounds=args.rounds,
                           shares=parse_shares(args.share) if args.share else None)
    run_bench(_config(args), options)
    return 0


def cmd_trails_build(args: argparse.Namespace) -> int:
    from engine.index.build import build_index_file

    meta = build_index_file(args.sources, Path(args.out), [Path(w) for w in args.whitelist],
                            not args.no_default_whitelist)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"{args.out}: {meta['counts']['entries']} trails ({counts}) in {meta['build_seconds']} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.trails:
        cfg.trails = args.trails
    with tempfile.TemporaryDirectory(prefix="maltrail-check-") as work:
        from engine.index.mapped import TrailIndex
        from engine.sensor import prepare_index

        index = TrailIndex(prepare_index(cfg, Path(work)))
        results = [index.check(q) for q in args.indicators]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        for r in results:
            if r.found:
                print(f"found      {r.query}  trail={r.trail}  info={r.info}  reference={r.reference}")
            else:
                print(f"not found  {r.query}")
    return 0 if any(r.found for r in results) else 1


def cmd_update(args: argparse.Namespace) -> int:
    from engine.update.feeds import FeedError
    from engine.update.fetch import FetchError
    from engine.update.runner import UpdateOptions, cache_dir, index_path, run_update
    from engine.update.state import load_state, status_lines, status_rows

    path = _config_path(args)
    cfg, ucfg = load_config(path), load_update_config(path)
    out = index_path(cfg, args.out)
    if args.status:
        state_file = cache_dir(ucfg, out) / "state.json"
        rows = status_rows(load_state(state_file), ucfg.period_seconds)
        if args.json:
            print(json.dumps({"index": str(out), "sources": rows}, indent=1))
        elif rows:
            print("\n".join(status_lines(rows)))
        else:
            print(f"no update has run yet for {out} (no {state_file})")
        return 0 if rows and all(r["state"] in ("ok", "disabled") for r in rows) else 1
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    options = UpdateOptions(out, args.offline, only, args.force, _path(args.bundle), _path(args.from_bundle))
    try:
        report = run_update(cfg, ucfg, options)
    except (FeedError, FetchError) as exc:  # configuration-level: a feed definition or a proxy URL
        raise UpdateError(str(exc)) from None
    except OSError as exc:  # the index or cache folder cannot be written (permissions, disk full)
        raise UpdateError(f"{exc.filename or out}: {exc.strerror or exc}; the installed index is unchanged") from None
    if args.json:
        print(json.dumps({"index": str(report.out), "installed": report.installed, "trails": report.entries,
                          "previous": report.previous, "seconds": round(report.seconds, 3),
                          "sources": status_rows(report.state, ucfg.period_seconds)}, indent=1))
    else:
        print(report.line())
    return 0


def cmd_config_import(args: argparse.Namespace) -> int:
    from engine.migrate import import_config, render, report_lines

    imported = import_config(Path(args.source))
    text = render(imported)
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            raise ConfigError(f"{out}: exists (--force replaces it)")
        out.write_text(text)
        print("\n".join(report_lines(imported)))
        print(f"written: {out}")
    else:
        print(text, end="")
        print("\n".join(report_lines(imported)), file=sys.stderr)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from engine.selftest import run_selftest

    return run_selftest(_config_path(args), args.interface)


def _path(text: str | None) -> Path | None:
    return Path(text).expanduser() if text else None


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(Path(args.out), args.packets, args.workers, None if args.no_server else args.listen, args.mix)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maltrail", description="Network threat-detection sensor")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sensor", help="replay capture files or capture live, writing events")
    p.add_argument("-c", "--config", help="configuration file (default: ./maltrail.toml if present)")
    p.add_argument("-r", "--read", action="append", metavar="CAPTURE", help="pcap/pcapng file (repeatable, in order)")
    p.add_argument("-i", "--interface", help="capture live on this interface (or 'any')")
    p.add_argument("--trails", help="index file, trails.csv or static trail folder")
    p.add_argument("--log-dir", dest="log_dir", help="directory of the daily event files")
    p.add_argument("--workers", type=int, help="matcher worker processes")
    p.add_argument("--bpf", help="BPF capture filter (live)")
    p.add_argument("--snaplen", type=int, help="snap length (live)")
    p.add_argument("--no-promisc", action="store_true", help="do not put the interface in promiscuous mode")
    p.add_argument("--report", type=float, metavar="SECONDS",
                   help="one-line report every SECONDS (default: [sensor] report_seconds live, none for replays)")
    p.add_argument("--rate", type=float, metavar="PPS",
                   help="replay the files as a busy link: PPS packets/s, a full ring drops (as live)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics")
    p.set_defaults(func=cmd_sensor)

    p = sub.add_parser("status", help="live counters of a running sensor (drops, rates, rings, workers)")
    p.add_argument("-c", "--config", help="configuration file for log_dir / status_file (default: ./maltrail.toml)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--log-dir", dest="log_dir", help="the sensor's log directory")
    where.add_argument("--status-file", dest="status_file", help="the sensor's status file")
    p.add_argument("--json", action="store_true", help="print the status as JSON (with state and reason)")
    p.add_argument("--watch", action="store_true", help="print again every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between prints with --watch (default 1)")
    p.set_defaults(func=cmd_status)
    register_ship(sub)

    p = sub.add_parser("bench", help="replay a traffic mix for several worker counts: throughput, drops, advice")
    p.add_argument("-c", "--config", help="sensor configuration to bench (default: ./maltrail.toml if present)")
    p.add_argument("--mix", choices=list(MIXES), help="traffic mix to generate (default: unique)")
    p.add_argument("-r", "--read", metavar="CAPTURE", help="replay this pcap/pcapng instead of generating one")
    p.add_argument("--packets", type=int, help=f"packets to generate (default {DEFAULT_PACKETS:,})")
    p.add_argument("--seed", type=int, help="seed of the generated capture (default 1; the trail set stays the same)")
    p.add_argument("--share", action="append", metavar="KIND=FRACTION",
                   help="per-packet share of one kind of the unique mix, e.g. quic=0.005, repeated for more kinds "
                        f"({', '.join(f'{k}={v:g}' for k, v in asdict(UniqueShares()).items())}; bulk TCP takes "
                        "the rest)")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="replay each worker count N times, in turns, and report the median (default 1)")
    p.add_argument("--workers", default=",".join(map(str, DEFAULT_WORKERS)), metavar="N,N,...",
                   help="worker counts to try (default %(default)s)")
    p.add_argument("--trails", metavar="INDEX|CSV|DIR", help="trail set (default: a generated one)")
    p.add_argument("--trail-rows", dest="trail_rows", type=int,
                   help=f"rows of the generated trail set (default {DEFAULT_TRAIL_ROWS:,})")
    p.add_argument("--rate", type=float, metavar="PPS",
                   help="offer packets at this rate, as a busy link (full rings drop), and report drops")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("trails", help="trail index commands")
    tsub = p.add_subparsers(dest="trails_command", required=True)
    b = tsub.add_parser("build", help="build an index file from trail sources")
    b.add_argument("--from", dest="sources", nargs="+", required=True, metavar="SOURCE",
                   help="static trail folder, trails.csv, or custom:FOLDER (merged in order)")
    b.add_argument("--out", required=True, metavar="INDEX")
    b.add_argument("--whitelist", action="append", default=[], metavar="FILE", help="extra whitelist file")
    b.add_argument("--no-default-whitelist", action="store_true", help="do not load the bundled whitelist")
    b.set_defaults(func=cmd_trails_build)

    p = sub.add_parser("check", help="look indicators up in the trails")
    p.add_argument("-c", "--config")
    p.add_argument("--trails", help="index file, trails.csv or static trail folder")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("indicators", nargs="+", metavar="INDICATOR")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("update", help="fetch static trails, feeds and custom URLs; build and install the index")
    p.add_argument("-c", "--config", help="configuration file (default: ./maltrail.toml if present)")
    p.add_argument("--out", metavar="INDEX",
                   help="index to write (default: [sensor] trails, else /var/lib/maltrail/trails.mtidx)")
    p.add_argument("--offline", action="store_true", help="no network: build from local sources and cached copies")
    p.add_argument("--only", metavar="FEED,...", help="refresh only these sources (feed names, static, url:URL); "
                   "the others keep their cached copies")
    p.add_argument("--json", action="store_true", help="print the result (or --status) as JSON")
    p.add_argument("--status", action="store_true",
                   help="one line per source: state, last attempt and success, HTTP status, rows, age")
    p.add_argument("--force", action="store_true", help="install even when the index shrinks below min_ratio")
    p.add_argument("--bundle", metavar="FILE", help="also write what was fetched and the index into FILE (tar.gz)")
    p.add_argument("--from-bundle", dest="from_bundle", metavar="FILE",
                   help="build from a bundle written by --bundle, with no network")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("import", help="translate a Maltrail maltrail.conf; every option is reported as mapped, "
                        "n/a (with why) or unsupported")
    c.add_argument("source", metavar="MALTRAIL_CONF")
    c.add_argument("-o", "--out", metavar="TOML", help="write the TOML here (default: standard output, the "
                   "report then goes to standard error)")
    c.add_argument("--force", action="store_true", help="replace an existing --out file")
    c.set_defaults(func=cmd_config_import)

    p = sub.add_parser("selftest", help="preflight: configuration, index, capture rights, log directory, "
                       "outputs, then a canary event through the full pipeline (exit 0 only if all pass)")
    p.add_argument("-c", "--config", help="configuration file (default: ./maltrail.toml if present)")
    p.add_argument("-i", "--interface", help="check capture rights on this interface (default: [sensor] interface)")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("demo", help="generate traffic and replay it through the full pipeline")
    p.add_argument("--out", default="demo-out", help="directory for the capture, trails and logs")
    p.add_argument("--packets", type=int, default=200_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mix", choices=list(MIXES), default="mixed",
                   help="background traffic mix (default: mixed; `unique`: every name, URL and SNI new)")
    p.add_argument("--no-server", action="store_true", help="do not start the dashboard after the replay")
    p.add_argument("--listen", default="127.0.0.1:8338", help="dashboard address (HOST:PORT)")
    p.set_defaults(func=cmd_demo)

    register_webui(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        print(f"maltrail: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maltrail: interrupted", file=sys.stderr)
        return 130


def exit_now(code: int) -> NoReturn:
    """Leave the process once the command is done, skipping the interpreter's teardown.

    The exit handlers still run (multiprocessing joins the sensor's children and removes its
    files, the segments' handler unlinks what is left); what is skipped is freeing every module
    and object one by one, 20-30 ms of each sensor run, with nothing left to write: the sensor's
    files are closed by then and only the standard streams are flushed here. A stream that cannot
    be flushed (a closed pipe) makes the exit status 120, as the interpreter's own exit would."""
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers Py_Finalize would run, before os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):  # ValueError: a stream closed by the command
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
