"""Live counters: what the status file holds beyond the aggregator's own totals, and how it reads.

The aggregator rewrites `LOG_DIR/sensor-status.json` every second. Besides its totals it carries
what the capture process publishes in shared memory (packets read, libpcap's kernel receive and
drop counts) and rates over the last interval (per-worker packets/s and busy fraction), so a
sensor answers "is anything dropped, and where?" while it runs, and which trail index generation
it matches with. The same status feeds the sensor's periodic one-line report, `maltrail status`
and the exit summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.proctree import pid_alive
from shm.counters import CountersSpec, SharedCounters

STALE_SECONDS = 10.0  # the aggregator writes every second; this long without an update means stuck


class StatusError(Exception):
    """The status file cannot be read (missing, unreadable, not a status)."""


@dataclass(frozen=True)
class CaptureSource:
    """What the aggregator needs to describe the capture side (picklable)."""

    counters: CountersSpec
    interface: str | None
    files: tuple[str, ...]


class CaptureStatus:
    """Aggregator side: capture counters and interval rates for each status write."""

    def __init__(self, source: CaptureSource, workers: int) -> None:
        self.source = source
        self._counters = SharedCounters(source.counters)
        self._last: tuple[float, int, int, list[int], list[int]] | None = None
        self._workers = workers

    def fields(self, per_worker_packets: list[int], per_worker_busy_ns: list[int]) -> dict[str, Any]:
        c = self._counters.as_dict()
        now = time.monotonic()
        processed = sum(per_worker_packets)
        interval: dict[str, Any] = {"seconds": 0.0, "captured_pps": 0.0, "processed_pps": 0.0,
                                    "per_worker_pps": [0.0] * self._workers,
                                    "per_worker_busy_fraction": [0.0] * self._workers}
        if self._last is not None:
            then, captured0, processed0, packets0, busy0 = self._last
            dt = now - then
            if dt > 0:
                interval = {
                    "seconds": round(dt, 3),
                    "captured_pps": round((c["packets"] - captured0) / dt, 1),
                    "processed_pps": round((processed - processed0) / dt, 1),
                    "per_worker_pps": [round((a - b) / dt, 1)
                                       for a, b in zip(per_worker_packets, packets0, strict=True)],
                    "per_worker_busy_fraction": [round(min(1.0, (a - b) / 1e9 / dt), 4)
                                                 for a, b in zip(per_worker_busy_ns, busy0, strict=True)],
                }
        self._last = (now, c["packets"], processed, list(per_worker_packets), list(per_worker_busy_ns))
        kernel = None
        if c["kernel_valid"]:
            kernel = {"received": c["kernel_received"], "dropped": c["kernel_dropped"],
                      "interface_dropped": c["kernel_ifdropped"]}
        capture = {
            "source": "live" if self.source.interface else "file",
            "interface": self.source.interface,
            "files": list(self.source.files),
            "drop_when_full": bool(c["live"]),
            "offered_pps": c["offered_pps"] or None,
            "packets": c["packets"],
            "bytes": c["bytes"],
            "batches": c["batches"],
            "ring_dropped_packets": c["ring_dropped"],
            "kernel": kernel,
        }
        return {"capture": capture, "interval": interval}

    def close(self) -> None:
        self._counters.close()


def read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StatusError(f"{path}: no status file (no sensor has run with this log directory)") from None
    except OSError as exc:
        raise StatusError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError:
        raise StatusError(f"{path}: not a sensor status file (invalid JSON)") from None
    if not isinstance(data, dict) or "counters" not in data or "updated" not in data:
        raise StatusError(f"{path}: not a sensor status file")
    return data


def sensor_state(status: dict[str, Any], now: float | None = None) -> tuple[str, str]:
    """("running" | "stopped" | "stale", why): from the final flag, pid liveness and update age."""
    now = time.time() if now is None else now
    age = max(0.0, now - float(status["updated"]))
    pid = int(status.get("sensor_pid") or status.get("pid") or 0)
    if status.get("final"):
        return "stopped", f"sensor finished {_ago(age)}"
    if pid and not pid_alive(pid):
        return "stale", f"sensor pid {pid} is gone (killed?), last update {_ago(age)}"
    if age > STALE_SECONDS:
        return "stale", f"no update for {age:.0f} s (sensor pid {pid} alive but not publishing)"
    return "running", f"updated {_ago(age)}"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _per_worker(values: list[Any], fmt: str) -> str:
    return " ".join(f"w{i}={fmt.format(v)}" for i, v in enumerate(values))


def drop_counts(status: dict[str, Any]) -> tuple[int, int | None, int | None]:
    """(ring drops, kernel drops, interface drops); None where libpcap has no figure (files)."""
    ring = sum(int(r["dropped_packets"]) for r in status.get("rings", []))
    kernel = (status.get("capture") or {}).get("kernel")
    if not kernel:
        return ring, None, None
    return ring, int(kernel["dropped"]), int(kernel["interface_dropped"])


def report_line(previous: dict[str, Any] | None, current: dict[str, Any]) -> str:
    """The sensor's periodic line: rates since `previous` (or the last interval), drops (new since
    `previous` in brackets), ring occupancy now / peak, per-worker packets/s and busy fraction."""
    capture = current.get("capture") or {}
    rings = current.get("rings", [])
    ring_drops, kernel_drops, if_drops = drop_counts(current)
    workers = current["per_worker_packets"]
    busy = current.get("per_worker_busy_seconds", [0.0] * len(workers))
    if previous is not None and current["updated"] > previous["updated"]:
        dt = current["updated"] - previous["updated"]
        captured_pps = (capture.get("packets", 0) - (previous.get("capture") or {}).get("packets", 0)) / dt
        worker_pps = [(a - b) / dt for a, b in zip(workers, previous["per_worker_packets"], strict=True)]
        fractions = [min(1.0, (a - b) / dt) for a, b in zip(busy, previous.get("per_worker_busy_seconds", busy),
                                                             strict=True)]
        p_ring, p_kernel, _ = drop_counts(previous)
        new_ring, new_kernel = ring_drops - p_ring, (kernel_drops or 0) - (p_kernel or 0)
    else:
        interval = current.get("interval", {})
        captured_pps = interval.get("captured_pps", 0.0)
        worker_pps = interval.get("per_worker_pps", [0.0] * len(workers))
        fractions = interval.get("per_worker_busy_fraction", [0.0] * len(workers))
        new_ring, new_kernel = ring_drops, kernel_drops or 0
    where = capture.get("interface") or "replay"
    drops = f"ring {_n(ring_drops)} (+{_n(new_ring)}) [{_per_worker([r['dropped_packets'] for r in rings], '{:,}')}]"
    if kernel_drops is not None:
        drops = f"kernel {_n(kernel_drops)} (+{_n(new_kernel)}), interface {_n(if_drops or 0)}, " + drops
    occupancy = " ".join(f"w{i}={r['occupancy']}/{r['slots']}(peak {r['peak_occupancy']})"
                         for i, r in enumerate(rings))
    per_worker = " ".join(f"w{i}={_n(p)}/s {f:.0%}" for i, (p, f) in enumerate(zip(worker_pps, fractions,
                                                                                     strict=True)))
    stamp = time.strftime("%H:%M:%S", time.localtime(current["updated"]))
    return (f"[{stamp}] {where}: captured {_n(captured_pps)}/s, processed {_n(sum(worker_pps))}/s; "
            f"drops {drops}; rings {occupancy}; workers {per_worker}")


def index_line(index: dict[str, Any] | None) -> str:
    """The trail index in use: generation, size, build time, reloads (and the last failure)."""
    if not index:
        return "  trail index  unknown"
    built = index.get("built_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(built)) if built else "?"
    line = (f"  trail index  generation {index['generation']} ({_n(index['trails'])} trails, built {when}), "
            f"{index.get('reloads', 0)} reloads, {index.get('reload_failures', 0)} failed")
    error = index.get("last_reload_error")
    return line + (f" (last: {error})" if error else "")


def output_lines(status: dict[str, Any]) -> list[str]:
    """One line per output: sent, dropped (and why), retrying; and whether the local log is kept."""
    out = [] if status.get("local_log", True) else \
        ["  local log    disabled (disable_local_log): events go to the outputs only"]
    for o in status.get("outputs", []):
        line = (f"  output       {o['name']} ({o['type']} to {o['target']}): {_n(o['sent'])} sent, "
                f"{_n(o['dropped'])} dropped ({_n(o['dropped_queue_full'])} queue full, {_n(o['failed'])} failed, "
                f"{_n(o['abandoned_at_exit'])} unsent at exit, {_n(o.get('unacknowledged', 0))} unacknowledged), "
                f"{_n(o['queued'])} queued, {_n(o['retries'])} retries")
        if o.get("filtered") or o.get("throttled"):
            line += f", {_n(o['filtered'])} below min_severity, {_n(o['throttled'])} throttled"
        if o.get("retrying"):
            line += f", RETRYING ({o.get('last_error') or 'error'})"
        elif o.get("last_error") and o["dropped"]:
            line += f" (last error: {o['last_error']})"
        out.append(line)
    return out


def status_text(status: dict[str, Any], state: str, why: str) -> list[str]:
    """`maltrail status` in words."""
    capture = status.get("capture") or {}
    c = status["counters"]
    interval = status.get("interval", {})
    rings = status.get("rings", [])
    workers = status["per_worker_packets"]
    ring_drops, kernel_drops, if_drops = drop_counts(status)
    if capture.get("interface"):
        source = f"live on {capture['interface']}"
    elif capture.get("files"):
        source = "replay of " + ", ".join(capture["files"])
    else:
        source = "capture"
    if capture.get("offered_pps"):
        source += f" paced at {_n(capture['offered_pps'])} packets/s"
    uptime = float(status["updated"]) - float(status.get("started", status["updated"]))
    out = [
        f"sensor {status.get('sensor', '?')} (pid {status.get('sensor_pid', status.get('pid'))}): {state}, {why}",
        f"  source       {source}, up {uptime:,.0f} s",
        f"  captured     {_n(capture.get('packets', 0))} packets ({_n(interval.get('captured_pps', 0))}/s)",
        f"  processed    {_n(c.get('packets', 0))} packets ({_n(interval.get('processed_pps', 0))}/s), "
        f"{_n(c.get('bytes', 0))} bytes",
    ]
    kernel = capture.get("kernel")
    if kernel:
        out.append(f"  kernel       received {_n(kernel['received'])}, dropped {_n(kernel['dropped'])}, "
                   f"interface dropped {_n(kernel['interface_dropped'])}")
    out.append(f"  drops        {_n(ring_drops)} ring ({_per_worker([r['dropped_packets'] for r in rings], '{:,}')})"
               + (f", {_n(kernel_drops or 0)} kernel, {_n(if_drops or 0)} interface" if kernel else ""))
    out.append("  rings        " + ", ".join(f"w{i} {r['occupancy']}/{r['slots']} now, peak {r['peak_occupancy']}"
                                             for i, r in enumerate(rings)))
    pps = interval.get("per_worker_pps", [0.0] * len(workers))
    busy = interval.get("per_worker_busy_fraction", [0.0] * len(workers))
    out.append("  workers      " + ", ".join(f"w{i} {_n(n)} packets {_n(p)}/s {b:.0%} busy"
                                             for i, (n, p, b) in enumerate(zip(workers, pps, busy, strict=True))))
    out.append(f"  events       {_n(status.get('events_written', 0))} written, "
               f"{_n(status.get('events_suppressed', 0))} collapsed, {_n(status.get('events_whitelisted', 0))} "
               f"whitelisted, {_n(status.get('events_ignored', 0))} ignored")
    out += output_lines(status)
    out.append(index_line(status.get("index")))
    return out
