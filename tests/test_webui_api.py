"""The dashboard API against a real `maltrail server` on 127.0.0.1, over events from a capture
replayed through the sensor plus a hand-written Maltrail log: grouping, paging, sorting, search
tokens, ranges, per-user scope, live resume, hunt (complete and partial), triage, export."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import http.client
import io
import ipaddress
import json
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from webui_support import (
    PASSWORDS,
    TENANT_SCOPE,
    Client,
    Server,
    add_user,
    expected_threats,
    logged_in,
    read_log,
    replay_capture,
    start_server,
    wait_caught_up,
)

REPLAY_DAY = "2023-11-14"  # mixed_capture's clock starts at 1_700_000_000 (tests run with TZ=UTC)
HAND_DAY = "2023-11-13"
LIVE_DAY = "2023-11-20"
HAND_LOG = "".join(line + "\n" for line in (
    '"2023-11-13 08:00:01.000001" gw 10.0.5.5 51515 192.0.2.53 53 UDP DNS evil-demo.example "malware (demo)" (static)',
    '"2023-11-13 08:00:02.5" gw 10.0.5.5 51516 192.0.2.53 53 UDP DNS evil-demo.example "malware (demo)" (static)',
    '"2023-11-13 09:10:00.000000" gw 203.0.113.200 - 10.0.5.1,10.0.5.2,10.0.200.3 22,23,80 TCP IPORT '
    '203.0.113.200 "mass scanner" (static)',
    '"2023-11-13 10:00:00.000000" gw 192.168.1.9 40000 198.51.100.99 80 TCP URL "198.51.100.99/a b ""q"".php" '
    '"=HYPERLINK(""http://x"")" (custom)',
    '"2023-11-13 11:00:00.000000" gw 2001:db8::5 40001 2001:db8:bad::66 443 TCP IP 2001:db8:bad::66 '
    '"malware (demo)" (static)',
    "this is not an event line",
    '"2023-11-13 12:00:00.000000" gw 10.0.200.7 40002 6.6.6.6 8443 TCP IPORT 6.6.6.6:8443 "-attacker tool" "+ref"',
))
HAND_EVENTS = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("webui-api")
    logs = work / "logs"
    index = replay_capture(work, logs)
    (logs / f"{HAND_DAY}.log").write_text(HAND_LOG)
    users = work / "users.json"
    for name, extra in (("admin", ["--admin"]), ("tenant", ["--scope", TENANT_SCOPE]),
                        ("other", ["--scope", "192.0.2.0/28"])):
        done = add_user(users, name, PASSWORDS[name], *extra)
        assert done.returncode == 0, done.stderr
    server = start_server(logs, users, "--trails", str(index))
    yield {"server": server, "logs": logs, "users": users, "work": work, "index": index}
    server.stop()


@pytest.fixture()
def admin(env: dict) -> Client:
    return logged_in(env["server"], "admin")


@pytest.fixture()
def tenant(env: dict) -> Client:
    return logged_in(env["server"], "tenant")


def _rows(env: dict, day: str) -> list[list[str]]:
    return read_log(env["logs"] / f"{day}.log")


def _all_threats(client: Client, day_from: str, day_to: str, q: str = "", per_page: int = 500) -> list[dict]:
    rows, page = [], 1
    while True:
        status, body = client.get_json(f"/api/threats?from={day_from}&to={day_to}&q={quote(q)}"
                                       f"&per_page={per_page}&page={page}")
        assert status == 200, body
        rows += body["rows"]
        if page * per_page >= body["total"]:
            assert len(rows) == body["total"]
            return rows
        page += 1


def _counts(rows: list[dict]) -> Counter:
    return Counter({(r["src_ip"], r["trail"]): r["count"] for r in rows})


def _in(net: str) -> Callable[[str], bool]:
    network = ipaddress.ip_network(net)

    def check(text: str) -> bool:
        for part in text.split(","):
            try:
                if ipaddress.ip_address(part) in network:
                    return True
            except ValueError:
                pass
        return False
    return check


def _port(r: list[str]) -> int | None:
    return int(r[5]) if r[5].isdigit() else None


def test_replayed_events_are_grouped_by_source_and_trail(env: dict, admin: Client) -> None:
    log_rows = _rows(env, REPLAY_DAY)
    assert len(log_rows) > 20
    rows = _all_threats(admin, REPLAY_DAY, REPLAY_DAY)
    assert _counts(rows) == expected_threats(log_rows)
    for r in rows:
        assert sum(r["hourly"]) == r["count"] and len(r["hourly"]) == 24
        assert r["first_seen"] <= r["last_seen"]
        assert re.fullmatch(r"[0-9a-f]{16}", r["id"]) and r["status"] == "new"
        latest = [x for x in log_rows if (x[2], x[8]) == (r["src_ip"], r["trail"])][-1]
        assert (r["dst_ip"], str(r["dst_port"] or "-"), r["proto"], r["info"]) == (latest[4], latest[5], latest[6],
                                                                                   latest[9])
    assert len({r["id"] for r in rows}) == len(rows)


def test_paging_and_sorting(admin: Client) -> None:
    everything = _all_threats(admin, REPLAY_DAY, REPLAY_DAY)
    paged = _all_threats(admin, REPLAY_DAY, REPLAY_DAY, per_page=7)
    assert sorted(r["id"] for r in paged) == sorted(r["id"] for r in everything)
    for sort, key in (("count", "count"), ("last_seen", "last_seen"), ("first_seen", "first_seen")):
        for order in ("asc", "desc"):
            status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&sort={sort}&order={order}&per_page=500")
            values = [r[key] for r in body["rows"]]
            assert values == sorted(values, reverse=order == "desc"), (sort, order)
    status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&sort=src_ip&order=asc&per_page=500")
    ips = [ipaddress.ip_address(r["src_ip"]) for r in body["rows"]]
    assert ips == sorted(ips, key=lambda a: (a.version != 4 and 1, int(a)))
    status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&sort=severity&per_page=500")
    ranks = [{"high": 3, "medium": 2, "low": 1}[r["severity"]] for r in body["rows"]]
    assert ranks == sorted(ranks, reverse=True)
    status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&page=999")
    assert status == 200 and body["rows"] == [] and body["total"] == len(everything)
    for bad in ("sort=evil", "order=sideways", "per_page=501", "per_page=0", "page=0", "page=-1", "per_page=1e3"):
        status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&{bad}")
        assert status == 400 and bad.split("=")[0] in body["error"], bad


SEARCHES: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("src:10.0.0.0/17", lambda r: _in("10.0.0.0/17")(r[2])),
    ("-src:10.0.0.0/17", lambda r: not _in("10.0.0.0/17")(r[2])),
    ("dst:198.51.100.66", lambda r: r[4] == "198.51.100.66"),
    ("ip:203.0.113.44", lambda r: "203.0.113.44" in (r[2], r[4])),
    ("port:80", lambda r: _port(r) == 80),
    ("port:1-1000", lambda r: _port(r) is not None and 1 <= _port(r) <= 1000),
    ("-port:443", lambda r: _port(r) != 443),
    ("proto:udp", lambda r: r[6].lower() == "udp"),
    ("type:IP proto:tcp", lambda r: r[7] == "IP" and r[6] == "TCP"),
    ("type:ip", lambda r: r[7] == "IP"),  # answered from the per-day aggregates
    ("-type:iport src:10.0.0.0/8", lambda r: r[7] != "IPORT" and _in("10.0.0.0/8")(r[2])),
    ("trail:198.51", lambda r: "198.51" in r[8].lower()),
    ('info:"botnet c2"', lambda r: "botnet c2" in r[9].lower()),
    ("-info:malware", lambda r: "malware" not in r[9].lower()),
    ("phishing", lambda r: any("phishing" in r[i].lower() for i in (2, 4, 8, 9, 10, 7, 6, 1))),
    ("sensor:replay ref:static", lambda r: "replay" in r[1] and "static" in r[10]),
]


@pytest.mark.parametrize(("q", "predicate"), SEARCHES, ids=[s[0] for s in SEARCHES])
def test_search_tokens_match_the_logs(env: dict, admin: Client, q: str, predicate: Callable) -> None:
    expected = expected_threats([r for r in _rows(env, REPLAY_DAY) if predicate(r)])
    assert expected, q
    assert _counts(_all_threats(admin, REPLAY_DAY, REPLAY_DAY, q)) == expected


def test_severity_token_and_values(admin: Client) -> None:
    rows = _all_threats(admin, REPLAY_DAY, REPLAY_DAY)
    high = _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "sev:high")
    assert high and {r["id"] for r in high} == {r["id"] for r in rows if r["severity"] == "high"}
    by_trail = {r["trail"]: r["severity"] for r in rows}
    assert by_trail["198.51.100.66"] == "high"  # botnet c2
    assert by_trail["100.64.7.7"] == "medium"  # phishing
    status, body = admin.get_json(f"/api/stats?from={REPLAY_DAY}")
    assert sum(body["severity"].values()) == len(rows)


@pytest.mark.parametrize("q", ["port:abc", "src:not-an-ip", "sev:urgent", 'info:"unclosed', "status:maybe", "dst:",
                               "port:70000", "x" * 1100])
def test_bad_tokens_are_refused_naming_them(admin: Client, q: str) -> None:
    status, body = admin.get_json(f"/api/threats?from={REPLAY_DAY}&q={quote(q)}")
    assert status == 400 and body["error"].startswith("q: ")
    if len(q) < 100:
        assert q.split(":")[0].strip('"') in body["error"] or "quote" in body["error"]


def test_hand_written_maltrail_log_loads(env: dict, admin: Client) -> None:
    rows = _all_threats(admin, HAND_DAY, HAND_DAY)
    assert _counts(rows) == expected_threats(_rows(env, HAND_DAY))
    by_src = {r["src_ip"]: r for r in rows}
    assert by_src["10.0.5.5"]["count"] == 2 and by_src["10.0.5.5"]["type"] == "DNS"
    assert by_src["192.168.1.9"]["trail"] == '198.51.100.99/a b "q".php'
    assert by_src["192.168.1.9"]["info"] == '=HYPERLINK("http://x")' and by_src["192.168.1.9"]["severity"] == "high"
    assert by_src["203.0.113.200"]["dst_ip"] == "10.0.5.1,10.0.5.2,10.0.200.3"
    assert by_src["203.0.113.200"]["dst_port"] == "22,23,80" and by_src["203.0.113.200"]["severity"] == "low"
    assert by_src["2001:db8::5"]["trail"] == "2001:db8:bad::66"
    status, body = admin.get_json(f"/api/days?from={HAND_DAY}&to={REPLAY_DAY}")
    assert body["days"] == [{"date": HAND_DAY, "events": HAND_EVENTS},
                            {"date": REPLAY_DAY, "events": len(_rows(env, REPLAY_DAY))}]
    both = _all_threats(admin, HAND_DAY, REPLAY_DAY)
    assert _counts(both) == expected_threats(_rows(env, HAND_DAY) + _rows(env, REPLAY_DAY))
    assert _counts(_all_threats(admin, HAND_DAY, HAND_DAY, "-type:ip,iport")) == expected_threats(
        [r for r in _rows(env, HAND_DAY) if r[7] not in ("IP", "IPORT")])
    assert _counts(_all_threats(admin, HAND_DAY, HAND_DAY, "dst:10.0.200.0/24")) == Counter(
        {("203.0.113.200", "203.0.113.200"): 1})


def test_threat_events_newest_first(env: dict, admin: Client) -> None:
    rows = _all_threats(admin, REPLAY_DAY, REPLAY_DAY)
    top = max(rows, key=lambda r: r["count"])
    status, body = admin.get_json(f"/api/threats/{top['id']}/events?from={REPLAY_DAY}&limit=1000")
    assert status == 200 and body["threat"]["id"] == top["id"]
    events = body["events"]
    assert len(events) == top["count"]
    assert all((e["src_ip"], e["trail"]) == (top["src_ip"], top["trail"]) for e in events)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    status, body = admin.get_json(f"/api/threats/{top['id']}/events?from={REPLAY_DAY}&limit=1")
    assert len(body["events"]) == 1 and body["events"][0]["id"] == events[0]["id"]
    for bad in ("0000000000000000", "../../etc", "ZZZZ"):
        status, body = admin.get_json(f"/api/threats/{quote(bad, safe='')}/events?from={REPLAY_DAY}")
        assert status == 404
    status, _ = admin.get_json(f"/api/threats/{top['id']}/events?from={REPLAY_DAY}&limit=1001")
    assert status == 400


def test_stats_follow_the_filtered_view(env: dict, admin: Client) -> None:
    log_rows = _rows(env, REPLAY_DAY)
    status, body = admin.get_json(f"/api/stats?from={REPLAY_DAY}")
    assert sum(p["count"] for p in body["timeline"]) == len(log_rows)
    sources = Counter(r[2] for r in log_rows)
    assert [(s["value"], s["count"]) for s in body["top_sources"]][:3] == sorted(
        sources.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    status, udp = admin.get_json(f"/api/stats?from={REPLAY_DAY}&q=proto:udp")
    assert sum(p["count"] for p in udp["timeline"]) == sum(1 for r in log_rows if r[6] == "UDP")
    for q in ("proto:tcp sev:high", "port:80 -src:10.0.0.0/17", "type:IP sev:medium"):
        rows = _all_threats(admin, REPLAY_DAY, REPLAY_DAY, q)
        status, body = admin.get_json(f"/api/stats?from={REPLAY_DAY}&q={quote(q)}")
        assert sum(body["severity"].values()) == len(rows) > 0, q
        assert sum(p["count"] for p in body["timeline"]) == sum(r["count"] for r in rows), q
        assert body["top_sources"][0]["count"] == max(_src_counts(rows).values()), q


def _src_counts(rows: list[dict]) -> Counter:
    out: Counter = Counter()
    for r in rows:
        out[r["src_ip"]] += r["count"]
    return out


def _visible_to(scope: str, rows: list[list[str]]) -> list[list[str]]:
    inside = _in(scope)
    return [r for r in rows if inside(r[2]) or inside(r[4])]


def test_scoped_user_sees_only_its_networks(env: dict, tenant: Client) -> None:
    every = _rows(env, HAND_DAY) + _rows(env, REPLAY_DAY)
    visible = _visible_to(TENANT_SCOPE, every)
    assert 0 < len(visible) < len(every)
    rows = _all_threats(tenant, HAND_DAY, REPLAY_DAY)
    assert _counts(rows) == expected_threats(visible)
    status, body = tenant.get_json(f"/api/days?from={HAND_DAY}&to={REPLAY_DAY}")
    assert sum(d["events"] for d in body["days"]) == len(visible)
    status, body = tenant.get_json(f"/api/stats?from={HAND_DAY}&to={REPLAY_DAY}")
    assert sum(p["count"] for p in body["timeline"]) == len(visible)
    assert _counts(_all_threats(tenant, REPLAY_DAY, REPLAY_DAY, "port:80")) == expected_threats(
        [r for r in _visible_to(TENANT_SCOPE, _rows(env, REPLAY_DAY)) if _port(r) == 80])
    assert _counts(_all_threats(tenant, HAND_DAY, REPLAY_DAY, "type:IP,IPORT")) == expected_threats(
        [r for r in visible if r[7] in ("IP", "IPORT")])
    inside = _in(TENANT_SCOPE)
    for r in rows:
        status, body = tenant.get_json(f"/api/threats/{r['id']}/events?from={HAND_DAY}&to={REPLAY_DAY}&limit=1000")
        assert status == 200 and len(body["events"]) == r["count"]
        assert all(inside(e["src_ip"]) or inside(e["dst_ip"]) for e in body["events"])
    status, body = tenant.request("GET", f"/api/export?format=csv&from={HAND_DAY}&to={REPLAY_DAY}")[::2]
    exported = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(exported) == len(rows)
    status, body = tenant.get_json("/api/hunt?indicator=10.0.0.0/8")
    assert body["events"] and all(inside(e["src_ip"]) or inside(e["dst_ip"]) for e in body["events"])
    assert sum(d["hits"] for d in body["days"]) == len(
        [r for r in visible if _in("10.0.0.0/8")(r[2]) or _in("10.0.0.0/8")(r[4])])


def test_user_out_of_every_scope_sees_nothing(env: dict, admin: Client) -> None:
    other = Client(env["server"])
    assert other.login("other") == 200
    status, body = other.get_json(f"/api/threats?from={HAND_DAY}&to={REPLAY_DAY}")
    assert status == 200 and body == {"total": 0, "page": 1, "per_page": 50, "rows": [], "as_of": ""}
    some = _all_threats(admin, REPLAY_DAY, REPLAY_DAY)[0]
    status, _ = other.get_json(f"/api/threats/{some['id']}/events?from={REPLAY_DAY}")
    assert status == 404
    status, body = other.get_json(f"/api/days?from={HAND_DAY}&to={REPLAY_DAY}")
    assert body["days"] == []
    status, body = other.get_json("/api/hunt?indicator=198.51.100.66")
    assert sum(d["hits"] for d in body["days"]) == 0 and body["events"] == []
    status, body = other.post_json(f"/api/triage/{some['id']}", {"status": "resolved", "note": "x"})
    assert status == 404


def test_check_indicators(admin: Client) -> None:
    status, body = admin.get_json("/api/check?indicator=198.51.100.66")
    assert status == 200 and body["found"] and body["matches"][0]["info"] == "botnet c2 (demo)"
    status, body = admin.get_json("/api/check?indicator=www.evil-demo.top")
    assert body["found"] and body["matches"][0]["trail"] == "evil-demo.top"
    status, body = admin.get_json("/api/check?indicator=6.6.6.6:8443")
    assert body["found"] and body["matches"][0]["trail"] == "6.6.6.6:8443"
    status, body = admin.get_json(f"/api/check?indicator={quote('http://x.example/malicious-login.php?a=1')}")
    assert body["found"] and body["matches"][0]["trail"] == "/malicious-login.php"
    status, body = admin.get_json("/api/check?indicator=clean.example")
    index = body.pop("index")
    assert status == 200 and body == {"indicator": "clean.example", "found": False, "matches": []}
    assert index["generation"] == 1 and index["trails"] > 0 and index["reload_error"] is None
    for bad in ("", "x" * 300):
        status, body = admin.get_json(f"/api/check?indicator={bad}")
        assert status == 400 and "indicator" in body["error"]


def test_hunt_counts_every_day(env: dict, admin: Client) -> None:
    status, body = admin.get_json("/api/hunt?indicator=198.51.100.66")
    assert status == 200 and body["complete"] and body["unscanned_days"] == []
    hits = {d["date"]: d["hits"] for d in body["days"]}
    assert hits[REPLAY_DAY] == sum(1 for r in _rows(env, REPLAY_DAY) if "198.51.100.66" in (r[2], r[4], r[8]))
    status, body = admin.get_json("/api/hunt?indicator=PHISHING")
    hits = {d["date"]: d["hits"] for d in body["days"]}
    assert hits[REPLAY_DAY] == sum(1 for r in _rows(env, REPLAY_DAY) if "phishing" in " ".join(r).lower())
    for bad in ("ab", "x" * 300, "a\nb"):
        status, body = admin.get_json(f"/api/hunt?indicator={quote(bad)}")
        assert status == 400
    for bad in ("budget=-1", "budget=nan", "budget=abc", "from=2020-99-01"):
        status, body = admin.get_json(f"/api/hunt?indicator=198.51.100.66&{bad}")
        assert status == 400


def _hunt_expected(env: dict, indicator: str) -> tuple[list[tuple[str, int]], list[tuple[str, ...]]]:
    """The per-day hunt computed by the test from the log files (csv module): (day, hits) newest
    day first, and the first 200 matching lines in file order."""
    try:
        net = ipaddress.ip_network(indicator, strict=False)
    except ValueError:
        net = None

    def address_in(text: str) -> bool:
        m = re.fullmatch(r"\[?([0-9A-Fa-f:.]+)\]?(?::\d+)?(?:/.*)?", text)
        for part in [*text.split(","), m.group(1) if m else ""]:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(part.strip()) in net:
                    return True
        return False

    days, samples = [], []
    for path in sorted(env["logs"].glob("*.log"), reverse=True):
        hits = 0
        for r in read_log(path):
            if (address_in(r[2]) or address_in(r[4]) or address_in(r[8])) if net else \
                    any(indicator.lower() in f.lower() for f in r[1:]):
                hits += 1
                if len(samples) < 200:
                    samples.append((r[2], r[4], r[8], r[9]))
        days.append((path.stem, hits))
    return days, samples


@pytest.mark.parametrize("indicator", ["198.51.100.66", "10.0.0.0/17", "6.6.6.6", "2001:db8:bad::/48", "phishing",
                                       "MALWARE", "evil-demo"])
def test_hunt_per_day_from_the_index_matches_the_logs(env: dict, admin: Client, indicator: str) -> None:
    """The per-day hunt is served from the index: per-day hits and samples are those of the log files."""
    status, body = admin.get_json(f"/api/hunt?indicator={quote(indicator)}&budget=60")
    assert status == 200 and body["complete"] and body["unscanned_days"] == []
    days, samples = _hunt_expected(env, indicator)
    assert [(d["date"], d["hits"]) for d in body["days"]] == days
    assert [(e["src_ip"], e["dst_ip"], e["trail"], e["info"]) for e in body["events"]] == samples
    assert body["capped"] == (len(samples) == 200) and all(e["id"] is None for e in body["events"])
    paged = admin.get_json(f"/api/hunt/events?indicator={quote(indicator)}&per_page=1")[1]
    assert paged["total"] == sum(h for _, h in days)  # the paged events agree with the days


def test_hunt_events_paged_and_exported(env: dict, admin: Client, tenant: Client) -> None:
    day = f"from={REPLAY_DAY}&to={REPLAY_DAY}"
    wanted = [r for r in _rows(env, REPLAY_DAY) if "198.51.100.66" in (r[2], r[4], r[8])]
    assert len(wanted) > 10
    seen: list[dict] = []
    page = 1
    while True:
        status, body = admin.get_json(f"/api/hunt/events?indicator=198.51.100.66&{day}&per_page=7&page={page}")
        assert status == 200 and body["total"] == len(wanted) and body["kind"] == "network"
        if not body["events"]:
            break
        seen += body["events"]
        page += 1
    assert len(seen) == len(wanted) and len({e["id"] for e in seen}) == len(seen)
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)  # newest first
    status, body = admin.get_json(f"/api/hunt/events?indicator=phishing&{day}")
    assert body["total"] == sum(1 for r in _rows(env, REPLAY_DAY) if "phishing" in " ".join(r).lower())
    status, headers, payload = admin.request("GET", f"/api/hunt/export?indicator=198.51.100.66&{day}&format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    exported = list(csv.reader(io.StringIO(payload.decode())))
    assert exported[0][:3] == ["time", "sensor", "src_ip"] and len(exported) == len(wanted) + 1
    status, body = tenant.get_json(f"/api/hunt/events?indicator=198.51.100.66&{day}&per_page=500")
    assert body["total"] == sum(1 for r in wanted if _in(TENANT_SCOPE)(r[2]) or _in(TENANT_SCOPE)(r[4]))
    assert admin.get_json("/api/hunt/events?indicator=ab")[0] == 400


def _line(ts: str, src: str, dst: str, marker: str) -> str:
    return f'"{LIVE_DAY} {ts}.000000" live {src} 40000 {dst} 80 TCP IP {dst} "malware ({marker})" (static)\n'


class SSE:
    """A raw Server-Sent Events reader over http.client."""

    def __init__(self, client: Client, path: str, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection(client.server.host, client.server.port, timeout=30)
        h = {"Host": f"{client.server.host}:{client.server.port}", "Cookie": client.cookie or ""}
        h.update(headers or {})
        self.conn.request("GET", path, headers=h)
        self.resp = self.conn.getresponse()
        self.marks: list[str] = []  # a fresh scoped stream's start mark (webui/live.py)

    def events(self, n: int, timeout: float = 30) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        deadline = time.monotonic() + timeout
        current: dict[str, str] = {}
        while len(out) < n and time.monotonic() < deadline:
            line = self.resp.readline().decode().rstrip("\n")
            if line.startswith(("id:", "event:", "data:")):
                k, _, v = line.partition(": ")
                current[k] = v
            elif line == "" and current.get("event") == "mark":
                self.marks.append(json.loads(current["data"])["id"])
                current = {}
            elif line == "" and "data" in current:
                assert current["event"] == "event"
                out.append((current["id"], json.loads(current["data"])))
                current = {}
        return out

    def close(self) -> None:
        self.conn.close()


def test_live_stream_and_resume(env: dict, admin: Client, tenant: Client) -> None:
    log = env["logs"] / f"{LIVE_DAY}.log"
    stream = SSE(admin, "/api/live")
    scoped = SSE(tenant, "/api/live")
    assert stream.resp.status == 200 and stream.resp.getheader("Content-Type") == "text/event-stream"
    assert stream.resp.readline() == b": connected\n"
    with open(log, "a") as f:
        f.write(_line("10:00:00", "10.0.9.9", "198.51.100.66", "live-1"))
        f.write(_line("10:00:01", "172.16.0.1", "198.51.100.66", "live-2"))  # outside the tenant's scope
        f.write(_line("10:00:02", "10.0.9.9", "198.51.100.66", "live-3"))
    got = stream.events(3)
    assert [e["info"] for _, e in got] == ["malware (live-1)", "malware (live-2)", "malware (live-3)"]
    assert [int(i) for i, _ in got] == [e["id"] for _, e in got] == sorted(int(i) for i, _ in got)
    threat_ids = [e["threat"] for _, e in got]
    assert threat_ids[0] == threat_ids[2] != threat_ids[1] and all(len(t) == 16 for t in threat_ids)
    assert got[2][1]["new_threat"] is False  # live-1 opened that threat already
    assert got[0][1]["bucket"] == time.mktime(time.strptime(f"{LIVE_DAY} 10", "%Y-%m-%d %H"))
    scoped_got = scoped.events(2)
    assert [e["info"] for _, e in scoped_got] == ["malware (live-1)", "malware (live-3)"]
    # A scoped user's ids are opaque: they resume exactly but do not count the events out of scope.
    tokens = [i for i, _ in scoped_got]
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in tokens) and [e["id"] for _, e in scoped_got] == tokens
    assert tokens != [i for i, _ in got[::2]]
    stream.close()
    scoped.close()
    scoped_again = SSE(tenant, "/api/live", {"Last-Event-ID": tokens[0]})
    assert [e["info"] for _, e in scoped_again.events(1)] == ["malware (live-3)"]
    scoped_again.close()
    assert tenant.get_json(f"/api/live?after={got[0][0]}")[0] == 400
    last = got[-1][0]
    with open(log, "a") as f:
        f.write(_line("10:00:03", "10.0.9.9", "198.51.100.66", "live-4"))
        f.write(_line("10:00:04", "10.0.9.9", "198.51.100.66", "live-5"))
    resumed = SSE(admin, "/api/live", {"Last-Event-ID": str(last)})
    assert [e["info"] for _, e in resumed.events(2)] == ["malware (live-4)", "malware (live-5)"]
    resumed.close()
    again = SSE(admin, f"/api/live?after={got[0][0]}")
    assert [e["info"] for _, e in again.events(4)] == [f"malware (live-{i})" for i in (2, 3, 4, 5)]
    again.close()
    status, body = admin.get_json("/api/live?after=abc")
    assert status == 400


def test_scoped_live_deltas_follow_as_of(env: dict, admin: Client, tenant: Client) -> None:
    """A scoped user's answers carry `as_of`: the opaque id of the last event in its scope, the
    same id its stream delivers (or marks as its start), so the page applies exactly the events
    after it. Applying them to the old answer gives the new answer; nothing out of scope and no
    global count or id ever reaches the scoped user."""
    day = f"from={LIVE_DAY}&to={LIVE_DAY}"
    before = tenant.get_json(f"/api/threats?{day}")[1]
    assert isinstance(before["as_of"], str) and re.fullmatch(r"[0-9a-f]{16}", before["as_of"])
    assert tenant.get_json(f"/api/stats?{day}")[1]["as_of"] == before["as_of"]
    scoped = SSE(tenant, "/api/live")
    global_stream = SSE(admin, "/api/live")
    assert scoped.resp.readline() == b": connected\n"
    with open(env["logs"] / f"{LIVE_DAY}.log", "a") as f:
        f.write(_line("11:00:00", "10.0.9.9", "198.51.100.66", "delta-1"))
        f.write(_line("11:00:01", "172.16.0.1", "198.51.100.66", "delta-out"))
        f.write(_line("11:00:02", "10.0.9.9", "198.51.100.66", "delta-2"))
    got = scoped.events(2)
    assert scoped.marks == [before["as_of"]]  # nothing in scope came in between: the start is the answer's as_of
    assert [e["info"] for _, e in got] == ["malware (delta-1)", "malware (delta-2)"]
    assert scoped.events(1, timeout=2) == []  # the out-of-scope event never comes
    global_ids = [i for i, _ in global_stream.events(3)]
    scoped.close()
    global_stream.close()
    after = tenant.get_json(f"/api/threats?{day}")[1]
    assert after["as_of"] == got[-1][0] and after["as_of"] not in global_ids  # opaque, not the global id
    assert tenant.get_json(f"/api/stats?{day}")[1]["as_of"] == got[-1][0]
    assert admin.get_json(f"/api/threats?{day}")[1]["as_of"] == int(global_ids[-1])
    old = {r["id"]: r["count"] for r in before["rows"]}
    for _, e in got:  # what the page does with the deltas
        old[e["threat"]] = old.get(e["threat"], 0) + 1
    assert old == {r["id"]: r["count"] for r in after["rows"]}
    # The stream's mark and the answers agree for a user with nothing in scope too ("" for none).
    other = logged_in(env["server"], "other")
    assert other.get_json(f"/api/threats?{day}")[1]["as_of"] == ""
    empty = SSE(other, "/api/live")
    empty.resp.readline()
    assert empty.events(1, timeout=2) == [] and empty.marks == [""]
    empty.close()


def test_triage_tags_and_history(env: dict, admin: Client, tenant: Client) -> None:
    rows = _all_threats(tenant, REPLAY_DAY, REPLAY_DAY)
    target = next(r for r in rows if _in(TENANT_SCOPE)(r["src_ip"]) and r["status"] == "new")
    path = f"/api/triage/{target['id']}"
    status, body = tenant.post_json(path, {"status": "investigating", "note": "first look", "tags": ["apt-x", " vpn "]})
    assert status == 200 and body["tags"] == ["apt-x", "vpn"]
    status, body = admin.post_json(path, {"status": "resolved", "note": "closed"})  # tags kept when not given
    assert body["tags"] == ["apt-x", "vpn"] and body["status"] == "resolved"
    assert {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "tag:APT-X")} == {target["id"]}
    assert {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "tag:apt*")} == {target["id"]}
    assert target["id"] not in {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "tag:apt")}
    status, body = tenant.get_json(f"/api/threats/{target['id']}/history")
    assert status == 200
    assert [(h["user"], h["status"], h["note"], h["tags"]) for h in body["history"]] == [
        ("admin", "resolved", "closed", ["apt-x", "vpn"]), ("tenant", "investigating", "first look", ["apt-x", "vpn"])]
    assert body["history"][0]["at"] >= body["history"][1]["at"]
    for bad in ({"tags": "x"}, {"tags": ["a,b"]}, {"tags": ["x" * 25]}, {"tags": [str(i) for i in range(11)]}):
        assert tenant.post_json(path, bad)[0] == 400, bad
    outside = next(r for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY) if not _in(TENANT_SCOPE)(r["src_ip"])
                   and not _in(TENANT_SCOPE)(r["dst_ip"] or "0.0.0.0"))
    assert tenant.get_json(f"/api/threats/{outside['id']}/history")[0] == 404
    assert "tags=apt-x,vpn" in (env["logs"] / ".webui" / "audit.log").read_text()
    admin.post_json(path, {"status": "new", "note": "", "tags": []})


def test_triage_is_shared_and_suppression_hides(env: dict, admin: Client, tenant: Client) -> None:
    rows = _all_threats(tenant, REPLAY_DAY, REPLAY_DAY)
    target = next(r for r in rows if _in(TENANT_SCOPE)(r["src_ip"]))
    status, body = tenant.post_json(f"/api/triage/{target['id']}", {"status": "investigating", "note": "on it"})
    assert status == 200 and body["status"] == "investigating" and body["note"] == "on it"
    seen = {r["id"]: r for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY)}[target["id"]]
    assert (seen["status"], seen["note"]) == ("investigating", "on it")
    assert {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "status:investigating")} == {target["id"]}
    for bad in ({"status": "done"}, {"status": "new", "note": "x" * 2001}, {"status": "new", "note": 5}, []):
        status, body = tenant.post_json(f"/api/triage/{target['id']}", bad)
        assert status == 400
    status, rule = tenant.post_json("/api/suppressions", {"scope": "source", "src_ip": target["src_ip"], "note": "lab"})
    assert status == 200 and rule["user"] == "tenant"
    hidden = {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY)}
    assert target["id"] not in hidden and len(hidden) > 0
    assert target["id"] in {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY, "suppressed:yes")}
    status, body = admin.get_json("/api/suppressions")
    assert rule["id"] in [r["id"] for r in body["rules"]]
    status, body = tenant.post_json("/api/suppressions", {"scope": "trail", "trail": "198.51.100.66"})
    assert status == 403
    status, body = tenant.post_json("/api/suppressions", {"scope": "source", "src_ip": "8.8.8.8"})
    assert status == 403
    status, body = admin.post_json("/api/suppressions", {"scope": "both", "src_ip": "bogus", "trail": "x"})
    assert status == 400
    status, _, _ = tenant.request("DELETE", f"/api/suppressions/{rule['id']}")
    assert status == 200
    assert target["id"] in {r["id"] for r in _all_threats(admin, REPLAY_DAY, REPLAY_DAY)}
    status, _, _ = tenant.request("DELETE", f"/api/suppressions/{rule['id']}")
    assert status == 404
    tenant.post_json(f"/api/triage/{target['id']}", {"status": "new", "note": ""})


def test_exports(env: dict, admin: Client) -> None:
    rows = _all_threats(admin, HAND_DAY, HAND_DAY)
    status, headers, body = admin.request("GET", f"/api/export?format=csv&from={HAND_DAY}")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert headers["content-disposition"] == f'attachment; filename="maltrail-threats-{HAND_DAY}_{HAND_DAY}.csv"'
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(table) == len(rows) and list(table[0])[-2:] == ["tags", "values"]
    for row in table:
        assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values()), row
    hostile = next(r for r in table if r["src_ip"] == "192.168.1.9")
    assert hostile["info"] == "'=HYPERLINK(\"http://x\")" and hostile["severity"] == "high"
    tool = next(r for r in table if r["src_ip"] == "10.0.200.7")
    assert tool["info"] == "'-attacker tool" and tool["reference"] == "'+ref"
    status, headers, body = admin.request("GET", f"/api/export?format=json&from={HAND_DAY}")
    assert json.loads(body)["rows"] == rows
    status, headers, body = admin.request("GET", f"/api/export?format=defanged&from={HAND_DAY}")
    lines = body.decode().splitlines()
    assert "evil-demo[.]example" in lines and "6[.]6[.]6[.]6:8443" in lines
    assert all("." not in line.replace("[.]", "") for line in lines)
    status, _, _ = admin.request("GET", f"/api/export?format=xml&from={HAND_DAY}")
    assert status == 400


def test_engine_status_from_the_replay(admin: Client) -> None:
    status, body = admin.get_json("/api/status")
    assert status == 200 and body["running"] is False and body["final"] is True
    assert len(body["per_worker"]) == 2 and sum(w["packets"] for w in body["per_worker"]) == 60_000
    assert abs(sum(w["share"] for w in body["per_worker"]) - 1) < 0.01
    assert body["drops"]["ring_packets"] == 0 and body["packets_per_second"] > 0
    assert body["index"]["caught_up"] is True


def test_session_endpoint_and_openapi(env: dict, tenant: Client) -> None:
    status, body = tenant.get_json("/api/session")
    assert body.pop("tz") in ("UTC", "Etc/UTC")  # scripts/test.sh runs with TZ=UTC
    assert body == {"user": "tenant", "csrf": tenant.csrf, "scope": [TENANT_SCOPE], "admin": False, "role": "analyst",
                    "today": dt.date.today().isoformat(), "pivots": []}
    status, spec = Client(env["server"]).get_json("/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.") and "/api/threats" in spec["paths"]


def test_index_is_rebuilt_from_the_logs(env: dict, tmp_path: Path) -> None:
    """A second server with its index deleted (and one with it kept) serves the same threats."""
    admin = Client(env["server"])
    admin.login("admin")
    before = _counts(_all_threats(admin, HAND_DAY, REPLAY_DAY))
    index_dir = tmp_path / "index"
    config = tmp_path / "m.toml"
    config.write_text(f'[server]\nindex_dir = "{index_dir}"\n')
    def threats_of_a_new_server() -> Counter:
        other = start_server(env["logs"], env["users"], "-c", str(config))
        try:
            return _counts(_all_threats(logged_in(other, "admin"), HAND_DAY, REPLAY_DAY))
        finally:
            other.stop()

    assert threats_of_a_new_server() == before  # builds a new index
    assert threats_of_a_new_server() == before  # reuses it
    assert stat.S_IMODE(os.stat(index_dir).st_mode) == 0o700
    (index_dir / "index.sqlite").unlink()
    assert threats_of_a_new_server() == before

def test_partial_hunt_is_reported_honestly(tmp_path: Path) -> None:
    """Two big days and a tiny budget: the first day is counted whole, the second is listed as
    never reached, and the answer says it is not complete; so does one asked while indexing."""
    logs = tmp_path / "logs"
    logs.mkdir()
    line = '"2023-11-{d} 10:00:00.000000" s 10.1.1.{i} 4000 198.51.100.66 80 TCP IP 198.51.100.66 "botnet c2" -\n'
    for day in ("01", "02"):
        (logs / f"2023-11-{day}.log").write_text("".join(line.format(d=day, i=i % 250) for i in range(80_000)))
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"]).returncode == 0
    server: Server = start_server(logs, users, wait_index=False)
    try:
        c = Client(server)
        c.login("admin")
        status, body = c.get_json("/api/hunt?indicator=198.51.100.66&budget=60")
        assert status == 200
        if body.get("partial"):  # asked while the index is being built: said so
            assert body["complete"] is False
        wait_caught_up(server)
        status, body = c.get_json("/api/hunt?indicator=198.51.100.66&budget=0.001")
        assert status == 200 and body["complete"] is False and "partial" not in body
        assert body["days"] == [{"date": "2023-11-02", "hits": 80_000, "complete": True}]  # a day is whole
        assert body["unscanned_days"] == ["2023-11-01"]
        assert len(body["events"]) == 200
        status, body = c.get_json("/api/hunt?indicator=10.1.1.7&budget=60")
        assert body["complete"] is True and [d["hits"] for d in body["days"]] == [320, 320]
    finally:
        server.stop()


def _open_stream(client: Client, timeout: float = 10) -> SSE:
    """A stream, retrying while slots of streams closed just before are being released."""
    deadline = time.monotonic() + timeout
    while True:
        stream = SSE(client, "/api/live")
        if stream.resp.status == 200 or time.monotonic() > deadline:
            return stream
        stream.resp.read()
        stream.close()
        time.sleep(0.2)


def test_live_streams_are_capped_and_released(admin: Client) -> None:
    streams: list[SSE] = []
    try:
        for _ in range(8):
            streams.append(_open_stream(admin))
        assert [s.resp.status for s in streams] == [200] * 8
        refused = SSE(admin, "/api/live")
        assert refused.resp.status == 503 and refused.resp.getheader("Retry-After") == "5"
        assert json.loads(refused.resp.read()) == {"error": "too many live streams"}
        refused.close()
        streams.pop().close()
        streams.append(_open_stream(admin))  # the closed stream's slot comes back within about a second
        assert streams[-1].resp.status == 200
    finally:
        for s in streams:
            s.close()
