"""A sensor's heartbeat: who it is and how it is doing, from its status file and its shipper.

Output counters are copied generically: whatever the status file carries under `outputs`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.livestats import StatusError, drop_counts, read_status, sensor_state
from engine.version import package_version


def heartbeat(sensor: str, status_path: Path, ship: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The heartbeat message: sensor state, index generation and age, packets/s, drops, workers,
    output health and the shipper's own state (backlog, trail feed)."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {"sensor": sensor, "version": package_version(), "time": now, "ship": ship}
    try:
        status = read_status(status_path)
    except StatusError as exc:
        out.update(state="absent", reason=str(exc))
        return out
    state, why = sensor_state(status, now)
    index = status.get("index") or {}
    built = index.get("built_at")
    ring, kernel, interface = drop_counts(status)
    out.update(
        state=state, reason=why, status_updated=status["updated"],
        index={"generation": index.get("generation"), "trails": index.get("trails"), "built_at": built,
               "age_seconds": round(now - float(built), 1) if built else None,
               "reloads": index.get("reloads", 0), "reload_failures": index.get("reload_failures", 0),
               "last_reload_error": index.get("last_reload_error")},
        packets_per_second=(status.get("interval") or {}).get("processed_pps", 0.0),
        drops={"ring": ring, "kernel": kernel, "interface": interface},
        workers=len(status.get("per_worker_packets", [])),
        events_written=status.get("events_written", 0),
        outputs=status.get("outputs"))
    return out
