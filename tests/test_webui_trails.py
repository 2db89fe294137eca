"""`maltrail server` answers /api/check from the sensor's own index (same whitelist and custom trails)
and adopts a new index without a restart: when `maltrail update` renames one over the file, and on
SIGHUP for a trails.csv source."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from webui_support import PASSWORDS, add_user, logged_in, start_server

from engine.index.build import build_index_file


def _wait_for(client, indicator: str, found: bool, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = client.get_json(f"/api/check?indicator={indicator}")
        if status == 200 and body["found"] == found and "index" in body:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def _server(tmp_path: Path, *extra: str):
    logs, users = tmp_path / "logs", tmp_path / "users.json"
    logs.mkdir()
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    server = start_server(logs, users, *extra)
    return server, logged_in(server, "admin")


def test_check_follows_a_new_index_renamed_into_place(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("old-bad.example,malware,test\n")
    second.write_text("old-bad.example,malware,test\nnew-bad.example,malware,test\n")
    index = tmp_path / "trails.mtidx"
    build_index_file([str(first)], index)
    server, client = _server(tmp_path, "--trails", str(index))
    try:
        body = _wait_for(client, "old-bad.example", True)
        assert body["index"]["generation"] == 1 and not _wait_for(client, "new-bad.example", False)["found"]
        build_index_file([str(second)], tmp_path / "next.mtidx")
        (tmp_path / "next.mtidx").rename(index)
        body = _wait_for(client, "new-bad.example", True)
        assert body["index"]["generation"] == 2 and body["index"]["trails"] == 2
    finally:
        server.stop()


def test_check_uses_the_sensor_whitelist_and_reloads_on_sighup(tmp_path: Path) -> None:
    csv, whitelist = tmp_path / "trails.csv", tmp_path / "wl.txt"
    csv.write_text("listed.example,malware,test\nallowed.example,malware,test\n")
    whitelist.write_text("allowed.example\n")
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\ntrails = "{csv}"\nwhitelist = ["{whitelist}"]\n')
    server, client = _server(tmp_path, "-c", str(config))
    try:
        _wait_for(client, "listed.example", True)
        assert not _wait_for(client, "allowed.example", False)["found"]  # the sensor's whitelist applies
        csv.write_text("listed.example,malware,test\nlater.example,malware,test\n")
        server.proc.send_signal(signal.SIGHUP)
        body = _wait_for(client, "later.example", True)
        assert body["index"]["generation"] >= 2
    finally:
        server.stop()
