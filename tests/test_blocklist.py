"""`GET /api/blocklist` on the real `maltrail server`: bearer tokens made by `maltrail token add`
(stored hashed), 401 without a valid token, 403 for a token without the scope, the filters, and
no address on the allowlist ever returned."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from webui_support import PASSWORDS, Client, add_user, logged_in, start_server

NOW = time.time()


def _line(when: float, src: str, dst: str, kind: str, trail: str, info: str, ref: str = "(static)") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + ".000000"
    return f'"{stamp}" gw {src} 40000 {dst} 80 TCP {kind} {trail} "{info}" {ref}\n'


EVENTS = [
    (NOW - 3600, "203.0.113.7", "10.0.9.9", "IP", "203.0.113.7", "mass scanner"),  # listed source, low
    (NOW - 3500, "198.51.100.20", "10.0.0.5", "URL", "x.example/../../etc/passwd", "potential directory traversal"),
    (NOW - 3400, "10.0.5.5", "192.0.2.53", "DNS", "evil.example", "malware (test)"),  # a victim: not blocked
    (NOW - 3300, "192.168.1.50", "10.0.0.5", "IP", "192.168.1.50", "known attacker"),  # private: allowlisted
    (NOW - 3200, "198.51.100.77", "10.0.0.5", "IP", "198.51.100.77", "known attacker"),  # configured allowlist
    (NOW - 3100, "2001:db8::66", "2001:db8::1", "IP", "2001:db8::66", "mass scanner"),
    (NOW - 3000, "203.0.113.50", "10.0.0.5", "IPORT", "203.0.113.50:4444", "botnet c2 (malware)"),  # high
    (NOW - 3 * 86400, "203.0.113.99", "10.0.0.5", "IP", "203.0.113.99", "known attacker"),  # three days old
]
ALLOWLISTED = ("192.168.1.50", "198.51.100.77")


def _maltrail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("blocklist")
    logs = work / "logs"
    logs.mkdir()
    for ev in EVENTS:
        day = time.strftime("%Y-%m-%d", time.localtime(ev[0]))
        with open(logs / f"{day}.log", "a") as f:
            f.write(_line(*ev))
    users = work / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"], "--admin").returncode == 0
    config = work / "maltrail.toml"
    config.write_text('[server]\nblocklist_allowlist = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", '
                      '"192.168.0.0/16", "198.51.100.77/32"]\n')
    tokens = {}
    for name, scope in (("fail2ban", "blocklist"), ("monitor", "status")):
        done = _maltrail("token", "add", name, "--scope", scope, "-c", str(config), "--log-dir", str(logs))
        assert done.returncode == 0, done.stderr
        tokens[name] = done.stdout.strip()
    server = start_server(logs, users, "-c", str(config))
    yield {"server": server, "tokens": tokens, "logs": logs, "config": config}
    server.stop()


def _get(env: dict, path: str, token: str | None = None, client: Client | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return (client or Client(env["server"])).request("GET", path, headers=headers)


def test_no_token_or_a_wrong_one_is_401(env: dict) -> None:
    status, headers, _ = _get(env, "/api/blocklist")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert _get(env, "/api/blocklist", "mtk_not-a-token")[0] == 401
    assert _get(env, "/api/blocklist", "")[0] == 401
    # a dashboard session is not a token
    assert _get(env, "/api/blocklist", client=logged_in(env["server"], "admin"))[0] == 401


def test_a_token_without_the_scope_is_403(env: dict) -> None:
    status, _, body = _get(env, "/api/blocklist", env["tokens"]["monitor"])
    assert status == 403 and "blocklist" in json.loads(body)["error"]
    assert _get(env, "/api/status", env["tokens"]["fail2ban"])[0] == 403
    status, _, body = _get(env, "/api/status", env["tokens"]["monitor"])
    assert status == 200 and "index" in json.loads(body)
    assert _get(env, "/api/threats", env["tokens"]["fail2ban"])[0] == 401  # tokens reach only their paths


def test_blocklist_plain_and_json(env: dict) -> None:
    status, headers, body = _get(env, "/api/blocklist", env["tokens"]["fail2ban"])
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.decode().splitlines() == ["198.51.100.20", "203.0.113.7", "203.0.113.50", "2001:db8::66"]
    status, _, body = _get(env, "/api/blocklist?format=json&severity=high", env["tokens"]["fail2ban"])
    rows = json.loads(body)["addresses"]
    assert [(r["ip"], r["severity"], r["events"], r["reasons"]) for r in rows] == \
        [("203.0.113.50", "high", 1, ["botnet c2 (malware)"])]
    status, _, body = _get(env, "/api/blocklist?since=7d", env["tokens"]["fail2ban"])
    assert "203.0.113.99" in body.decode().split()
    status, _, body = _get(env, f"/api/blocklist?since={int(NOW - 3150)}", env["tokens"]["fail2ban"])
    assert body.decode().split() == ["203.0.113.50", "2001:db8::66"]
    assert _get(env, "/api/blocklist?since=yesterday-ish", env["tokens"]["fail2ban"])[0] == 400
    assert _get(env, "/api/blocklist?format=xml", env["tokens"]["fail2ban"])[0] == 400


def test_the_allowlist_is_never_returned(env: dict) -> None:
    allow = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                               "198.51.100.77/32")]
    seen = set()
    for query in ("", "?since=30d", "?since=30d&severity=low&format=json", "?since=0000000001",
                  "?severity=medium", "?since=2000-01-01"):
        status, _, body = _get(env, "/api/blocklist" + query, env["tokens"]["fail2ban"])
        assert status == 200
        text = body.decode()
        ips = [r["ip"] for r in json.loads(text)["addresses"]] if "json" in query else text.split()
        seen.update(ips)
        for ip in ips:
            address = ipaddress.ip_address(ip)
            assert not any(address.version == n.version and address in n for n in allow), ip
    assert not seen & set(ALLOWLISTED) and "203.0.113.99" in seen


def test_tokens_are_stored_hashed_and_can_be_revoked(env: dict) -> None:
    path = env["logs"] / ".webui" / "tokens.json"
    text = path.read_text()
    assert env["tokens"]["fail2ban"] not in text and "sha256" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    done = _maltrail("token", "add", "temp", "--scope", "blocklist", "--log-dir", str(env["logs"]))
    temp = done.stdout.strip()
    assert _get(env, "/api/blocklist", temp)[0] == 200
    assert _maltrail("token", "remove", "temp", "--log-dir", str(env["logs"])).returncode == 0
    assert _get(env, "/api/blocklist", temp)[0] == 401
    bad = _maltrail("token", "add", "x", "--scope", "everything", "--log-dir", str(env["logs"]))
    assert bad.returncode == 2 and "'everything' is not a scope" in bad.stderr


EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _example_env(env: dict, tmp_path: Path) -> dict[str, str]:
    token_file = tmp_path / "token"
    token_file.write_text(env["tokens"]["fail2ban"] + "\n")
    return {**os.environ, "MALTRAIL_URL": env["server"].url.rstrip("/"), "MALTRAIL_TOKEN_FILE": str(token_file),
            "MALTRAIL_SINCE": "24h"}


def test_fail2ban_example_filter_bans_what_the_pull_logs(env: dict, tmp_path: Path) -> None:
    if not (shutil.which("fail2ban-regex") and shutil.which("curl")):
        pytest.skip("fail2ban (fail2ban-regex) and curl are needed (scripts/setup.sh installs them)")
    log = tmp_path / "maltrail-blocklist.log"
    done = subprocess.run([str(EXAMPLES / "fail2ban" / "maltrail-blocklist-pull")], capture_output=True, text=True,
                          env={**_example_env(env, tmp_path), "MALTRAIL_BLOCKLIST_LOG": str(log)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(log.read_text().splitlines()) == 4
    done = subprocess.run(["fail2ban-regex", "--print-all-matched", str(log),
                           str(EXAMPLES / "fail2ban" / "filter.d" / "maltrail-blocklist.conf")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Lines: 4 lines, 0 ignored, 4 matched, 0 missed", done.stdout), done.stdout
    for ip in ("198.51.100.20", "203.0.113.7", "203.0.113.50", "2001:db8::66"):
        assert f"ban {ip}" in done.stdout


@pytest.fixture()
def namespace() -> Iterator[str]:
    if not (shutil.which("nft") and shutil.which("ip") and shutil.which("curl")):
        pytest.skip("nftables (nft), iproute2 and curl are needed (scripts/setup.sh installs them)")
    name = f"mtnft{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"network namespaces not permitted here (ip netns add: {made.stderr.strip()})")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_nftables_example_loads_the_blocklist_into_its_sets(env: dict, tmp_path: Path, namespace: str) -> None:
    """In a network namespace of the test's own: the ruleset loads, the loader fills the sets."""
    nft = ["ip", "netns", "exec", namespace, "nft"]
    done = subprocess.run([*nft, "-f", str(EXAMPLES / "nftables" / "maltrail-blocklist.nft")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for _ in range(2):  # a second run replaces, never adds to, the sets
        done = subprocess.run([str(EXAMPLES / "nftables" / "maltrail-nft-load")], capture_output=True, text=True,
                              env={**_example_env(env, tmp_path), "NFT": " ".join(nft)}, timeout=60)
        assert done.returncode == 0, done.stderr
    elements = {}
    for family in ("blocklist4", "blocklist6"):
        listed = subprocess.run([*nft, "-j", "list", "set", "inet", "maltrail", family], capture_output=True,
                                text=True, timeout=60, check=True)
        (entry,) = [x["set"] for x in json.loads(listed.stdout)["nftables"] if "set" in x]
        elements[family] = sorted(entry.get("elem", []))
    assert elements == {"blocklist4": ["198.51.100.20", "203.0.113.50", "203.0.113.7"],
                        "blocklist6": ["2001:db8::66"]}


def test_openapi_describes_the_token_paths(env: dict) -> None:
    status, _, body = _get(env, "/api/openapi.json")
    spec = json.loads(body)
    assert spec["components"]["securitySchemes"]["token"] == {"type": "http", "scheme": "bearer"}
    assert spec["paths"]["/api/blocklist"]["get"]["security"] == [{"token": []}]
    assert {"token": []} in spec["paths"]["/api/status"]["get"]["security"]
