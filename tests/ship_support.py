"""A sensor side (event writer + real `maltrail ship`) and a server side (real `maltrail server`
with [collect]) around the real nats-server of `nats_support`, and the comparison of their logs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nats_support import secret_file, wait_for, write_config
from webui_support import PASSWORDS as WEB_PASSWORDS
from webui_support import Server, add_user, start_server

from engine.eventlog import DailyLog, Event


def sensor_config(root: Path, name: str, servers: list[str], **ship: Any) -> Path:
    sensor = {"name": name, "log_dir": str(root / name)}
    sensor.update(ship.pop("sensor", {}))
    values = {"servers": servers, "user": ship.pop("user", name),
              "password_file": ship.pop("password_file") if "password_file" in ship else secret_file(root, name),
              "heartbeat_seconds": 1, **ship}
    return write_config(root / f"{name}.toml", {"sensor": sensor, "ship": values})


def server_config(root: Path, servers: list[str], **collect: Any) -> Path:
    values = {"servers": servers, "user": "collector", "password_file": secret_file(root, "collector"),
              "stale_seconds": 3, **collect}
    return write_config(root / "server.toml", {"server": {"log_dir": str(root / "server")}, "collect": values})


def start_shipper(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "ship", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def start_collecting_server(root: Path, config: Path) -> Server:
    users = root / "users.json"
    if not users.exists():
        assert add_user(users, "admin", WEB_PASSWORDS["admin"], "--admin").returncode == 0
    return start_server(root / "server", users, "-c", str(config))


def events(count: int, start: int, sensor_ip: str = "10.0.0.1") -> list[Event]:
    """`count` distinct events of one day (their usec makes every line different)."""
    now = int(time.time())
    return [(now, (start + i) % 1_000_000, sensor_ip, 1024 + (start + i) // 1_000_000, "198.51.100.66", 80, "TCP",
             "IP", "198.51.100.66", "known attacker", "(static)") for i in range(count)]


def write_events(log_dir: Path, sensor: str, batches: list[list[Event]], pause: float = 0.0) -> None:
    log = DailyLog(log_dir, sensor)
    try:
        for batch in batches:
            log.write(batch)
            time.sleep(pause)
    finally:
        log.close()


def day_lines(folder: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted(folder.glob("*.log"))}


def collected(root: Path, sensor: str) -> dict[str, list[str]]:
    return day_lines(root / "server" / "sensors" / sensor)


def line_count(files: dict[str, list[str]]) -> int:
    return sum(len(v) for v in files.values())


def wait_collected(root: Path, sensor: str, expected: int, timeout: float = 90.0) -> dict[str, list[str]]:
    wait_for(lambda: line_count(collected(root, sensor)) >= expected, timeout, 0.2, f"{expected} events of {sensor}")
    time.sleep(0.5)  # anything past the expected count (a duplicate) would show now
    return collected(root, sensor)


