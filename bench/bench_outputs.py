"""Outputs cost the capture nothing, even when their receivers die (issue 13).

One event-heavy capture (400k packets, 1 in 10 a trail hit: 40k events) is replayed with 1 worker:
without outputs, alternating with four outputs (CEF over TCP, ECS JSON over TCP, Maltrail's UDP
datagram, a webhook for every event) whose receivers (another process) are killed after the first
200 events, or stay alive. Target: the median packets/s with killed receivers within 10 % of the
median without outputs. Live receivers share the 2 cores with the sensor here, so that figure
includes their own CPU time.

    .venv/bin/pytest bench/bench_outputs.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import traffic as t
from engine.config import sensor_config_from
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import Summary, run_sensor

TESTS = Path(__file__).resolve().parents[1] / "tests"
# The receivers run in a process of their own (their threads must not take the replaying process's
# interpreter lock), print their addresses, count what they got into a file, and are killed for real.
RECEIVERS = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from receivers import StreamReceiver, UdpReceiver, WebhookReceiver
r = [StreamReceiver("octets"), StreamReceiver("lines"), UdpReceiver(), WebhookReceiver()]
print(json.dumps([x.address for x in r[:3]] + [r[3].url]), flush=True)
while True:
    time.sleep(0.05)
    open(sys.argv[2], "w").write(json.dumps([len(x.got) for x in r]))
"""
PACKETS = int(os.environ.get("MALTRAIL_BENCH_OUTPUT_PACKETS", 400_000))  # longer: start-up weighs less
HIT_EVERY = 10
ROUNDS = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("outputs")
    (work / "trails.csv").write_text("66.66.66.66,malware (bench),(static)\n")
    build_index_file([str(work / "trails.csv")], work / "trails.mtidx")
    filler = t.ethernet(t.udp4("10.0.0.1", "10.0.0.2", 5000, 6000, bytes(200)))
    with PcapWriter(work / "c.pcap") as w:
        for i in range(PACKETS):
            frame = t.ethernet(t.tcp4("10.0.0.66", "66.66.66.66", 1024 + i // HIT_EVERY % 64000, 443, t.SYN, seq=i)) \
                if i % HIT_EVERY == 0 else filler
            w.write(frame, 1.7e9 + i / 1e4)
    return work, work / "trails.mtidx", work / "c.pcap"


def _outputs(work: Path) -> tuple[list[dict], subprocess.Popen[str], Path]:
    counts = work / "received.json"
    counts.unlink(missing_ok=True)  # a previous round's counts would trigger the kill at once
    proc = subprocess.Popen([sys.executable, "-c", RECEIVERS, str(TESTS), str(counts)], stdout=subprocess.PIPE,
                            text=True)
    syslog, ecs, datagrams, hook = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    tables = [{"type": "syslog", "address": syslog, "protocol": "tcp"},
              {"type": "json", "address": ecs, "protocol": "tcp"},
              {"type": "maltrail", "address": datagrams},
              {"type": "webhook", "url": hook, "min_severity": "low", "throttle_seconds": 0, "retries": 0,
               "timeout": 1.0}]
    for table in tables:
        table["drain_seconds"] = 0  # the summary waits for no receiver
    return tables, proc, counts


def _kill_after(proc: subprocess.Popen[str], counts: Path, events: int) -> None:
    """SIGKILL the receivers once the JSON one has `events` (or after 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if json.loads(counts.read_text())[1] >= events:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    proc.kill()


def _run(work: Path, index: Path, capture: Path, outputs: list[dict], name: str) -> Summary:
    cfg = sensor_config_from({"sensor": {"name": "bench", "trails": str(index), "log_dir": str(work / name),
                                         "workers": 1}, "output": outputs})
    return run_sensor(cfg, [capture])


def _once(work: Path, index: Path, capture: Path, condition: str, tag: str) -> Summary:
    """One replay: no outputs, outputs with live receivers, or outputs whose receivers are killed."""
    proc: subprocess.Popen[str] | None = None
    outputs: list[dict] = []
    killer = None
    if condition != "no outputs":
        outputs, proc, counts = _outputs(work)
        if condition == "receivers killed":
            killer = threading.Thread(target=_kill_after, args=(proc, counts, 200))
            killer.start()
    try:
        return _run(work, index, capture, outputs, f"logs-{tag}")
    finally:
        if killer is not None:
            killer.join()
        if proc is not None:
            proc.kill()
            proc.wait()


def _line(condition: str, summary: Summary) -> str:
    return f"{condition}: " + ", ".join(f"{o['name']} {o['sent']} sent {o['dropped']} dropped "
                                         f"({o.get('dropped_backlog', 0)} backlog)" for o in summary.status["outputs"])


@pytest.mark.parametrize("condition", ["receivers killed", "live receivers"])
def test_outputs_against_no_outputs(benchmark, setup, condition: str) -> None:
    """Rounds alternate the two conditions (the machine is shared and noisy); medians compared."""
    work, index, capture = setup
    pps: dict[str, list[float]] = {"no outputs": [], condition: []}
    last: dict[str, Summary] = {}

    def rounds() -> None:
        for i in range(ROUNDS):
            for name in pps:
                summary = _once(work, index, capture, name, f"{name}-{i}".replace(" ", "-"))
                assert summary.status["events_written"] == PACKETS // HIT_EVERY
                pps[name].append(summary.packets / summary.wall_seconds)
                last[name] = summary

    benchmark.pedantic(rounds, rounds=1)
    base, other = statistics.median(pps["no outputs"]), statistics.median(pps[condition])
    benchmark.extra_info.update({"condition": condition, "rounds": ROUNDS, "median_pps_no_outputs": round(base),
                                 "median_pps": round(other), "ratio": round(other / base, 3),
                                 "pps_no_outputs": [round(x) for x in pps["no outputs"]],
                                 "pps": [round(x) for x in pps[condition]]})
    print(f"\nno outputs: median {base:,.0f} packets/s {[round(x) for x in pps['no outputs']]}"
          f"\n{condition}: median {other:,.0f} packets/s {[round(x) for x in pps[condition]]}"
          f"\nratio {other / base:.1%}\n{_line(condition, last[condition])}")
