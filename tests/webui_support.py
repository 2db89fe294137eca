"""Helpers for the dashboard server tests: events from a really replayed capture, a hand-written
Maltrail log, users made with the real `maltrail user add`, the real `maltrail server` on a free
loopback port, and a small HTTP client that keeps the session cookie and the CSRF token."""

from __future__ import annotations

import csv
import http.client
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.resources import data_file
from engine.sensor import run_sensor
from engine.traffic import mixed_capture

DEMO_TRAIL_IPS = ("198.51.100.66", "203.0.113.44", "192.0.2.77", "100.64.7.7")
PASSWORDS = {"admin": "admin-password-1", "tenant": "tenant-password-1", "other": "other-password-1"}
TENANT_SCOPE = "10.0.0.0/17"


def replay_capture(workdir: Path, logs: Path, packets: int = 60_000) -> Path:
    """A generated capture replayed through the real sensor pipeline into `logs`; returns the index."""
    capture = workdir / "capture.pcap"
    mixed_capture(capture, packets, seed=11, trail_ips=DEMO_TRAIL_IPS)
    index = workdir / "trails.mtidx"
    build_index_file([str(data_file("demo_trails.csv"))], index)
    run_sensor(SensorConfig(name="replay", trails=str(index), log_dir=str(logs), workers=2), [capture])
    return index


def read_log(path: Path) -> list[list[str]]:
    """The test's own reading of a log file (csv module, independent of webui.logparse)."""
    with open(path, newline="") as f:
        return [row for row in csv.reader(f, delimiter=" ", quotechar='"') if len(row) == 11]


def expected_threats(rows: list[list[str]]) -> Counter:
    """(src_ip, trail) -> event count."""
    return Counter((r[2], r[8]) for r in rows)


def add_user(users: Path, name: str, password: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "user", "add", name, "--users", str(users), *extra],
                          input=password + "\n", capture_output=True, text=True, timeout=60)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    host: str
    port: int
    banner: list[str] = field(default_factory=list)

    def stop(self) -> tuple[str, str]:
        self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


def start_server(log_dir: Path, users: Path, *extra: str, wait_index: bool = True) -> Server:
    """`maltrail server` on 127.0.0.1, port chosen by the kernel and read from its banner."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "server", "--log-dir", str(log_dir),
                             "--users", str(users), "--listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "http://" not in line:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"server did not start: {line}{out}{err}")
    url = line.split()[1]
    hostport = url.split("//")[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    server = Server(proc, url, host, int(port), [line])
    if wait_index:
        wait_caught_up(server)
    return server


def wait_caught_up(server: Server, timeout: float = 120.0) -> None:
    """Until the server's index has ingested everything in the log dir once."""
    client = Client(server)
    client.login("admin")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = client.get_json("/api/status")
        if status == 200 and body["index"]["caught_up"]:
            return
        time.sleep(0.2)
    raise TimeoutError("index did not catch up")


class Client:
    """One browser: a cookie jar of one cookie, and the CSRF token from login."""

    def __init__(self, server: Server, source: str = "127.0.0.1") -> None:
        self.server = server
        self.source = source  # loopback source address: the server's throttle is per client address
        self.cookie: str | None = None
        self.csrf = ""

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=60,
                                          source_address=(self.source, 0))
        h = {"Host": f"{self.server.host}:{self.server.port}"}
        if self.cookie:
            h["Cookie"] = self.cookie
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if method in ("POST", "DELETE", "PUT") and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            got = {k.lower(): v for k, v in resp.getheaders()}
            cookie = resp.getheader("Set-Cookie")
            if cookie and cookie.startswith("mt_session="):
                value = cookie.split(";", 1)[0]
                self.cookie = None if value == "mt_session=" or value == 'mt_session=""' else value
            return resp.status, got, payload
        finally:
            conn.close()

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, payload = self.request("GET", path, **kw)
        return status, json.loads(payload) if payload else None

    def post_json(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        status, _, payload = self.request("POST", path, body=body, **kw)
        return status, json.loads(payload) if payload else None

    def login(self, name: str, password: str | None = None) -> int:
        status, body = self.post_json("/api/login", {"username": name, "password": password or PASSWORDS[name]})
        if status == 200:
            self.csrf = body["csrf"]
        return status


def logged_in(server: Server, user: str) -> Client:
    """A client with a session for `user` (whose password is the test's)."""
    c = Client(server)
    assert c.login(user) == 200
    return c
