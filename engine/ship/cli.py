"""`maltrail ship`, the shipper started beside `maltrail sensor` when `[ship]` is set, and the
shipper's lines in `maltrail status`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.config import ConfigError, SensorConfig, ShipConfig, load_config, load_nats_configs
from engine.ship.files import read_json

STOP_SECONDS = 15.0  # the shipper's own drain (10 s) and its clean-up


def _config_path(args: argparse.Namespace) -> Path | None:
    path = Path(args.config) if args.config else None
    if path is None and Path("maltrail.toml").is_file():
        path = Path("maltrail.toml")
    return path


def ship_config(path: Path | None) -> ShipConfig | None:
    return load_nats_configs(path)[0]


def cmd_ship(args: argparse.Namespace) -> int:
    path = _config_path(args)
    ship = ship_config(path)
    if ship is None:
        raise ConfigError(f"{path or 'no configuration file'}: no [ship] section: nothing to ship to")
    cfg = load_config(path)
    if args.log_dir:
        cfg.log_dir = args.log_dir
    from engine.ship.shipper import run_shipper  # nats-py only when shipping

    return run_shipper(cfg, ship)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ship", help="send the local event log to the server over NATS JetStream ([ship])")
    p.add_argument("-c", "--config", help="configuration file (default: ./maltrail.toml if present)")
    p.add_argument("--log-dir", dest="log_dir", help="directory of the daily event files to ship")
    p.set_defaults(func=cmd_ship)


@contextlib.contextmanager
def shipper_beside(path: Path | None, cfg: SensorConfig) -> Iterator[None]:
    """With `[ship]`, `maltrail ship` runs beside the sensor (a process of its own: the capture
    loop never waits on the network); stopped with SIGTERM at the end, after it has shipped what
    is left while NATS answers. Without `[ship]`: nothing."""
    ship = ship_config(path)
    if ship is None:
        yield
        return
    from engine.ship.shipper import check_name

    check_name(cfg.sensor_name)
    command = [sys.executable, "-m", "engine.cli", "ship", "--log-dir", str(cfg.log_dir)]
    if path is not None:
        command += ["-c", str(path)]
    proc = subprocess.Popen(command, start_new_session=True)  # Ctrl-C reaches the sensor only
    from engine.ship.shipper import ship_paths

    status_path = ship_paths(cfg, ship)[1]
    try:
        yield
    finally:
        deadline = time.monotonic() + STOP_SECONDS  # its SIGTERM handler is in place once it reports
        while proc.poll() is None and time.monotonic() < deadline and not _reported(status_path, proc.pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reported(status_path: Path, pid: int) -> bool:
    try:
        return read_json(status_path).get("pid") == pid
    except OSError:
        return False


def ship_status(path: Path | None, log_dir: Path | None) -> dict[str, Any] | None:
    """The shipper's status file, when `[ship]` is configured."""
    ship = ship_config(path)
    if ship is None:
        return None
    cfg = load_config(path)
    from engine.ship.shipper import ship_paths

    if log_dir is not None:
        cfg.log_dir = str(log_dir)
    status_path = ship_paths(cfg, ship)[1]
    try:
        return read_json(status_path) or {"missing": str(status_path)}
    except OSError as exc:
        return {"missing": str(exc)}


def ship_lines(state: dict[str, Any], now: float | None = None) -> list[str]:
    """`maltrail status` lines: connection, backlog, and the trail feed."""
    now = time.time() if now is None else now
    if "missing" in state:
        return [f"  shipping     no shipper status yet ({state['missing']})"]
    age = now - float(state.get("updated", 0))
    backlog = f"{int(state.get('backlog_bytes', 0)):,} bytes not yet shipped"
    if state.get("stopped") or age > 10:
        head = f"  shipping     shipper not running (last seen {age:,.0f} s ago), {backlog}"
    elif state.get("connected"):
        head = f"  shipping     connected to {state.get('server')}, {int(state.get('shipped', 0)):,} events shipped, " \
               f"{backlog}"
    else:
        head = f"  shipping     NOT connected to {', '.join(state.get('servers', []))}, {backlog} (kept locally)"
    out = [head]
    if state.get("last_error"):
        out.append(f"  ship error   {state['last_error']}")
    trails = state.get("trails") or {}
    if trails.get("following"):
        installed = trails.get("installed") or "none"
        line = f"  trail feed   installed {installed[:23]}..., {trails.get('installs', 0)} fetched"
        if trails.get("last_error"):
            line += f"; {trails['last_error']}"
        out.append(line)
    return out
