"""Login throttling per (account, address) with an address limit and a global ceiling, and
X-Forwarded-For believed only from [server] trusted_proxies: users behind one proxy do not lock
each other out, and nobody else can pick the address the throttle and the audit see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from webui_support import PASSWORDS, Client, add_user, start_server

from engine.config import ConfigError, SensorConfig, ServerConfig
from webui.auth import LoginGuard
from webui.settings import resolve


def test_guard_counts_per_account_and_address_with_ceilings() -> None:
    g = LoginGuard(free=3, address_free=6, global_per_minute=10)
    for i in range(3):
        g.failure("10.0.0.1", "alice", now=i)
    assert g.retry_after("10.0.0.1", "alice", now=2.5) > 0
    assert g.retry_after("10.0.0.1", "bob", now=2.5) == 0  # another account from the same proxy
    assert g.retry_after("10.0.0.2", "alice", now=2.5) == 0  # the same account from elsewhere
    for i, name in enumerate(("bob", "carol", "dave")):
        g.failure("10.0.0.1", name, now=4 + i)
    assert g.retry_after("10.0.0.1", "erin", now=6.5) > 0  # spraying accounts from one address
    for i in range(4):
        g.failure(f"192.0.2.{i}", f"user{i}", now=8)
    assert g.retry_after("198.51.100.1", "frank", now=9) == 51  # 10 failures this minute: everyone waits
    assert g.retry_after("198.51.100.1", "frank", now=61) == 0
    g.success("10.0.0.2", "alice")


def test_proxy_users_and_forwarded_addresses(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    users = tmp_path / "users.json"
    for name in ("admin", "tenant"):
        assert add_user(users, name, PASSWORDS[name]).returncode == 0
    config = tmp_path / "m.toml"
    config.write_text('[server]\ntrusted_proxies = ["127.0.0.1"]\n')
    server = start_server(logs, users, "-c", str(config), wait_index=False)
    try:
        proxy = Client(server)  # 127.0.0.1: a trusted proxy

        def login(name: str, password: str, forwarded: str, client: Client = proxy) -> int:
            return client.request("POST", "/api/login", body={"username": name, "password": password},
                                  headers={"X-Forwarded-For": forwarded})[0]

        for _ in range(5):
            assert login("admin", "wrong-password", "203.0.113.7") == 401
        assert login("admin", PASSWORDS["admin"], "203.0.113.7") == 429
        assert login("tenant", PASSWORDS["tenant"], "203.0.113.7") == 200  # another account, same address
        assert login("admin", PASSWORDS["admin"], "203.0.113.8") == 200  # another client behind the proxy
        assert login("admin", PASSWORDS["admin"], "203.0.113.7, 127.0.0.1") == 429  # proxies chained
        assert login("admin", PASSWORDS["admin"], "not-an-address") == 200  # junk: the proxy itself
        untrusted = Client(server, source="127.0.0.9")
        for _ in range(5):
            assert login("admin", "wrong-password", "203.0.113.50", untrusted) == 401
        assert login("admin", PASSWORDS["admin"], "203.0.113.51", untrusted) == 429  # the header is ignored
    finally:
        server.stop()
    audit = (logs / ".webui" / "audit.log").read_text()
    assert "login-failed user=admin from=203.0.113.7" in audit
    assert "from=127.0.0.9" in audit and "from=203.0.113.50" not in audit


@pytest.mark.parametrize(("server", "message"), [
    (ServerConfig(trusted_proxies=["10.0.0.300"]), "[server] trusted_proxies"),
    (ServerConfig(pivot_links=[{"name": "VT", "url": "ftp://x/{value}"}]), "pivot_links[0] url"),
    (ServerConfig(pivot_links=[{"name": "VT", "url": "https://x/"}]), "{value}"),
    (ServerConfig(pivot_links=[{"name": "", "url": "https://x/{value}"}]), "pivot_links[0] name"),
    (ServerConfig(pivot_links=[{"name": "VT", "url": "https://x/{value}", "fields": ["port"]}]), "fields"),
    (ServerConfig(pivot_links=[{"name": "VT", "url": "https://x/{value}", "target": "_self"}]), "unknown key"),
])
def test_settings_refused_with_the_key(server: ServerConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(SensorConfig(), server)


def test_settings_accepted() -> None:
    s = resolve(SensorConfig(), ServerConfig(trusted_proxies=["10.0.0.0/8"], pivot_links=[
        {"name": "VT", "url": "https://www.virustotal.com/gui/search/{value}"}]))
    assert s.trusted_proxies.contains_text("10.1.2.3") and not s.trusted_proxies.contains_text("192.0.2.1")
    assert s.pivot_links == [{"name": "VT", "url": "https://www.virustotal.com/gui/search/{value}",
                              "fields": ["src_ip", "dst_ip", "trail"]}]
    assert resolve(SensorConfig(), ServerConfig()).pivot_links == []
