"""`[update] sensor_updates`: the sensor builds a missing index before it starts, then updates it
every period while it runs and adopts each new index without a restart or a lost packet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from httpfixture import FixtureServer
from test_reload import _capture, _hits
from update_support import Upstream

from engine.cli import main

PACKETS = 64_000
RATE = 8_000  # an 8 s paced replay


def test_sensor_updates_itself_and_reloads(tmp_path: Path) -> None:
    pcap = _capture(tmp_path / "long.pcap", PACKETS)
    index, logs = tmp_path / "var" / "trails.mtidx", tmp_path / "logs"
    with FixtureServer() as server:
        upstream = Upstream(server)
        botcc = upstream.paths["emergingthreatsbot"][0]
        upstream.serve(botcc, b"# ET CnC Server list\n66.66.66.66\n")
        config = upstream.config(tmp_path / "maltrail.toml", feeds=["emergingthreatsbot"], static_url="", period="3s",
                                 sensor_updates=True, ip_minimum_feeds=1)
        config.write_text(f'[sensor]\ntrails = "{index}"\nlog_dir = "{logs}"\nuse_heuristics = false\n'
                          + config.read_text())
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "-c", str(config), "-r", str(pcap),
                                 "--rate", str(RATE), "--workers", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not (logs / "sensor-status.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        upstream.serve(botcc, b"# ET CnC Server list\n66.66.66.66\n66.66.77.77\n", etag='"second"')
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    status = json.loads((logs / "sensor-status.json").read_text())
    assert status["index"]["generation"] >= 2, out + err
    assert status["capture"]["packets"] == PACKETS and sum(r["dropped_packets"] for r in status["rings"]) == 0
    old, new = _hits(logs, "66.66.66.66"), _hits(logs, "66.66.77.77")
    assert old == list(range(PACKETS // 50))  # the first index from the first packet on
    assert new and new[0] > 0 and new == list(range(new[0], PACKETS // 50))  # from the switch on, none lost


def test_sensor_updates_refuses_a_trail_source_that_is_not_an_index(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "trails.csv"
    csv.write_text("evil.example,malware,test\n")
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\ntrails = "{csv}"\n[update]\nsensor_updates = true\n')
    assert main(["sensor", "-c", str(config), "-r", str(tmp_path / "none.pcap")]) == 2
    assert "[update] sensor_updates: [sensor] trails must name the index file" in capsys.readouterr().err
