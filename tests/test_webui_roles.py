"""Roles on the real server: every OpenAPI path x role (admin, analyst, viewer) x scope (all,
one network) gives the status this table expects, written here by hand; the table must name
every operation the server describes, so a new endpoint cannot go unchecked. Also: a scoped
user sees no global totals, and the first admin password is created only after a successful
start (and made again when it was never shown)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webui_support import Client, Server, add_user, start_server

from engine.eventlog import format_event, log_date

T0 = int(time.mktime((2024, 4, 2, 10, 0, 0, 0, 0, -1)))
DAY = log_date(T0)
SCOPE = "10.0.0.0/24"
IN, OUT = "10.0.0.5", "172.16.0.9"
ROLES = ("admin", "analyst", "viewer")
PASSWORD = "role-password-1"
PUBLIC = {("post", "/api/login"), ("get", "/api/openapi.json")}
A, V = 200, 403  # allowed, refused for the role
# (method, path, target) -> role -> status; target "in"/"out" is a threat (or rule) inside/outside
# the scoped users' network; a scoped user gets 404 for what is outside it.
EXPECT: dict[tuple[str, str], dict[str, int]] = {
    ("get", "/api/session"): {"admin": A, "analyst": A, "viewer": A},
    ("post", "/api/logout"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/threats"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/threats/{id}/events"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/days"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/stats"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/check"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/hunt"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/hunt/events"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/hunt/export"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/live"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/status"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/sensors"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/sensors/remote"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/blocklist"): {"admin": 401, "analyst": 401, "viewer": 401},  # a bearer token only, never a session
    ("get", "/api/export"): {"admin": A, "analyst": A, "viewer": A},
    ("post", "/api/triage/{id}"): {"admin": A, "analyst": A, "viewer": V},
    ("get", "/api/threats/{id}/history"): {"admin": A, "analyst": A, "viewer": A},
    ("get", "/api/suppressions"): {"admin": A, "analyst": A, "viewer": A},
    ("post", "/api/suppressions"): {"admin": A, "analyst": A, "viewer": V},
    ("delete", "/api/suppressions/{id}"): {"admin": A, "analyst": A, "viewer": V},
    ("get", "/api/users"): {"admin": A, "analyst": V, "viewer": V},
    ("post", "/api/users"): {"admin": A, "analyst": V, "viewer": V},
    ("post", "/api/users/{id}"): {"admin": A, "analyst": V, "viewer": V},
    ("delete", "/api/users/{id}"): {"admin": A, "analyst": V, "viewer": V},
    ("get", "/api/views"): {"admin": A, "analyst": A, "viewer": A},
    ("post", "/api/views"): {"admin": A, "analyst": A, "viewer": A},
    ("delete", "/api/views/{id}"): {"admin": A, "analyst": A, "viewer": A},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("webui-roles")
    logs = work / "logs"
    logs.mkdir()
    events = [(T0 + i, 0, src, 40000, "198.51.100.66", 443, "TCP", "IP", "198.51.100.66", "malware (x)", "(static)")
              for i, src in enumerate((IN, OUT, IN))]
    (logs / f"{DAY}.log").write_text("".join(format_event(e, "gw") for e in events))
    users = work / "users.json"
    assert add_user(users, "admin", "admin-password-1", "--admin").returncode == 0
    for role in ROLES:
        for scoped in (False, True):
            extra = ["--role", role] + (["--scope", SCOPE] if scoped else [])
            done = add_user(users, f"r-{role}{'-s' if scoped else ''}", PASSWORD, *extra)
            assert done.returncode == 0, done.stderr
    server = start_server(logs, users)
    yield {"server": server, "logs": logs, "users": users}
    server.stop()


def _login(server: Server, name: str, password: str = PASSWORD) -> Client:
    client = Client(server)
    assert client.login(name, password) == 200
    return client


def _threat_ids(admin: Client) -> dict[str, str]:
    status, body = admin.get_json(f"/api/threats?from={DAY}&to={DAY}")
    assert status == 200
    return {r["src_ip"]: r["id"] for r in body["rows"]}


def _call(client: Client, admin: Client, method: str, path: str, target: str, threats: dict[str, str]) -> int:
    src = IN if target == "in" else OUT
    query = f"?from={DAY}&to={DAY}"
    if path == "/api/live":
        conn = http.client.HTTPConnection(client.server.host, client.server.port, timeout=30)
        conn.request("GET", path, headers={"Cookie": client.cookie or "",
                                           "Host": f"{client.server.host}:{client.server.port}"})
        status = conn.getresponse().status
        conn.close()
        return status
    if path == "/api/check":
        query = "?indicator=198.51.100.66"
    elif path.startswith("/api/hunt"):
        query = f"?indicator={src}"
    if path.startswith("/api/views"):  # a user's own views: every role, whatever the scope
        view = {"name": f"v-{time.monotonic_ns()}", "q": f"src:{src}", "days": 7}
        if method == "get":
            return client.request("GET", path)[0]
        status, saved = client.post_json("/api/views", view)
        deleted = client.request("DELETE", f"/api/views/{saved['id']}")[0]
        return status if method == "post" else deleted
    if path.startswith("/api/users") and method != "get":
        return _call_users(client, admin, method, path)
    if "{id}" in path and "suppressions" in path:
        # a rule on the target source made by the caller itself when it may (else by an admin)
        maker = client if _may_add(client) and (target == "in" or not _scoped(client)) else admin
        status, rule = maker.post_json("/api/suppressions", {"scope": "source", "src_ip": src})
        assert status == 200, rule
        return client.request("DELETE", path.replace("{id}", str(rule["id"])))[0]
    path = path.replace("{id}", threats[src])
    if method == "get":
        return client.request("GET", path + query)[0]
    if method == "delete":
        return client.request("DELETE", path)[0]
    body = {"status": "investigating", "note": "x"} if "triage" in path else {"scope": "source", "src_ip": src}
    return client.request("POST", path, body=body)[0]


def _call_users(client: Client, admin: Client, method: str, path: str) -> int:
    """Create, change or remove a throw-away user (the admin makes and removes it around the call)."""
    name = f"t-{time.monotonic_ns()}"
    user = {"name": name, "password": PASSWORD, "role": "viewer", "scope": [SCOPE]}
    if path == "/api/users":
        status = client.post_json(path, user)[0]
    else:
        assert admin.post_json("/api/users", user)[0] == 200
        if method == "post":
            status = client.post_json(f"/api/users/{name}", {"role": "analyst", "scope": []})[0]
        else:
            status = client.request("DELETE", f"/api/users/{name}")[0]
    admin.request("DELETE", f"/api/users/{name}")
    return status


def _may_add(client: Client) -> bool:
    return client.get_json("/api/session")[1]["role"] != "viewer"


def _scoped(client: Client) -> bool:
    return bool(client.get_json("/api/session")[1]["scope"])


def _clear_rules(admin: Client) -> None:
    for rule in admin.get_json("/api/suppressions")[1]["rules"]:
        assert admin.request("DELETE", f"/api/suppressions/{rule['id']}")[0] == 200


def test_every_operation_is_in_the_matrix(env: dict) -> None:
    status, spec = Client(env["server"]).get_json("/api/openapi.json")
    ops = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert ops - PUBLIC == set(EXPECT), "add the new operation to EXPECT with its status per role"


@pytest.mark.parametrize("scoped", [False, True], ids=["all", "scoped"])
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(env: dict, role: str, scoped: bool) -> None:
    server = env["server"]
    admin = _login(server, "admin", "admin-password-1")
    threats = _threat_ids(admin)
    name = f"r-{role}{'-s' if scoped else ''}"
    got, want = {}, {}
    for (method, path), by_role in EXPECT.items():
        targets = ("in", "out") if "{id}" in path or path in ("/api/hunt", "/api/suppressions") else ("in",)
        if path.startswith(("/api/views", "/api/users")):
            targets = ("in",)
        if method == "get" and path == "/api/suppressions":
            targets = ("in",)
        for target in targets:
            expected = by_role[role]
            if expected == A and scoped and target == "out" and ("{id}" in path or method == "post"):
                expected = 403 if path == "/api/suppressions" else 404  # outside the scope
            if expected == A and scoped and target == "out" and "suppressions/{id}" in path:
                expected = 404
            if expected == A and scoped and path.startswith("/api/users") and method != "get":
                expected = 403  # a scoped admin could grant what it cannot see
            client = _login(server, name)
            got[(method, path, target)] = _call(client, admin, method, path, target, threats)
            want[(method, path, target)] = expected
            _clear_rules(admin)
    assert got == want


def test_analyst_removes_only_own_rules(env: dict) -> None:
    server = env["server"]
    admin = _login(server, "admin", "admin-password-1")
    status, rule = admin.post_json("/api/suppressions", {"scope": "source", "src_ip": IN})
    assert status == 200
    analyst = _login(server, "r-analyst")
    assert analyst.request("DELETE", f"/api/suppressions/{rule['id']}")[0] == 403
    assert admin.request("DELETE", f"/api/suppressions/{rule['id']}")[0] == 200


def test_scoped_users_see_no_global_totals(env: dict) -> None:
    server = env["server"]
    scoped = _login(server, "r-viewer-s")
    status, body = scoped.get_json("/api/status")
    assert status == 200 and set(body) == {"running", "updated", "scoped", "index"}
    assert "events" not in body["index"]
    admin = _login(server, "admin", "admin-password-1")
    assert admin.get_json("/api/status")[1]["index"]["events"] == 3
    tid = _threat_ids(admin)[IN]
    events = scoped.get_json(f"/api/threats/{tid}/events?from={DAY}&to={DAY}")[1]["events"]
    assert len(events) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", e["id"]) for e in events)
    for path in ("/api/threats", "/api/stats"):  # the last event an answer counts: in scope and opaque
        assert admin.get_json(f"{path}?from={DAY}&to={DAY}")[1]["as_of"] == 3
        assert scoped.get_json(f"{path}?from={DAY}&to={DAY}")[1]["as_of"] == events[0]["id"]
    assert [e["id"] for e in admin.get_json(f"/api/threats/{tid}/events?from={DAY}&to={DAY}")[1]["events"]] == [3, 1]


def _server(log_dir: Path, users: Path, listen: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "server", "--log-dir", str(log_dir),
                             "--users", str(users), "--listen", listen],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_first_admin_password_only_after_a_successful_start(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _server(logs, users, f"127.0.0.1:{busy.getsockname()[1]}")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "cannot listen" in err and "password" not in out
    assert not users.exists() or json.loads(users.read_text())["users"] == {}
    # A password stored but never shown (a start that died before printing it) is made anew.
    users.write_text(json.dumps({"version": 1, "users": {"admin": {
        "password": {"kdf": "scrypt"}, "role": "admin", "scope": [], "unshown": True}}}))
    proc = _server(logs, users, "127.0.0.1:0")
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        password = re.search(r"created user 'admin' with password: (\S+)", "".join(lines))
        assert password, lines
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[0])
        server = Server(proc, url.group(0), "127.0.0.1", int(url.group(1)))
        assert Client(server).login("admin", password.group(1)) == 200
        assert "unshown" not in json.loads(users.read_text())["users"]["admin"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    proc = _server(logs, users, "127.0.0.1:0")  # shown once: a later start keeps it and prints nothing
    try:
        assert "dashboard:" in proc.stdout.readline()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "password" not in out


def test_saved_views_are_per_user(env: dict) -> None:
    server = env["server"]
    viewer, analyst = _login(server, "r-viewer"), _login(server, "r-analyst")
    status, view = viewer.post_json("/api/views", {"name": "wall", "q": "sev:high", "days": 7})
    assert status == 200 and view["days"] == 7
    status, fixed = viewer.post_json("/api/views", {"name": "incident", "q": f"src:{IN}", "from": DAY, "to": DAY})
    assert status == 200 and (fixed["from"], fixed["to"], fixed["days"]) == (DAY, DAY, None)
    status, again = viewer.post_json("/api/views", {"name": "wall", "q": "sev:medium", "days": 1})  # same name
    assert again["id"] == view["id"]
    views = viewer.get_json("/api/views")[1]["views"]
    assert [(v["name"], v["q"]) for v in views] == [("incident", f"src:{IN}"), ("wall", "sev:medium")]
    assert analyst.get_json("/api/views")[1]["views"] == []  # another user's views are not shared
    assert analyst.request("DELETE", f"/api/views/{view['id']}")[0] == 404
    for bad in ({"name": "x", "q": "foo:bar", "days": 1}, {"name": "", "days": 1}, {"name": "x", "days": 0},
                {"name": "x"}, {"name": "x", "from": DAY, "to": "2020-01-01"}):
        assert viewer.post_json("/api/views", bad)[0] == 400, bad
    assert viewer.request("DELETE", f"/api/views/{view['id']}")[0] == 200
    assert [v["name"] for v in viewer.get_json("/api/views")[1]["views"]] == ["incident"]


def test_admin_manages_users(env: dict) -> None:
    """Create, log in, change role and scope, reset the password, disable, remove: each takes
    effect on the running server at once; hashed as the CLI does; audited; bad input is a 400."""
    server, users = env["server"], env["users"]
    admin = _login(server, "admin", "admin-password-1")
    body = {"name": "carol", "password": "carol-password-1", "role": "viewer", "scope": ["10.0.0.0/24"]}
    status, carol = admin.post_json("/api/users", body)
    assert status == 200 and carol == {"name": "carol", "role": "viewer", "scope": ["10.0.0.0/24"], "disabled": False}
    assert admin.post_json("/api/users", body)[0] == 409
    record = json.loads(users.read_text())["users"]["carol"]
    assert record["password"]["kdf"] == "scrypt" and "carol-password-1" not in users.read_text()
    listed = {u["name"]: u for u in admin.get_json("/api/users")[1]["users"]}
    assert listed["carol"]["role"] == "viewer" and "password" not in listed["carol"]
    done = subprocess.run([sys.executable, "-m", "engine.cli", "user", "list", "--users", str(users)],
                          capture_output=True, text=True, timeout=60)
    assert "carol  scope=10.0.0.0/24  viewer" in done.stdout  # the CLI reads what the API wrote

    user = _login(server, "carol", "carol-password-1")
    assert user.post_json("/api/triage/" + _threat_ids(admin)[IN], {"status": "investigating"})[0] == 403
    status, changed = admin.post_json("/api/users/carol", {"role": "analyst", "scope": []})
    assert status == 200 and (changed["role"], changed["scope"]) == ("analyst", [])
    session = user.get_json("/api/session")[1]  # the same session: the new role applies at once
    assert (session["role"], session["scope"]) == ("analyst", [])
    other = _login(server, "carol", "carol-password-1")
    assert admin.post_json("/api/users/carol", {"password": "carol-password-2"})[0] == 200
    assert other.get_json("/api/session")[0] == 401  # a new password ends the old sessions
    assert Client(server).login("carol", "carol-password-1") == 401
    user = _login(server, "carol", "carol-password-2")
    assert admin.post_json("/api/users/carol", {"disabled": True})[0] == 200
    assert user.get_json("/api/session")[0] == 401
    assert Client(server).login("carol", "carol-password-2") == 401
    assert admin.post_json("/api/users/carol", {"disabled": False})[0] == 200
    assert Client(server).login("carol", "carol-password-2") == 200

    for bad in ({"name": "x y", "password": "long-enough-1"}, {"name": "dave", "password": "short"},
                {"name": "dave", "password": "long-enough-1", "role": "root"},
                {"name": "dave", "password": "long-enough-1", "scope": ["10.0.0.0/33"]},
                {"name": "dave", "password": "long-enough-1", "scope": "10.0.0.0/8"}, {"name": "dave"}):
        status, err = admin.post_json("/api/users", bad)
        assert status == 400 and err["error"], bad
    assert admin.post_json("/api/users/carol", {"disabled": "yes"})[0] == 400
    assert admin.post_json("/api/users/nobody", {"role": "viewer"})[0] == 404
    assert admin.request("DELETE", "/api/users/nobody")[0] == 404
    no_csrf = Client(server)
    no_csrf.cookie = admin.cookie
    assert no_csrf.post_json("/api/users/carol", {"role": "viewer"})[0] == 403
    assert admin.request("DELETE", "/api/users/carol")[0] == 200
    assert Client(server).login("carol", "carol-password-2") == 401
    audit = (env["logs"] / ".webui" / "audit.log").read_text()
    assert "user-add user=admin" in audit and "target=carol" in audit and "password=reset" in audit
    assert "user-remove user=admin" in audit and "carol-password" not in audit


def test_the_last_admin_stays(tmp_path: Path) -> None:
    """Removing, disabling or demoting the last enabled admin is refused; with a second admin it is not."""
    users = tmp_path / "users.json"
    (tmp_path / "logs").mkdir()
    assert add_user(users, "admin", "admin-password-1", "--admin").returncode == 0
    assert add_user(users, "ann", PASSWORD).returncode == 0
    server = start_server(tmp_path / "logs", users)
    try:
        _last_admin_checks(server)
    finally:
        server.stop()


def _last_admin_checks(server: Server) -> None:
    admin = _login(server, "admin", "admin-password-1")
    for change in ({"role": "analyst"}, {"disabled": True}):
        status, err = admin.post_json("/api/users/admin", change)
        assert status == 409 and "last" in err["error"], change
    assert admin.request("DELETE", "/api/users/admin")[0] == 409
    assert admin.post_json("/api/users", {"name": "admin2", "password": "admin-password-2", "role": "admin"})[0] == 200
    second = _login(server, "admin2", "admin-password-2")
    assert second.post_json("/api/users/admin", {"disabled": True})[0] == 200
    assert second.post_json("/api/users/admin2", {"role": "viewer"})[0] == 409  # now admin2 is the last one
    assert second.post_json("/api/users/admin", {"disabled": False})[0] == 200
    assert _login(server, "admin", "admin-password-1").request("DELETE", "/api/users/admin2")[0] == 200
