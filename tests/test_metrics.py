"""`maltrail sensor --metrics`: a Prometheus scrape of a running sensor, parsed with
prometheus_client's own parser, says what the status file says."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import traffic as t
from engine.config import ConfigError, SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_scrape_of_a_running_sensor(tmp_path: Path) -> None:
    (tmp_path / "trails.csv").write_text("66.66.66.66,malware (test),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "trails.mtidx")
    with PcapWriter(tmp_path / "c.pcap") as w:
        for i in range(40_000):
            w.write(t.ethernet(t.tcp4("10.0.0.66", "66.66.66.66", 1000 + i % 50_000, 443, t.SYN)
                               if i % 100 == 0 else t.udp4("10.0.0.1", "10.0.0.2", 5, 6, bytes(40))), 1.7e9 + i)
    port = _free_port()
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\nname = "probe-1"\n[[output]]\ntype = "json"\nname = "ecs"\n'
                      f'path = "{tmp_path / "events.json"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "-c", str(config), "--trails",
                             str(tmp_path / "trails.mtidx"), "-r", str(tmp_path / "c.pcap"), "--log-dir",
                             str(tmp_path / "logs"), "--rate", "10000", "--metrics", f"127.0.0.1:{port}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        metrics: dict = {}
        while time.monotonic() < deadline:
            try:
                metrics = _scrape(port)
            except OSError:
                time.sleep(0.1)
                continue
            sent = metrics.get("maltrail_output_sent_events_total", {}).get((("output", "ecs"), ("type", "json")), 0)
            if metrics.get("maltrail_events_total", {}).get((("type", "IP"),), 0) >= 100 and sent >= 100:
                break  # the outputs' counters come a second or two behind the events
            time.sleep(0.2)
        status = json.loads((tmp_path / "logs" / "sensor-status.json").read_text())
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert metrics["maltrail_up"][()] == 1
    assert metrics["maltrail_packets_total"][()] > 0 and metrics["maltrail_bytes_total"][()] > 0
    assert metrics["maltrail_events_total"][(("type", "IP"),)] >= 100
    assert set(metrics["maltrail_dropped_packets_total"]) == {(("cause", "ring"),)}
    assert metrics["maltrail_ring_slots"][(("ring", "0"),)] == status["rings"][0]["slots"]
    assert (("worker", "0"),) in metrics["maltrail_worker_busy_seconds_total"]
    assert metrics["maltrail_index_generation"][()] == 1 and metrics["maltrail_index_trails"][()] == 1
    assert 0 <= metrics["maltrail_index_age_seconds"][()] < 600
    ecs = (("output", "ecs"), ("type", "json"))
    assert metrics["maltrail_output_sent_events_total"][ecs] >= 100
    assert metrics["maltrail_output_dropped_events_total"][(*ecs[:1], ("reason", "queue_full"), ecs[1])] == 0
    assert metrics["maltrail_output_retrying"][ecs] == 0


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        cfg = SensorConfig(trails=str(tmp_path / "x"), log_dir=str(tmp_path / "logs"),
                           metrics=f"127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(ConfigError, match=r"\[sensor\] metrics: cannot listen on"):
            run_sensor(cfg, [], "lo")
