"""The sensors view: one row per sensor status file the server can read.

The configured status file ([server]/[sensor] status_file) and every `sensor-status*.json`
beside it (a second sensor on the same log directory writes its own, e.g.
`sensor-status-edge.json`). Per sensor: whether it runs, its last event (from the index, by
sensor name), events and packets per second (from the last two snapshots this server saw),
ring drops, and the age of the trail index it matches with.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from webui.status import engine_status

RECENT_EVENTS = 200_000  # how far back the last event of a sensor is looked for


def status_files(configured: Path) -> list[Path]:
    found = {configured} if configured.exists() else set()
    found.update(p for p in configured.parent.glob("sensor-status*.json") if p.is_file())
    return sorted(found)


def _rate(memory: dict[str, Any], key: str, updated: float, value: int, started: float) -> float:
    prev = memory.get(key)
    if prev and updated > prev[0] and value >= prev[1]:
        rate = (value - prev[1]) / (updated - prev[0])
    else:
        rate = value / (updated - started) if updated > started else 0.0
    if not prev or updated != prev[0]:
        memory[key] = (updated, value)
    return round(rate, 1)


def sensor_rows(configured: Path, memory: dict[str, Any]) -> list[dict[str, Any]]:
    """Status of every sensor file (no index access: see `last_events`)."""
    out = []
    now = time.time()
    for path in status_files(configured):
        state = engine_status(path, memory.setdefault(f"pps:{path}", {}))
        if "updated" not in state:
            out.append({"file": path.name, "sensor": "", "running": False, "error": "unreadable status file"})
            continue
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        index = raw.get("index") if isinstance(raw.get("index"), dict) else {}
        built = index.get("built_at")
        written = state["events"]["written"]
        out.append({
            "file": path.name, "sensor": state["sensor"], "running": state["running"], "updated": state["updated"],
            "packets_per_second": state["packets_per_second"],
            "events_per_second": _rate(memory, f"eps:{path}", state["updated"], written, state["started"]),
            "events_written": written, "drops": state["drops"],
            "index": {"generation": index.get("generation"), "trails": index.get("trails"), "built_at": built,
                      "age_seconds": round(now - float(built)) if isinstance(built, (int, float)) else None},
        })
    return out


def last_events(conn: sqlite3.Connection, names: list[str]) -> dict[str, float]:
    """Time of each sensor's latest event among the most recent ones in the index."""
    top = int(conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0])
    out: dict[str, float] = {}
    for name in names:
        row = conn.execute("SELECT max(time) FROM events WHERE id > ? AND sensor = ?",
                           (top - RECENT_EVENTS, name)).fetchone()
        if row and row[0] is not None:
            out[name] = float(row[0])
    return out
