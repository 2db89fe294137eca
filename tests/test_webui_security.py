"""Security of the dashboard server, tested against the real `maltrail server` on 127.0.0.1:
no data without a session, CSRF and origin checks, login by POST only, throttling without
sleeping, logout and removed users, password storage, audit, headers, Host check, TLS, scoped
users, and hostile input that must never produce a 5xx or leak a file."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from tls_support import loopback_certificate
from webui_support import PASSWORDS, TENANT_SCOPE, Client, Server, add_user, logged_in, start_server

DAY = "2023-11-13"
LOG = "".join(line + "\n" for line in (
    '"2023-11-13 08:00:01.000001" gw 10.0.5.5 51515 192.0.2.53 53 UDP DNS evil-demo.example "malware (x)" (static)',
    '"2023-11-13 09:00:00.000000" gw 192.168.1.9 40000 198.51.100.99 80 TCP IP 198.51.100.99 "known attacker" -',
    '"2023-11-13 10:00:00.000000" gw 203.0.113.7 40000 10.0.9.9 22 TCP IP 203.0.113.7 "mass scanner" (static)',
    '"2023-11-13 11:00:00.000000" "<img src=x onerror=alert(1)>" 10.0.7.7 "1;DROP" "\'; DROP TABLE events; --" '
    '"80 OR 1=1" "<b>" "TYPE""" "=cmd|\' /C calc\'!A0" "{{7*7}} ${jndi:x} \u202e" "../../etc/passwd"',
))
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
STATIC = Path(__file__).resolve().parents[1] / "webui" / "static"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("webui-sec")
    logs = work / "logs"
    logs.mkdir()
    (logs / f"{DAY}.log").write_text(LOG)
    users = work / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"], "--admin").returncode == 0
    assert add_user(users, "tenant", PASSWORDS["tenant"], "--scope", TENANT_SCOPE).returncode == 0
    server = start_server(logs, users)
    yield {"server": server, "logs": logs, "users": users, "work": work}
    server.stop()


@pytest.fixture()
def admin(env: dict) -> Client:
    return logged_in(env["server"], "admin")


def _spec_requests(spec: dict) -> list[tuple[str, str]]:
    out = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if {"session": []} in op.get("security", []):  # token-only paths: tests/test_blocklist.py
                out.append((method.upper(), path.replace("{id}", "0123456789abcdef")))
    return out


def test_every_described_data_path_refuses_without_a_session(env: dict) -> None:
    anonymous = Client(env["server"])
    status, spec = anonymous.get_json("/api/openapi.json")
    assert status == 200
    described = _spec_requests(spec)
    assert len(described) >= 14
    forged = Client(env["server"])
    forged.cookie = "mt_session=" + "A" * 43
    for method, path in described:
        for client in (anonymous, forged):
            status, headers, body = client.request(method, path + f"?from={DAY}", body={} if method == "POST" else None)
            assert status == 401, (method, path, status)
            assert json.loads(body) == {"error": "login required"}
            assert headers["cache-control"] == "no-store"
    for path in ("/api/nonexistent", "/api/threats/../../etc/passwd", "/api/users"):
        assert anonymous.request("GET", path)[0] == 401


def test_public_paths(env: dict) -> None:
    c = Client(env["server"])
    status, headers, body = c.request("GET", "/ping")
    assert (status, body) == (200, b"pong")
    status, headers, body = c.request("GET", "/")
    if (STATIC / "index.html").is_file():
        assert status == 200 and body == (STATIC / "index.html").read_bytes()
        assert headers["content-type"].startswith("text/html")
    else:
        assert status == 404


