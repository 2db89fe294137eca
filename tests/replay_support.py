"""Replaying hand-built frames through the real sensor: one pcap, one `run_sensor`, the event lines."""

from __future__ import annotations

from pathlib import Path

from engine.config import SensorConfig
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

T0 = 1_700_000_000.0


def replay_frames(trails: Path, workdir: Path, frames: list[bytes], linktype: int) -> tuple[list[str], dict]:
    """(event lines, worker counters) of the sensor over a pcap of `frames`, one per second from T0."""
    workdir.mkdir(parents=True, exist_ok=True)
    capture = workdir / "c.pcap"
    with PcapWriter(capture, linktype=linktype) as w:
        for i, frame in enumerate(frames):
            w.write(frame, T0 + i)
    log_dir = workdir / "logs"
    summary = run_sensor(SensorConfig(name="test", trails=str(trails), log_dir=str(log_dir), workers=1), [capture])
    lines = [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]
    return lines, summary.status["counters"]
