"""`maltrail demo` with its dashboard, and `maltrail user` as an operator types it."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from webui_support import Client, Server


def test_demo_replays_then_serves_the_dashboard(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "demo", "--out", str(tmp_path / "demo"),
                             "--packets", "20000", "--listen", "127.0.0.1:0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any("password: " in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"dashboard: (http://127\.0\.0\.1:(\d+)/)", text)
        password = re.search(r"created user 'admin' with password: (\S+)", text)
        assert url and password, text + proc.stderr.read() if proc.poll() is not None else text
        server = Server(proc, url.group(1), "127.0.0.1", int(url.group(2)))
        client = Client(server)
        assert client.login("admin", password.group(1)) == 200
        events = [x for x in text.splitlines() if x.startswith('  "')]
        day = events[0][3:13]
        for _ in range(100):
            status, body = client.get_json(f"/api/threats?from={day}")
            if body["total"]:
                break
            time.sleep(0.1)
        assert status == 200 and body["total"] > 0
        status, body = client.get_json(f"/api/threats?from={day}&per_page=500")
        types = {r["type"] for r in body["rows"]}
        assert types >= {"IP", "IPORT", "DNS", "URL", "HTTP", "UA", "PATH"}, types
        dga = [r for r in body["rows"] if "threshold no such domain" in r["info"]]
        assert len(dga) == 1 and len(dga[0]["values"]) == 5  # one DGA threat for the bot, five names
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "dashboard: stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_demo_without_server_exits(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--out", str(tmp_path / "demo"),
                           "--packets", "5000", "--no-server"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "dashboard" not in done.stdout and "summary:" in done.stdout
    # What the sensor wrote: every event type, from demo trails, and a few heuristics.
    rows = [r for f in sorted((tmp_path / "demo" / "logs").glob("*.log"))
            for r in csv.reader(f.open(newline=""), delimiter=" ", quotechar='"') if len(r) == 11]
    assert {r[7] for r in rows} >= {"IP", "IPORT", "DNS", "URL", "HTTP", "UA", "PATH"}
    assert any(r[6] == "TCP" and r[7] == "DNS" and r[8] == "c2-demo.top" for r in rows)  # TLS SNI
    infos = {r[9] for r in rows}
    for expected in ("potential port scanning", "potential web scanning", "entropy threshold no such domain",
                     "excessive no such domain", "potential sql injection", "potential directory traversal",
                     "potential proxy probe", "user agent (suspicious)", "malware agent (demo)"):
        assert any(expected in info for info in infos), expected
    assert not any(r[8].endswith(".example") for r in rows)


def test_demo_with_the_unique_mix(tmp_path: Path) -> None:
    """`--mix unique`: the background traffic has every name, URL and SNI new; the scenario's events
    are there all the same."""
    done = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--out", str(tmp_path / "demo"), "--mix",
                           "unique", "--packets", "5000", "--no-server"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "packets of the unique mix" in done.stdout
    rows = [r for f in sorted((tmp_path / "demo" / "logs").glob("*.log"))
            for r in csv.reader(f.open(newline=""), delimiter=" ", quotechar='"') if len(r) == 11]
    assert {r[7] for r in rows} >= {"IP", "DNS", "URL", "UA"}


def test_user_commands(tmp_path: Path) -> None:
    users = tmp_path / "users.json"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine.cli", "user", *args, "--users", str(users)],
                              input=stdin, capture_output=True, text=True, timeout=60)

    done = run("add", "alice", "--scope", "10.0.0.0/8,2001:db8::/32", stdin="alice-password-1\n")
    assert done.returncode == 0 and "scope: 10.0.0.0/8, 2001:db8::/32" in done.stdout
    done = run("add", "bob", "--admin", stdin="bob-password-12\r\n")
    assert done.returncode == 0 and "admin" in done.stdout
    done = run("add", "alice", stdin="alice-password-2\n")  # new password, scope kept
    assert done.returncode == 0 and "10.0.0.0/8" in done.stdout
    assert run("list").stdout.splitlines() == ["alice  scope=10.0.0.0/8,2001:db8::/32", "bob  scope=*  admin"]
    assert run("remove", "alice").returncode == 0
    done = run("remove", "alice")
    assert done.returncode == 2 and done.stderr.startswith("maltrail: error: no user 'alice'")
    done = run("add", "carol", stdin="")
    assert done.returncode == 2 and "password" in done.stderr
    users.write_text("{not json")
    done = run("list")
    assert done.returncode == 2 and "not a valid users file" in done.stderr and "Traceback" not in done.stderr


def test_server_stops_cleanly_with_a_live_stream_open(tmp_path: Path) -> None:
    import http.client

    from webui_support import PASSWORDS, add_user, start_server

    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    server = start_server(logs, users, wait_index=False)
    client = Client(server)
    assert client.login("admin") == 200
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("GET", "/api/live", headers={"Cookie": client.cookie or "", "Host": f"localhost:{server.port}"})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.readline() == b": connected\n"
    server.proc.send_signal(signal.SIGTERM)
    out, err = server.proc.communicate(timeout=30)
    assert server.proc.returncode == 0 and "dashboard: stopped" in out and "Traceback" not in err
    assert stream.read().strip() == b""  # a clean end of the chunked stream (no IncompleteRead)
    conn.close()