def test_login_is_post_only_json_and_uniform_on_failure(env: dict) -> None:
    c = Client(env["server"], source="127.0.0.2")
    status, headers, body = c.request("GET", f"/api/login?username=admin&password={PASSWORDS['admin']}")
    assert status == 405 and headers["allow"] == "POST" and c.cookie is None
    status, _, body = c.request("POST", "/api/login", raw=b"username=admin&password=x",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and c.cookie is None
    for body in ({"username": "admin", "password": "wrong-password"}, {"username": "nobody", "password": "x" * 12},
                 {"username": ["admin"], "password": 1}):
        status, answer = c.post_json("/api/login", body)
        assert status in (400, 401) and c.cookie is None
        if status == 401:
            assert answer == {"error": "wrong user name or password"}


def test_cookie_flags_and_fresh_session_per_login(env: dict) -> None:
    c = Client(env["server"])
    status, headers, body = c.request("POST", "/api/login", body={"username": "admin", "password": PASSWORDS["admin"]})
    cookie = headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict" and attrs["path"] == "Path=/"
    assert "secure" not in attrs  # plain HTTP on loopback; see the TLS test
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40
    first = c.cookie
    assert c.login("admin") == 200
    assert c.cookie != first
    stale = Client(env["server"])
    stale.cookie = first
    assert stale.get_json("/api/session")[0] == 401  # the old session was dropped at re-login


def test_csrf_and_origin_checks(env: dict, admin: Client) -> None:
    csrf = admin.csrf
    admin.csrf = ""
    status, body = admin.post_json("/api/suppressions", {"scope": "source", "src_ip": "10.0.5.5"})
    assert status == 403 and "CSRF" in body["error"]
    status, body = admin.post_json("/api/suppressions", {"scope": "source", "src_ip": "10.0.5.5"},
                                   headers={"X-CSRF-Token": "x" * 43})
    assert status == 403
    status, _, _ = admin.request("POST", "/api/logout")
    assert status == 403 and admin.get_json("/api/session")[0] == 200
    admin.csrf = csrf
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        status, body = admin.post_json("/api/suppressions", {"scope": "source", "src_ip": "10.0.5.5"}, headers=headers)
        assert status == 403, headers
    status, body = admin.get_json("/api/suppressions")
    assert body["rules"] == []
    origin = f"http://{admin.server.host}:{admin.server.port}"
    status, rule = admin.post_json("/api/suppressions", {"scope": "source", "src_ip": "10.0.5.5"},
                                   headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert status == 200
    assert admin.request("DELETE", f"/api/suppressions/{rule['id']}")[0] == 200


def test_logout_ends_the_session_server_side(env: dict) -> None:
    c = Client(env["server"])
    assert c.login("admin") == 200
    token = c.cookie
    status, headers, _ = c.request("POST", "/api/logout")
    assert status == 200 and "mt_session=" in headers["set-cookie"]
    replay = Client(env["server"])
    replay.cookie = token
    assert replay.get_json(f"/api/threats?from={DAY}")[0] == 401


def test_removed_user_loses_its_session(env: dict) -> None:
    assert add_user(env["users"], "temp", "temp-password-1").returncode == 0
    c = Client(env["server"])
    assert c.login("temp", "temp-password-1") == 200
    assert c.get_json(f"/api/threats?from={DAY}")[0] == 200
    done = subprocess.run([sys.executable, "-m", "engine.cli", "user", "remove", "temp", "--users", str(env["users"])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert c.get_json(f"/api/threats?from={DAY}")[0] == 401


def test_password_storage(env: dict, tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    for name in ("a", "b"):
        assert add_user(users, name, "same-password-1").returncode == 0
    assert stat.S_IMODE(os.stat(users).st_mode) == 0o600
    text = users.read_text()
    assert "same-password-1" not in text
    records = json.loads(text)["users"]
    pa, pb = records["a"]["password"], records["b"]["password"]
    assert pa["kdf"] == "scrypt" and pa["n"] >= 1 << 14 and len(pa["salt"]) >= 20
    assert pa["salt"] != pb["salt"] and pa["hash"] != pb["hash"]
    done = add_user(users, "c", "short")
    assert done.returncode == 2 and done.stderr.startswith("maltrail: error: ") and done.stderr.count("\n") == 1
    done = add_user(users, "bad name\n", "long-enough-password")
    assert done.returncode == 2
    done = add_user(users, "d", "long-enough-password", "--scope", "10.0.0.0/33")
    assert done.returncode == 2 and "scope" in done.stderr


def test_first_start_creates_admin_with_a_random_password_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    passwords = []
    for _ in range(2):
        server = start_server(logs, users, wait_index=False)
        line = server.proc.stdout.readline() if not passwords else ""
        server.stop()
        passwords.append(line)
    assert "password: " in passwords[0] and passwords[1] == ""
    password = passwords[0].split("password: ")[1].strip()
    assert len(password) >= 16 and password not in ("admin", "changeme!")
    assert password not in users.read_text()
    server = start_server(logs, users, wait_index=False)
    try:
        assert Client(server).login("admin", password) == 200
    finally:
        server.stop()


def test_login_attempts_are_audited_one_line_each(env: dict) -> None:
    c = Client(env["server"], source="127.0.0.3")
    c.login("admin", "wrong-password")
    c.post_json("/api/login", {"username": "evil\nlogin-ok user=admin", "password": "x" * 12})
    assert c.login("admin") == 200
    audit = env["logs"] / ".webui" / "audit.log"
    assert stat.S_IMODE(os.stat(audit).st_mode) == 0o600
    lines = audit.read_text().splitlines()
    assert any(" login-failed user=admin from=127.0.0.3" in x for x in lines)
    assert any(" login-failed user=evil?login-ok?user=admin from=" in x for x in lines)
    assert not any(x.startswith("login-ok") for x in lines)
    assert lines[-1].endswith(" login-ok user=admin from=127.0.0.3")
    assert PASSWORDS["admin"] not in audit.read_text()


def _check_headers(headers: dict[str, str], api: bool) -> None:
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["server"] == "maltrail"
    if api:
        assert headers["cache-control"] == "no-store"


def test_security_headers_everywhere_and_no_version(env: dict, admin: Client) -> None:
    anonymous = Client(env["server"])
    for client, path, api in ((anonymous, "/", False), (anonymous, "/ping", False), (anonymous, "/nope.js", False),
                              (anonymous, "/api/threats", True), (anonymous, "/api/openapi.json", True),
                              (admin, f"/api/threats?from={DAY}", True), (admin, "/api/nope", True),
                              (admin, "/api/threats?from=bad", True)):
        status, headers, body = client.request("GET", path)
        _check_headers(headers, api)
        assert b"aiohttp" not in body.lower() and b"python" not in body.lower()
    status, headers, body = anonymous.request("GET", "/api/openapi.json")
    assert "version" not in json.dumps(json.loads(body)["info"]).replace('"version": "1"', "")


def test_host_header_is_checked(env: dict) -> None:
    c = Client(env["server"])
    for host in ("evil.example", "evil.example:80", f"attacker.test:{env['server'].port}", "127.0.0.2", "[::2]"):
        status, headers, body = c.request("GET", "/ping", headers={"Host": host})
        assert status == 421, host
        _check_headers(headers, False)
    for host in (f"localhost:{env['server'].port}", f"127.0.0.1:{env['server'].port}", "localhost"):
        assert c.request("GET", "/ping", headers={"Host": host})[0] == 200
    with socket.create_connection((env["server"].host, env["server"].port), timeout=10) as s:
        s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")  # no Host at all
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.0 421") or answer.startswith(b"HTTP/1.1 421")


def test_scoped_user_cannot_reach_other_rows(env: dict, admin: Client) -> None:
    tenant = Client(env["server"])
    assert tenant.login("tenant") == 200
    status, body = tenant.get_json(f"/api/threats?from={DAY}&q=suppressed:yes&per_page=500")
    assert {r["src_ip"] for r in body["rows"]} == {"10.0.5.5", "203.0.113.7", "10.0.7.7"}
    status, body = tenant.get_json(f"/api/threats?from={DAY}&q=src:192.168.1.9")
    assert body["total"] == 0
    outside = next(r for r in admin.get_json(f"/api/threats?from={DAY}")[1]["rows"] if r["src_ip"] == "192.168.1.9")
    assert tenant.get_json(f"/api/threats/{outside['id']}/events?from={DAY}")[0] == 404
    assert tenant.post_json(f"/api/triage/{outside['id']}", {"status": "resolved"})[0] == 404
    for fmt in ("csv", "json", "defanged"):
        status, _, payload = tenant.request("GET", f"/api/export?format={fmt}&from={DAY}")
        assert status == 200 and b"192.168.1.9" not in payload and b"198.51.100.99" not in payload
    status, body = tenant.get_json("/api/hunt?indicator=198.51.100.99")
    assert sum(d["hits"] for d in body["days"]) == 0
    status, body = tenant.get_json(f"/api/stats?from={DAY}")
    assert "192.168.1.9" not in json.dumps(body)


HOSTILE = ["' OR 1=1 --", '"; DROP TABLE events; --', "../../../../etc/passwd", "%00", "\x00", "${jndi:ldap://x}",
           "<script>alert(1)</script>", "9" * 400, "-1", "1e309", "NaN", "[]", "{}", "\u202e\u0000\ud7ff", "*",
           "2023-11-13' --", "2023-02-30", "0000-00-00", "99999-01-01"]
ENDPOINTS = ["/api/threats?from={v}", "/api/threats?to={v}", "/api/threats?q={v}", "/api/threats?sort={v}",
             "/api/threats?order={v}", "/api/threats?page={v}", "/api/threats?per_page={v}",
             "/api/threats/{v}/events", "/api/threats/0123456789abcdef/events?limit={v}", "/api/days?from={v}",
             "/api/stats?q={v}", "/api/check?indicator={v}", "/api/hunt?indicator={v}",
             "/api/hunt?indicator=10.0.0.1&budget={v}", "/api/export?format={v}", "/api/export?q={v}",
             "/api/live?after={v}", "/api/suppressions/{v}"]


def test_hostile_log_fields_come_back_verbatim(env: dict, admin: Client) -> None:
    status, body = admin.get_json(f"/api/threats?from={DAY}&q=src:10.0.7.7")
    (row,) = body["rows"]
    assert (row["sensor"], row["dst_ip"], row["dst_port"], row["proto"], row["type"], row["trail"], row["info"],
            row["reference"]) == ("<img src=x onerror=alert(1)>", "'; DROP TABLE events; --", "80 OR 1=1", "<b>",
                                  'TYPE"', "=cmd|' /C calc'!A0", "{{7*7}} ${jndi:x} \u202e", "../../etc/passwd")
    status, headers, payload = admin.request("GET", f"/api/threats/{row['id']}/events?from={DAY}")
    assert headers["content-type"].startswith("application/json") and b"<img" in payload
    assert json.loads(payload)["events"][0]["src_port"] == "1;DROP"
    search = quote('trail:"=cmd|\' /C"')
    status, body = admin.get_json(f"/api/threats?from={DAY}&q={search}")
    assert [r["id"] for r in body["rows"]] == [row["id"]]
    status, _, payload = admin.request("GET", f"/api/export?format=csv&from={DAY}&q=src:10.0.7.7")
    assert "'=cmd|' /C calc'!A0" in payload.decode()
    assert admin.get_json(f"/api/threats?from={DAY}&per_page=500")[1]["total"] == 4  # the table is still there


def test_hostile_input_never_gives_a_5xx(env: dict, admin: Client) -> None:
    before = admin.get_json(f"/api/threats?from={DAY}&per_page=500")[1]
    for template in ENDPOINTS:
        for value in HOSTILE:
            path = template.format(v=quote(value, safe=""))
            if "live" in path:
                path += "&budget=0"  # refused or answered, never streamed (ids in HOSTILE are not numbers)
            status, headers, body = admin.request("GET", path)
            assert status < 500, (path, status, body[:200])
            assert b"Traceback" not in body and b"sqlite" not in body.lower(), path
            if status >= 400:
                assert "error" in json.loads(body), path
    stranger = Client(env["server"], source="127.0.0.4")
    for value in HOSTILE:
        status, answer = stranger.post_json("/api/login", {"username": value, "password": value})
        assert status in (400, 401, 429) and "error" in answer, value
        for path, body in (("/api/triage/0123456789abcdef", {"status": value, "note": value}),
                           ("/api/suppressions", {"scope": "both", "src_ip": value, "trail": value, "note": value})):
            status, answer = admin.post_json(path, body)
            assert status < 500 and "error" in answer, (path, value, status)
    for raw in (b"{", b"[1,2", b"\xff\xfe", b"null", b'"x"', b"1" * 70_000):
        status, _, payload = admin.request("POST", "/api/suppressions", raw=raw,
                                           headers={"Content-Type": "application/json"})
        assert status in (400, 413), raw[:10]
    after = admin.get_json(f"/api/threats?from={DAY}&per_page=500")[1]
    assert after == before


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fpyproject.toml",
                                  "/..%2f..%2f..%2fetc%2fpasswd", "/js/../../app.py", "/app.py", "/__init__.py",
                                  "/.webui/users.json", "/%2e%2e%5c%2e%2e%5capp.py", "/static/%00index.html",
                                  "/index.html%00.js", "//etc/passwd", "/api/../../../etc/passwd"])
def test_static_files_refuse_traversal(env: dict, path: str) -> None:
    c = Client(env["server"])
    status, headers, body = c.request("GET", path)
    assert status in (401, 404), (path, status)
    assert b"root:" not in body and b"[project]" not in body and b"import" not in body


def test_ranges_are_bounded(admin: Client) -> None:
    for query, word in (("from=2000-01-01&to=2026-01-01", "366"), ("from=2023-11-14&to=2023-11-13", "from"),
                        ("from=2023-02-30", "from"), ("from=2023-1-1", "from"), ("to=20231113", "to")):
        for path in ("/api/threats", "/api/days", "/api/stats", "/api/export"):
            status, body = admin.get_json(f"{path}?{query}")
            assert status == 400 and word in body["error"], (path, query)
    assert admin.get_json("/api/threats?from=2023-01-01&to=2024-01-01")[0] == 200  # 366 days: allowed


def test_login_throttling_answers_at_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    server: Server = start_server(logs, users, wait_index=False)
    try:
        c = Client(server)
        for _ in range(5):
            assert c.login("admin", "wrong-password") == 401
        started = time.monotonic()
        status, headers, body = c.request("POST", "/api/login",
                                          body={"username": "admin", "password": PASSWORDS["admin"]})
        assert time.monotonic() - started < 2.0  # refused at once, not slept on
        assert status == 429 and c.cookie is None
        assert headers["retry-after"] == "1" and json.loads(body)["retry_after"] == 1
        time.sleep(1.2)
        assert c.login("admin", "wrong-password") == 401  # 6th failure: the lockout doubles
        status, headers, _ = c.request("POST", "/api/login", body={"username": "admin", "password": "x" * 12})
        assert status == 429 and headers["retry-after"] == "2"
        assert c.login("admin") == 429  # refused again: counted, not audited again
        assert Client(server, source="127.0.0.9").login("admin") == 200  # other clients are not locked out
        time.sleep(2.2)
        assert c.login("admin") == 200  # success clears the record
        assert c.login("admin", "wrong-password") == 401
        assert c.login("admin") == 200
        audit = (logs / ".webui" / "audit.log").read_text()
        assert audit.count("login-throttled") == 2  # once per lockout, however many refusals
        burst = Client(server, source="127.0.0.10")
        with ThreadPoolExecutor(12) as pool:  # parallel guesses from one address
            answers = list(pool.map(lambda _: burst.login("admin", "wrong-password"), range(12)))
        assert answers.count(401) <= 5 and set(answers) <= {401, 429}
    finally:
        server.stop()


def test_tls_when_a_certificate_is_configured(tmp_path: Path) -> None:
    import http.client

    cert, key = loopback_certificate(tmp_path)
    config = tmp_path / "m.toml"
    config.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "server", "-c", str(config), "--log-dir", str(logs),
                             "--users", str(users), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"https://127\.0\.0\.1:(\d+)/", line)
        assert url, line
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", int(url.group(1)), context=context, timeout=30)
        conn.request("POST", "/api/login", body=json.dumps({"username": "admin", "password": PASSWORDS["admin"]}),
                     headers={"Content-Type": "application/json", "Host": f"localhost:{url.group(1)}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert "; Secure" in resp.getheader("Set-Cookie") or "; secure" in resp.getheader("Set-Cookie").lower()
        assert resp.getheader("Strict-Transport-Security").startswith("max-age=")
        conn.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


@pytest.mark.parametrize(("toml", "message"), [
    ("[server]\nsession_idle_minutes = 0\n", "[server] session_idle_minutes: 0 is out of range"),
    ('[server]\nlisten = "everywhere"\n', "[server] listen"),
    ('[server]\nlisten = "example.com:80"\n', "[server] listen"),
    ('[server]\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"\n', "[server] tls_cert"),
    ('[server]\ntls_cert = "x.pem"\n', "tls_key"),
    ('[server]\nsurprise = 1\n', "[server] surprise: unknown key"),
    ('[server]\nallowed_hosts = ["a b"]\n', "[server] allowed_hosts"),
    ('[server]\nseverity_rules = [{severity = "high", info = "("}]\n', "[server] severity_rules[0].info"),
    ('[server]\nseverity_rules = [{severity = "urgent", info = "x"}]\n', "[server] severity_rules[0]"),
])
def test_bad_server_config_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "m.toml"
    config.write_text(toml)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "server", "-c", str(config), "--log-dir",
                           str(tmp_path / "logs")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n",
                                 b"GET /ping HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
                                 b"GET /ping HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
                                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64])
def test_protocol_errors_answer_plainly(env: dict, raw: bytes) -> None:
    """Malformed requests never reach the app: the answer still has our headers, no version, no echo."""
    with socket.create_connection((env["server"].host, env["server"].port), timeout=10) as s:
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"\r\nServer: maltrail\r\n" in head and b"aiohttp" not in answer and b"Python" not in answer
    assert b"X-Content-Type-Options: nosniff" in head and body == b"400\n"


def test_sessions_expire_on_a_running_server(tmp_path: Path) -> None:
    """The real app on 127.0.0.1 (in this process, so its session clock can be moved): an idle
    session ends after session_idle_minutes, a busy one after session_max_hours."""
    import asyncio
    import threading

    from aiohttp import web

    from engine.config import SensorConfig, ServerConfig
    from webui.app import Runner, build_app, make_context
    from webui.auth import Sessions
    from webui.settings import resolve

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / f"{DAY}.log").write_text(LOG)
    settings = resolve(SensorConfig(log_dir=str(logs)), ServerConfig(session_idle_minutes=30, session_max_hours=2))
    assert add_user(settings.users, "admin", PASSWORDS["admin"]).returncode == 0
    now = [1000.0]
    ctx = make_context(settings)
    ctx.sessions = Sessions(settings.session_idle_seconds, settings.session_max_seconds, clock=lambda: now[0])
    loop = asyncio.new_event_loop()

    async def start() -> web.AppRunner:
        runner = Runner(build_app(ctx))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = runner.addresses[0][1]
        server = Server(None, f"http://127.0.0.1:{port}/", "127.0.0.1", port)  # type: ignore[arg-type]
        c = Client(server)
        assert c.login("admin") == 200
        now[0] += 29 * 60
        assert c.get_json("/api/session")[0] == 200  # activity at 29 min
        now[0] += 29 * 60
        assert c.get_json("/api/session")[0] == 200  # 29 min after the last request
        now[0] += 31 * 60
        assert c.get_json("/api/session")[0] == 401  # idle for 31 min
        assert c.login("admin") == 200
        for _ in range(5):  # busy for 2 h: every request within the idle limit
            now[0] += 25 * 60
            c.get_json("/api/session")
        assert c.get_json("/api/session")[0] == 401 and c.get_json(f"/api/threats?from={DAY}")[0] == 401
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_a_damaged_users_file_fails_closed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    good = users.read_text()
    server = start_server(logs, users, wait_index=False)
    try:
        c = Client(server)
        assert c.login("admin") == 200
        users.write_text('{"users": {"admin": {"password": "plain"}}}')
        assert c.get_json("/api/session")[0] == 401
        assert Client(server, source="127.0.0.5").login("admin") == 401
        users.write_text(good)
        assert Client(server, source="127.0.0.6").login("admin") == 200
    finally:
        out, err = server.stop()
    assert "every session refused until it is fixed" in err and "Traceback" not in err
