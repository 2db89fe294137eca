"""Maltrail's threat grouping on the real server: `(sub)` parts joined, one threat per DGA /
NXDOMAIN-flood / DNS-exhaustion source, the distinct trails kept, ids stable across a rebuild of
the index, and suppressions by trail covering the trail's subdomains (audited with the trail)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from webui_support import PASSWORDS, Client, add_user, logged_in, start_server

from engine.eventlog import format_event, log_date
from webui.grouping import group_key, normalize_trail

T0 = int(time.mktime((2024, 3, 5, 9, 0, 0, 0, 0, -1)))
DAY = log_date(T0)
DGA_NAMES = [f"q{i}x7kz{i * 7919 % 1000:03d}vb" for i in range(40)]


def _events() -> list[tuple]:
    out = []
    t = T0
    for trail in ("(www).pastebin.com", "pastebin.com", "(cdn).pastebin.com", "(www).pastebin.com"):
        t += 1
        out.append((t, 0, "10.0.0.5", 40000, "192.0.2.53", 53, "UDP", "DNS", trail, "suspicious (paste site)",
                    "(static)"))
    for name in DGA_NAMES:
        t += 1
        out.append((t, 0, "10.0.0.6", 40001, "192.0.2.53", 53, "UDP", "DNS", f"({name}).com",
                    "entropy threshold no such domain (suspicious)", "(heuristic)"))
    for i in range(5):
        t += 1
        out.append((t, 0, "10.0.0.6", 40002, "192.0.2.53", 53, "UDP", "DNS", f"(a{i}.b{i}).victim.org",
                    "potential dns exhaustion (suspicious)", "(heuristic)"))
    for i in range(3):
        t += 1
        out.append((t, 0, "10.0.0.7", 40003, "198.51.100.1", 53, "UDP", "DNS", f"(nx{i},nx{i + 1}).parent.net",
                    "excessive no such domain (suspicious)", "(heuristic)"))
    t += 1
    out.append((t, 0, "10.0.0.8", 40004, "192.0.2.53", 53, "UDP", "DNS", "notpastebin.com", "suspicious (paste site)",
                "(static)"))
    t += 1
    out.append((t, 0, "10.0.0.9", 40005, "192.0.2.53", 53, "UDP", "DNS", "www.pastebin.com",
                "suspicious (paste site)", "(static)"))
    return out


def test_group_keys() -> None:
    assert normalize_trail("(www).pastebin.com") == "pastebin.com"
    assert normalize_trail("(a,b).parent.net") == "parent.net"
    assert normalize_trail(" .evil.com. ") == "evil.com"
    assert normalize_trail("(only)") == "(only)"
    assert group_key("(www).pastebin.com", "x")[0] == group_key("pastebin.com", "y")[0] == "pastebin.com"
    assert group_key("(abc).com", "consonant threshold no such domain (suspicious)")[0] == "\x00dga"
    assert group_key("(a.b).x.org", "potential dns exhaustion (suspicious)")[0] == "\x00exhaustion"
    assert group_key("(n1,n2).x.org", "excessive no such domain (suspicious)")[0] == "\x00flood"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("webui-grouping")
    logs = work / "logs"
    logs.mkdir()
    (logs / f"{DAY}.log").write_text("".join(format_event(e, "gw") for e in _events()))
    users = work / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"], "--admin").returncode == 0
    return {"logs": logs, "users": users}


def _threats(client: Client, q: str = "") -> dict[str, dict]:
    status, body = client.get_json(f"/api/threats?from={DAY}&to={DAY}&per_page=500&q={q}")
    assert status == 200, body
    return {(r["src_ip"], r["trail"]): r for r in body["rows"]}


def test_maltrail_grouping_and_stable_ids(env: dict) -> None:
    server = start_server(env["logs"], env["users"])
    try:
        rows = _threats(logged_in(server, "admin"))
    finally:
        server.stop()
    # 52 events: pastebin variants (1 threat), 40 DGA names + 5 exhaustion names of one source
    # (1 threat each), a flood (1), notpastebin.com (1), www.pastebin.com from another source (1).
    assert len(rows) == 6
    paste = rows[("10.0.0.5", "pastebin.com")]
    assert paste["count"] == 4 and paste["values"] == ["(cdn).pastebin.com", "(www).pastebin.com", "pastebin.com"]
    dga = next(r for r in rows.values() if r["src_ip"] == "10.0.0.6" and "entropy" in r["info"])
    assert dga["count"] == 40 and len(dga["values"]) == 40
    exhaustion = next(r for r in rows.values() if r["src_ip"] == "10.0.0.6" and "exhaustion" in r["info"])
    assert exhaustion["count"] == 5 and exhaustion["trail"] == "victim.org"
    assert next(r for r in rows.values() if r["src_ip"] == "10.0.0.7")["count"] == 3
    # The index is rebuilt from the logs: every threat keeps its id.
    shutil.rmtree(env["logs"] / ".webui" / "index.sqlite", ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{env['logs']}/.webui/index.sqlite{suffix}").unlink(missing_ok=True)
    server = start_server(env["logs"], env["users"])
    try:
        again = _threats(logged_in(server, "admin"))
    finally:
        server.stop()
    assert {k: r["id"] for k, r in again.items()} == {k: r["id"] for k, r in rows.items()}


def test_trail_suppression_covers_subdomain_variants(env: dict) -> None:
    server = start_server(env["logs"], env["users"])
    try:
        admin = logged_in(server, "admin")
        status, rule = admin.post_json("/api/suppressions", {"scope": "trail", "trail": "pastebin.com", "note": "ok"})
        assert status == 200, rule
        rows = _threats(admin)
        assert ("10.0.0.5", "pastebin.com") not in rows  # (www)., (cdn). and the bare name
        assert ("10.0.0.9", "www.pastebin.com") not in rows  # a subdomain
        assert ("10.0.0.8", "notpastebin.com") in rows  # not a subdomain
        assert ("10.0.0.5", "pastebin.com") in _threats(admin, "suppressed:yes")
        status, rule2 = admin.post_json("/api/suppressions", {"scope": "trail", "trail": "(www).victim.org"})
        assert status == 200 and rule2["trail"] == "victim.org"
        assert admin.request("DELETE", f"/api/suppressions/{rule['id']}")[0] == 200
        assert admin.request("DELETE", f"/api/suppressions/{rule2['id']}")[0] == 200
        assert ("10.0.0.5", "pastebin.com") in _threats(admin)
    finally:
        server.stop()
    audit = (env["logs"] / ".webui" / "audit.log").read_text().splitlines()
    assert any(" suppress " in line and "trail=pastebin.com" in line for line in audit)
    assert any(" unsuppress " in line and "trail=pastebin.com" in line for line in audit)


@pytest.mark.parametrize(("q", "sources"), [
    ("src:10.0.0.5 OR src:10.0.0.9", ["10.0.0.5", "10.0.0.9"]),
    ("src:10.0.0.5 || (src:10.0.0.8 AND trail:notpaste*)", ["10.0.0.5", "10.0.0.8"]),
    ("trail:*.pastebin.com", ["10.0.0.5", "10.0.0.9"]),  # (www).pastebin.com is one of 10.0.0.5's values
    ("trail:*pastebin.com -src:10.0.0.5", ["10.0.0.8", "10.0.0.9"]),
    ("count:>10", ["10.0.0.6"]),
    ("count:3-4", ["10.0.0.5", "10.0.0.7"]),
    ("src:10.0.0.6 OR src:10.0.0.7 count:<4", ["10.0.0.7"]),
    ("src:10.0.0.7 OR info:exhaustion", ["10.0.0.6", "10.0.0.7"]),  # source written on events
    ("NOT (src:10.0.0.5 OR src:10.0.0.6)", ["10.0.0.7", "10.0.0.8", "10.0.0.9"]),
    ("(sev:low OR sev:medium) type:dns src:10.0.0.9", ["10.0.0.9"]),
])
def test_search_or_groups_wildcards_and_counts(env: dict, q: str, sources: list[str]) -> None:
    server = start_server(env["logs"], env["users"])
    try:
        rows = _threats(logged_in(server, "admin"), quote(q))
    finally:
        server.stop()
    assert sorted(src for src, _ in rows) == sources


def test_search_refuses_what_it_cannot_answer(env: dict) -> None:
    server = start_server(env["logs"], env["users"])
    try:
        admin = logged_in(server, "admin")
        for q, word in (("count:>10 OR port:53", "not supported"), ("status:new OR info:x", "not supported"),
                        ("foo:bar", "unknown field"), ("(src:10.0.0.5", "parenthesis"),
                        ("src:10.0.0.5 OR", "OR"), ("count:>x", "count:>x"), ("()", "parenthesis"),
                        ("(suppressed:yes)", "suppressed")):
            status, body = admin.get_json(f"/api/threats?from={DAY}&to={DAY}&q={quote(q)}")
            assert status == 400 and word in body["error"], (q, body)
    finally:
        server.stop()


FLOOD_TRAIL = "flood.example-bad.net"


def _flood_events(first: int, last: int) -> list[tuple]:
    """One event of FLOOD_TRAIL from each source 10.9.0.<first..last-1> (one `(sub)` variant)."""
    return [(T0 + 3600 + i, 0, f"10.9.0.{i}", 41000 + i, "192.0.2.53", 53, "UDP", "DNS",
             "(www).flood.example-bad.net" if i == first else FLOOD_TRAIL, "suspicious (many sources)", "(static)")
            for i in range(first, last)]


def _wait_for(client: Client, predicate, what: str) -> dict[tuple, dict]:
    deadline = time.monotonic() + 60
    while True:
        rows = _threats(client)
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_flood_trail_becomes_one_threat_with_its_triage(tmp_path: Path) -> None:
    """Maltrail's flood: a trail seen from more than 50 sources is one threat. 50 sources make 50
    threats; the 51st, arriving while the server runs, merges them into one whose "…" lists the
    sources, whose id survives a rebuild, and which keeps their triage (latest status and note,
    every tag, their history) instead of losing it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / f"{DAY}.log"
    log.write_text("".join(format_event(e, "gw") for e in _flood_events(1, 51)))
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"], "--admin").returncode == 0
    assert add_user(users, "tenant", PASSWORDS["tenant"], "--scope", "10.9.0.0/27").returncode == 0
    server = start_server(logs, users)
    try:
        admin = logged_in(server, "admin")
        rows = _threats(admin)
        per_source = [r for r in rows.values() if r["trail"] == FLOOD_TRAIL]
        assert len(per_source) == 50 and not any(r["flood"] for r in per_source)
        one, two = rows[("10.9.0.3", FLOOD_TRAIL)], rows[("10.9.0.4", FLOOD_TRAIL)]
        assert admin.post_json(f"/api/triage/{one['id']}", {"status": "investigating", "note": "first",
                                                            "tags": ["apt-x"]})[0] == 200
        time.sleep(0.05)
        assert admin.post_json(f"/api/triage/{two['id']}", {"status": "resolved", "note": "latest",
                                                            "tags": ["vpn"]})[0] == 200
        with open(log, "a") as f:  # ten more sources: the trail crosses the threshold live
            f.write("".join(format_event(e, "gw") for e in _flood_events(51, 61)))
        rows = _wait_for(admin, lambda r: not any(k[1] == FLOOD_TRAIL and k[0] for k in r), "no flood threat")
        flood = rows[("", FLOOD_TRAIL)]
        assert flood["flood"] is True and flood["count"] == 60 and flood["source_count"] == 60
        assert flood["sources"][:3] == ["10.9.0.1", "10.9.0.2", "10.9.0.3"] and len(flood["sources"]) == 60
        assert flood["values"] == ["(www).flood.example-bad.net", FLOOD_TRAIL]
        assert sum(flood["hourly"]) == 60
        assert (flood["status"], flood["note"], flood["tags"]) == ("resolved", "latest", ["apt-x", "vpn"])
        status, history = admin.get_json(f"/api/threats/{flood['id']}/history")
        assert status == 200
        notes = [h["note"] for h in history["history"]]
        assert notes[1:] == ["latest", "first"] and "2 per-source threat(s) carried over" in notes[0]
        assert admin.get_json(f"/api/threats/{one['id']}/history")[0] == 404  # merged: that id is gone
        # every source of the flood is found by a source search, and its events by the threat
        assert [r["id"] for r in _threats(admin, "src:10.9.0.55").values()] == [flood["id"]]
        # a user scoped to 10.9.0.0/27 sees the flood with the events and sources of that scope only
        tenant = logged_in(server, "tenant")
        mine = _threats(tenant)[("", FLOOD_TRAIL)]
        assert mine["count"] == mine["source_count"] == 31 and "10.9.0.40" not in mine["sources"]
    finally:
        server.stop()
    for suffix in ("", "-wal", "-shm"):  # rebuilt from the logs: the same flood id, its triage kept
        Path(f"{logs}/.webui/index.sqlite{suffix}").unlink(missing_ok=True)
    server = start_server(logs, users)
    try:
        again = _threats(logged_in(server, "admin"))
    finally:
        server.stop()
    assert [k for k in again if k[1] == FLOOD_TRAIL] == [("", FLOOD_TRAIL)]
    assert again[("", FLOOD_TRAIL)]["id"] == flood["id"] and again[("", FLOOD_TRAIL)]["status"] == "resolved"
    assert again[("", FLOOD_TRAIL)]["count"] == 60
