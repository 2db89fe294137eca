"""Helpers for the browser tests: a real capture replayed through the sensor, a real user, the
real `maltrail server`, and Debian's chromium driven by Playwright.

Kept out of the test module so the fixtures there read as the scenario they set up.
"""

from __future__ import annotations

import csv
import http.cookiejar
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from engine.eventlog import Event, format_event, log_date
from engine.resources import data_file
from engine.traffic import mixed_capture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO_TRAIL_IPS = ("198.51.100.66", "203.0.113.44", "192.0.2.77", "100.64.7.7")
MALTRAIL = str(Path(sys.executable).with_name("maltrail"))


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent (scripts/setup.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e .[test])"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shift_pcap(path: Path, first_second: int) -> None:
    """Move every record of a classic little-endian pcap so the first packet is at `first_second`.

    The generator writes a fixed epoch; shifting keeps the traffic itself untouched while making the
    events land in today's log, the dashboard's default view.
    """
    data = bytearray(path.read_bytes())
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        raise ValueError(f"{path}: not a little-endian microsecond pcap")
    pos = 24
    delta = None
    while pos + 16 <= len(data):
        sec, _usec, caplen, _wirelen = struct.unpack_from("<IIII", data, pos)
        if delta is None:
            delta = first_second - sec
        struct.pack_into("<I", data, pos, sec + delta)
        pos += 16 + caplen
    path.write_bytes(bytes(data))


def replay_capture(work: Path, log_dir: Path, packets: int, first_second: int, seed: int = 11) -> dict:
    """Generate a mixed capture, shift it to `first_second` and replay it with `maltrail sensor`."""
    capture = work / "capture.pcap"
    info = mixed_capture(capture, packets, seed=seed, trail_ips=DEMO_TRAIL_IPS)
    shift_pcap(capture, first_second)
    trails = work / "demo_trails.csv"
    shutil.copyfile(data_file("demo_trails.csv"), trails)
    subprocess.run([MALTRAIL, "sensor", "--trails", str(trails), "-r", str(capture), "--log-dir", str(log_dir),
                    "--workers", "2"], check=True, capture_output=True, text=True, timeout=300)
    return info


def add_user(users: Path, name: str, password: str, *extra: str) -> None:
    subprocess.run([MALTRAIL, "user", "add", name, "--users", str(users), *extra], input=f"{password}\n{password}\n",
                   check=True, capture_output=True, text=True, timeout=60)


def start_server(log_dir: Path, users: Path, port: int, log_file: Path, *extra: str) -> subprocess.Popen:
    """`maltrail server` on 127.0.0.1:port, returned once it answers /ping."""
    out = open(log_file, "w")  # noqa: SIM115 - closed by stop_server
    proc = subprocess.Popen([MALTRAIL, "server", "--log-dir", str(log_dir), "--users", str(users),
                             "--listen", f"127.0.0.1:{port}", *extra], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_handle = out  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out.close()
            raise RuntimeError(f"maltrail server exited with {proc.returncode}: {log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.read() == b"pong":
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"maltrail server did not answer /ping within 30 s: {log_file.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_handle.close()  # type: ignore[attr-defined]


def append_event(log_dir: Path, event: Event, sensor: str) -> Path:
    """Append one Maltrail event line to the day file of its time, as the aggregator does."""
    path = log_dir / f"{log_date(event[0])}.log"
    with open(path, "a", encoding="utf-8") as f:
        f.write(format_event(event, sensor))
    return path


class ApiClient:
    """A logged-in HTTP client for the server's JSON API (to wait for ingest and cross-check the UI)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(f"{base}/api/login", body, {"Content-Type": "application/json"})
        with self.opener.open(req, timeout=10) as r:
            self.csrf = json.load(r)["csrf"]

    def get(self, path: str, **params: object) -> dict:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        with self.opener.open(f"{self.base}{path}{'?' + query if query else ''}", timeout=30) as r:
            return json.load(r)

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json", "X-CSRF-Token": self.csrf})
        with self.opener.open(req, timeout=30) as r:
            return json.load(r)

    def wait_for_total(self, expected: int, timeout: float = 60.0, **params: object) -> int:
        """Poll /api/threats until its total is `expected` (the server indexes the logs in the background)."""
        deadline = time.monotonic() + timeout
        total = -1
        while time.monotonic() < deadline:
            total = self.get("/api/threats", per_page=1, **params)["total"]
            if total == expected:
                return total
            time.sleep(0.3)
        raise AssertionError(f"server shows {total} threats, expected {expected} after {timeout} s")


def log_pairs(log_dir: Path) -> dict[tuple[str, str], int]:
    """(source, trail) -> events, read straight from the day files (the threats the UI must show)."""
    pairs: dict[tuple[str, str], int] = {}
    for path in sorted(log_dir.glob("*.log")):
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.reader(f, delimiter=" ", quotechar='"'):
                if len(row) == 11:
                    key = (row[2], row[8])
                    pairs[key] = pairs.get(key, 0) + 1
    return pairs
