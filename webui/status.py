"""Engine status for the dashboard: the aggregator's `sensor-status.json` plus derived rates.

The aggregator rewrites the file every second while it runs; a file older than a few seconds,
or one marked final, means no sensor is running. Packets per second come from the difference
between the last two snapshots this server has seen (the run average before that).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

STALE_SECONDS = 5.0


def engine_status(path: Path, memory: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        counters = data["counters"]
        updated = float(data["updated"])
        started = float(data["started"])
        per_worker = [int(p) for p in data.get("per_worker_packets", [])]
        busy = [float(b) for b in data.get("per_worker_busy_seconds", [])]
        rings = list(data.get("rings", []))
    except (OSError, ValueError, KeyError, TypeError):
        return {"running": False}
    packets = int(counters.get("packets", 0))
    prev = memory.get("last")
    if prev and updated > prev[0] and packets >= prev[1]:
        pps = (packets - prev[1]) / (updated - prev[0])
    else:
        pps = packets / (updated - started) if updated > started else 0.0
    if not prev or updated != prev[0]:
        memory["last"] = (updated, packets)
    total = sum(per_worker) or 1
    running = not data.get("final", False) and time.time() - updated < STALE_SECONDS
    return {
        "running": running,
        "sensor": str(data.get("sensor", "")),
        "started": started,
        "updated": updated,
        "final": bool(data.get("final", False)),
        "packets_per_second": round(pps, 1),
        "counters": counters,
        "per_worker": [{"packets": p, "busy": busy[i] if i < len(busy) else 0.0, "share": round(p / total, 4)}
                       for i, p in enumerate(per_worker)],
        "rings": rings,
        "drops": {
            "ring_packets": sum(int(r.get("dropped_packets", 0)) for r in rings),
            "ring_batches": sum(int(r.get("dropped_batches", 0)) for r in rings),
            "malformed": int(counters.get("malformed", 0)),
        },
        "events": {k: int(data.get(f"events_{k}", 0)) for k in ("written", "suppressed", "ignored", "whitelisted")},
        "local_log": bool(data.get("local_log", True)),
        "outputs": [o for o in data.get("outputs", []) if isinstance(o, dict)],
    }
