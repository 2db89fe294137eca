"""`maltrail demo`: generate a realistic capture, replay it through the full pipeline, show events.

Everything the demo uses is generated or shipped with the project: the capture comes from
`engine.traffic`, the trails from the bundled demo trail set. Then (unless `listen` is None) the
dashboard serves the replay's logs until Ctrl-C, printing its URL and a one-time admin password.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine.config import SensorConfig, ServerConfig
from engine.index.build import build_index_file
from engine.resources import data_file
from engine.sensor import run_sensor
from engine.traffic import mixed_capture

DEMO_TRAIL_IPS = ("198.51.100.66", "203.0.113.44", "192.0.2.77", "100.64.7.7")
SHOWN_EVENTS = 20


def run_demo(out: Path, packets: int, workers: int, listen: str | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    capture = out / "demo.pcap"
    index = out / "demo-trails.mtidx"
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    # Stamped a few minutes ago, so that the dashboard's default view (today) shows the replay.
    info = mixed_capture(capture, packets, seed=7, trail_ips=DEMO_TRAIL_IPS, start=time.time() - 300)
    print(f"generated {capture}: {info['packets']} packets, {info['bytes']} bytes")
    meta = build_index_file([str(data_file("demo_trails.csv"))], index)
    print(f"built {index}: {meta['counts']['entries']} demo trails")
    cfg = SensorConfig(name="demo", trails=str(index), log_dir=str(logs), workers=workers)
    summary = run_sensor(cfg, [capture])
    lines = [line for f in sorted(logs.glob("*.log")) for line in f.read_text().splitlines()]
    print(f"\nevents ({len(lines)} in {logs}):")
    for line in lines[:SHOWN_EVENTS]:
        print("  " + line)
    if len(lines) > SHOWN_EVENTS:
        print(f"  ... {len(lines) - SHOWN_EVENTS} more")
    print()
    print("\n".join(summary.lines()))
    if listen is None:
        return 0
    from webui.server import serve
    from webui.settings import resolve

    settings = resolve(cfg, ServerConfig(listen=listen))  # logs (and so users) are new each run
    print("\nstarting the dashboard (Ctrl-C to stop)")
    return serve(settings)
