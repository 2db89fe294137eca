"""CPU of a sensor on a quiet link: `maltrail sensor -r small.pcap --rate 20 --workers 2` (a replay
paced like a link carrying 20 packets/s, so every process sits waiting nearly all the time) as a
subprocess, and the CPU its aggregator uses per second of that, read from /proc. A sensor box
idles most hours; what its processes burn then is pure overhead (the aggregator polled its rings
every 2 ms before it waited on their doorbell).

`MALTRAIL_BENCH_BASE=/path/to/other/checkout` runs that checkout's code too (with this
environment's packages), turn by turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from turns import checkouts, entry_point

from engine.traffic import unique_capture

RATE = 20  # packets/s: a tick of libpcap's 100 ms read timeout carries two
PACKETS = 160  # an 8-second replay
TURNS = 2
_TICK = os.sysconf("SC_CLK_TCK")


def _aggregator_cpu(checkout: Path, capture: Path, index: Path, log_dir: Path) -> float:
    """Share of one core the aggregator used between its first status file and the end of the replay."""
    status = log_dir / "sensor-status.json"
    status.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", entry_point(checkout), "sensor", "-r", str(capture), "--rate",
                             str(RATE), "--trails", str(index), "--workers", "2", "--log-dir", str(log_dir)],
                            cwd=checkout, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(checkout)})
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    pid = 0
    while proc.poll() is None:
        time.sleep(0.1)
        try:
            pid = pid or json.loads(status.read_text())["pid"]
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, KeyError):
            continue
        sample = (time.monotonic(), int(fields[11]) + int(fields[12]))
        first, last = first or sample, sample
    assert proc.returncode == 0 and first is not None and last is not None and last[0] - first[0] > 4
    return (last[1] - first[1]) / _TICK / (last[0] - first[0])


def test_quiet_link_aggregator_cpu(benchmark, full_index: Path, workdir: Path) -> None:
    capture = workdir / "quiet.pcap"
    if not capture.is_file():
        unique_capture(capture, PACKETS)
    base = os.environ.get("MALTRAIL_BENCH_BASE")
    places = checkouts(base)
    shares: dict[str, list[float]] = {name: [] for name in places}

    def turns() -> None:
        for _ in range(TURNS):
            for name, checkout in places.items():
                shares[name].append(_aggregator_cpu(checkout, capture, full_index, workdir / f"quiet-logs-{name}"))

    benchmark.pedantic(turns, rounds=1)
    for name, measured in shares.items():
        benchmark.extra_info[f"{name}_aggregator_cpu_percent"] = round(100 * min(measured), 2)
        print(f"\nquiet link ({RATE} packets/s, 2 workers), aggregator CPU, {name} ({places[name]}): "
              + ", ".join(f"{100 * s:.2f} %" for s in measured) + " of one core")
