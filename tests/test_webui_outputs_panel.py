"""The dashboard's engine panel shows each output's counters, after a real replay whose outputs are
a JSON file and a syslog receiver that is not there (its events counted as dropped)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from webui_browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    add_user,
    chromium_missing_reason,
    free_port,
    start_server,
    stop_server,
)

from engine import traffic as t
from engine.config import sensor_config_from
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

_missing = chromium_missing_reason()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")
if _missing is None:
    from playwright.sync_api import expect, sync_playwright

USER, PASSWORD = "analyst", "correct horse battery"


def test_engine_panel_lists_the_outputs(tmp_path: Path) -> None:
    (tmp_path / "trails.csv").write_text("66.66.66.66,malware (test),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "trails.mtidx")
    with PcapWriter(tmp_path / "c.pcap") as w:
        for i in range(5):
            w.write(t.ethernet(t.tcp4("10.0.0.5", "66.66.66.66", 40000 + i, 443, t.SYN)), time.time() - 60 + i)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nobody listens there
    logs = tmp_path / "logs"
    summary = run_sensor(sensor_config_from({
        "sensor": {"name": "probe-1", "trails": str(tmp_path / "trails.mtidx"), "log_dir": str(logs)},
        "output": [{"type": "json", "name": "archive", "path": str(tmp_path / "events.json")},
                   {"type": "syslog", "name": "siem", "address": f"127.0.0.1:{dead}", "protocol": "tcp",
                    "retries": 0, "drain_seconds": 1}]}), [tmp_path / "c.pcap"])
    siem = summary.status["outputs"][1]
    assert siem["dropped"] == 5
    users = tmp_path / "users.json"
    add_user(users, USER, PASSWORD)
    port = free_port()
    proc = start_server(logs, users, port, tmp_path / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#login-user", USER)
            page.fill("#login-pass", PASSWORD)
            page.click("#login-submit")
            expect(page.locator("#app")).to_be_visible()
            page.click("#engine-btn")
            rows = page.locator("#engine-outputs tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0).locator("td").nth(0)).to_have_text("archive (json)")
            expect(rows.nth(0).locator("td").nth(1)).to_have_text("5")
            expect(rows.nth(0).locator("td").nth(2)).to_have_text("0")
            expect(rows.nth(1).locator("td").nth(0)).to_have_text("siem (syslog)")
            expect(rows.nth(1).locator("td").nth(2)).to_have_text("5")
            expect(rows.nth(1).locator("td").nth(2)).to_have_attribute(
                "title", "0 queue full, 5 failed, 0 unsent at exit, 0 unacknowledged")
            browser.close()
    finally:
        stop_server(proc)
