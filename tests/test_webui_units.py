"""Dashboard building blocks on their own: the event line parser (against the writer in
engine.eventlog), the search compiler, severity rules, addresses and scopes, password hashing,
session expiry and the login throttle (with an injected clock), the incremental index."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.eventlog import DailyLog, format_event
from engine.severity import HIGH, LOW, MEDIUM, Severity
from webui.auth import Sessions, Throttle, client_bucket, hash_password, sanitize, verify_password
from webui.logparse import parse_line, parse_lines
from webui.netaddr import Scope, in_range_text, ip_key, parse_network
from webui.search import SearchError, compile_query, tokenize
from webui.store import EVENT_ROWS, Ingester, Readers

T0 = int(time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1)))
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(sensor=text, trail=text, info=text, ref=text, src_port=st.none() | st.integers(1, 65535))
def test_parser_reads_back_what_the_aggregator_writes(sensor: str, trail: str, info: str, ref: str,
                                                      src_port: int | None) -> None:
    event = (T0, 123456, "10.0.0.1", src_port, "2001:db8::1", 443, "TCP", "IP", trail, info, ref)
    line = format_event(event, sensor)
    parsed = parse_line(line)
    assert parsed is not None
    expected = [(v or "-").replace("\r", " ").replace("\n", " ") for v in (sensor, trail, info, ref)]
    expected = ["" if v == "-" else v for v in expected]
    assert [parsed.sensor, parsed.trail, parsed.info, parsed.reference] == expected
    assert parsed.time == pytest.approx(T0 + 0.123456) and parsed.hour == 7
    assert parsed.src_port == ("" if src_port is None else str(src_port)) and parsed.dst_port == "443"


def test_a_hostile_line_never_hides_the_next_ones() -> None:
    good = format_event((T0, 0, "10.0.0.1", 1, "10.0.0.2", 2, "TCP", "IP", "t", "i", "r"), "s").rstrip("\n")
    lines = [good, '"2024-05-06 07:08:09" s a"b "unclosed x y z w v u t', good, "", "junk", good,
             '"2024-13-45 99:99:99" s 1 2 3 4 5 6 7 8 9', '"2024-05-06 07:08:09" s only five fields']
    parsed = list(parse_lines(lines))
    assert len(parsed) == len(lines)
    assert [p is not None for p in parsed] == [True, False, True, False, False, True, False, False]


def test_search_compiles_to_parameters_only() -> None:
    q = compile_query("""src:10.0.0.0/8 -port:80,443 info:"it's ""quoted"" ; DROP" type:IP sev:high,low evil""")
    sql = " ".join(q.event_sql + q.threat_sql)
    assert "DROP" not in sql and "evil" not in sql and "10.0.0.0" not in sql and "'" not in sql.replace("'new'", "")
    assert 'it\'s "quoted" ; drop' in q.event_params
    assert q.has_event_terms and len(q.threat_sql) == 2
    assert tokenize('-"a b" "x:y"') == [(True, None, "a b"), (False, None, "x:y")]


@pytest.mark.parametrize("bad", ["port:1-2-3", "port:-5", "src:10.0.0.0/99", "sev:", 'trail:"x', "suppressed:maybe",
                                 "-suppressed:yes", "status:closed", "x " * 40])
def test_search_errors_name_the_token(bad: str) -> None:
    with pytest.raises(SearchError):
        compile_query(bad)


def test_search_runs_in_sqlite_with_hostile_values(tmp_path: Path) -> None:
    """Every token kind, negated or not, with quotes and SQL in the values, is valid SQL."""
    logs = tmp_path / "logs"
    DailyLog(logs, "s").write([(T0, 0, "10.0.0.1", 1, "10.0.0.2", 80, "TCP", "IP", "x'; --", "o'r", "r")])
    ing = Ingester(logs, logs / ".webui", Severity([]))
    assert ing.sync() == 1
    conn = Readers(ing.path, ing.triage_path).get()
    from webui.queries import View, threats
    day = time.strftime("%Y-%m-%d", time.localtime(T0))
    for q in ("src:10.0.0.1", "-dst:10.0.0.0/8", "ip:::1", "port:<100", "port:>=80", "proto:tcp", "type:ip",
              "trail:\"x'; --\"", "info:o'r", "sev:medium", "sensor:s", "ref:r", "status:new", "'", "-'"):
        total, rows = threats(conn, View(day, day, Scope([]), compile_query(q)), "trail", "asc", 10, 0)
        assert total == len(rows) <= 1, q
    assert threats(conn, View(day, day, Scope([]), compile_query("trail:\"x'; --\"")), "count", "asc", 10, 0)[0] == 1


def test_severity_rules_first_match_and_configured_first() -> None:
    s = Severity([])
    assert s.of("IP", "1.2.3.4", "botnet c2 (x)", "(static)") == HIGH
    assert s.of("DNS", "x.com", "potential malware site", "(static)") == MEDIUM
    assert s.of("IP", "1.2.3.4", "mass scanner", "(static)") == LOW
    assert s.of("IP", "1.2.3.4", "anything", "(custom)") == HIGH
    assert s.of("IP", "1.2.3.4", "unknown words", "(static)") == MEDIUM
    custom = Severity([{"severity": "low", "info": "botnet", "type": "^IP$"}])
    assert custom.of("IP", "t", "botnet c2", "r") == LOW and custom.of("DNS", "t", "botnet c2", "r") == HIGH
    assert custom.fingerprint != s.fingerprint


def test_addresses_and_scopes() -> None:
    assert ip_key("10.0.0.1") == bytes(10) + b"\xff\xff\x0a\x00\x00\x01"
    assert ip_key("::1") == bytes(15) + b"\x01" and ip_key("10.0.0.1,10.0.0.2") is None and ip_key("x") is None
    net = parse_network("10.0.5.0/16")
    assert net.text == "10.0.0.0/16" and net.contains_key(ip_key("10.0.255.255"))
    assert not net.contains_key(ip_key("10.1.0.0"))
    scope = Scope.parse(["10.0.0.0/17", "2001:db8::/32"])
    assert scope.contains_text("10.0.127.1") and scope.contains_text("8.8.8.8,10.0.1.1")
    assert scope.contains_text("2001:db8::7") and not scope.contains_text("10.0.128.1")
    assert in_range_text("1.1.1.1, 10.0.0.9", net.lo, net.hi) == 1 and in_range_text(None, net.lo, net.hi) == 0


def test_password_hashes_are_salted_scrypt() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a["salt"] != b["salt"] and a["hash"] != b["hash"] and a["kdf"] == "scrypt"
    assert verify_password("correct horse", a) and not verify_password("correct horsE", a)
    assert not verify_password("x", {"kdf": "md5", "salt": "", "hash": ""})
    assert not verify_password("x", {**a, "n": 2})  # refuses parameters weaker than ours
    assert not verify_password("x", {**a, "n": 1 << 30})  # and absurd ones


def test_sessions_expire_when_idle_and_absolutely() -> None:
    s = Sessions(idle_seconds=60, max_seconds=300)
    a = s.create("u", now=0)
    assert s.get(a.token, now=59) is a and s.get(a.token, now=118) is a  # activity keeps it alive
    assert s.get(a.token, now=179) is None  # idle for 61 s
    b = s.create("u", now=1000)
    for t in range(1030, 1300, 30):
        assert s.get(b.token, now=t) is b
    assert s.get(b.token, now=1301) is None  # absolute limit despite activity
    c = s.create("u", now=2000)
    assert s.peek(c.token, now=2050) is c and s.peek(c.token, now=2061) is None  # peek is not activity
    assert s.get(None) is None and s.get("x" * 500) is None
    assert a.csrf != b.csrf != c.csrf and len(c.token) >= 40


def test_throttle_backs_off_exponentially_and_forgets() -> None:
    t = Throttle(free=3, max_seconds=60)
    assert t.retry_after("a", now=0) == 0
    for i in range(2):
        assert t.failure("a", now=i) == 0
    assert t.failure("a", now=2) == 1  # 3rd failure: 1 s
    assert t.retry_after("a", now=2.5) == 0.5
    assert t.failure("a", now=3.5) == 2 and t.failure("a", now=6) == 4
    for i in range(10):
        t.failure("a", now=10 + i)
    assert t.retry_after("a", now=20) == pytest.approx(59)  # capped
    assert t.retry_after("b", now=20) == 0  # per client
    t.success("a")
    assert t.retry_after("a", now=20) == 0
    for i in range(2):
        t.failure("x", "admin", now=30 + i)
    t.success("x", "mallory")  # one's own account does not wipe failures at another's
    assert t.failure("x", "admin", now=33) == 1
    t.success("x", "admin")  # the user who failed, now right: clear
    assert t.retry_after("x", now=33.5) == 0
    assert client_bucket("2001:db8::1") == client_bucket("2001:db8::ffff") == "2001:db8::/64"
    assert client_bucket("::ffff:10.0.0.1") == "10.0.0.1"
    assert sanitize("a\nb c\x1b") == "a?b?c?" and len(sanitize("x" * 500)) == 64


def test_index_follows_appends_truncation_and_deletion(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    log = DailyLog(logs, "s")
    ev = (T0, 0, "10.0.0.1", 1, "10.0.0.2", 80, "TCP", "IP", "10.0.0.2", "malware (x)", "(static)")
    log.write([ev, ev[:1] + (1,) + ev[2:]])
    ing = Ingester(logs, logs / ".webui", Severity([]))
    conn = sqlite3.connect(ing.path)
    assert ing.sync() == 2 and ing.sync() == 0
    path = next(logs.glob("*.log"))
    with open(path, "a") as f:
        f.write(format_event(ev, "s")[:30])  # half a line: waits for its newline
    assert ing.sync() == 0
    with open(path, "a") as f:
        f.write(format_event(ev, "s")[30:])
    assert ing.sync() == 1
    assert conn.execute("SELECT sum(cnt) FROM agg").fetchone()[0] == 3
    path.write_text(format_event(ev, "other"))  # rewritten shorter: the day is read again
    assert ing.sync() == 1
    assert conn.execute("SELECT count(*), min(sensor) FROM events").fetchone() == (1, "other")
    first_id = conn.execute("SELECT max(id) FROM events").fetchone()[0]
    os.unlink(path)
    assert ing.sync() == 0
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM agg").fetchone()[0] == 0
    log.close()
    DailyLog(logs, "s").write([ev])  # a new file (the old writer's fd points to the unlinked one)
    ing.close()
    again = Ingester(logs, logs / ".webui", Severity([]))  # reopened: event ids never go back
    assert again.sync() == 1
    assert conn.execute("SELECT max(id) FROM events").fetchone()[0] > first_id
    again.close()
    changed = Ingester(logs, logs / ".webui", Severity([{"severity": "low", "info": "malware"}]))
    assert changed.rebuilt and changed.sync() == 1  # other severity rules: rebuilt from the logs
    assert sqlite3.connect(changed.path).execute("SELECT sev FROM events").fetchone()[0] == LOW


def test_shipped_file_documents_every_server_option_with_its_default() -> None:
    import dataclasses
    import tomllib

    from engine.config import ServerConfig, load_configs

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "maltrail.toml").read_text())["server"]
    assert set(data) == {f.name for f in dataclasses.fields(ServerConfig)}
    assert load_configs(root / "maltrail.toml")[1] == ServerConfig()


def test_reads_have_a_time_limit(tmp_path: Path) -> None:
    from webui.store import QueryTooLong

    ing = Ingester(tmp_path, tmp_path / ".webui", Severity([]))
    readers = Readers(ing.path, ing.triage_path)
    endless = "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x) SELECT count(*) FROM x"
    with pytest.raises(QueryTooLong), readers.snapshot(0.05) as conn:
        conn.execute(endless).fetchone()
    with readers.snapshot() as conn:  # the same connection is usable afterwards
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_a_page_larger_than_sqlites_parameter_limit(tmp_path: Path) -> None:
    """Exports ask for up to 100k threats at once: no 'too many SQL variables'."""
    from webui.queries import View, threats

    logs = tmp_path / "logs"
    DailyLog(logs, "s").write([(T0 + i % 3600, i, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1, "192.0.2.1", 53,
                                "UDP", "DNS", f"t{i}.example", "malware (x)", "(static)") for i in range(40_000)])
    ing = Ingester(logs, logs / ".webui", Severity([]))
    assert ing.sync() == 40_000
    day = time.strftime("%Y-%m-%d", time.localtime(T0))
    with Readers(ing.path, ing.triage_path).snapshot() as conn:
        for q in ("", "proto:udp"):
            total, rows = threats(conn, View(day, day, Scope([]), compile_query(q)), "count", "desc", 100_000, 0)
            assert total == len(rows) == 40_000 and all(sum(r["hourly"]) == r["count"] == 1 for r in rows)


def test_settings_and_exposure_warnings() -> None:
    from engine.config import ConfigError, SensorConfig, ServerConfig
    from webui.server import exposure_warnings
    from webui.settings import resolve

    local = resolve(SensorConfig(log_dir="/x"), ServerConfig())
    assert (local.host, local.port, str(local.users)) == ("127.0.0.1", 8338, "/x/.webui/users.json")
    assert exposure_warnings(local) == [] and exposure_warnings(resolve(SensorConfig(), ServerConfig(
        listen="[::1]:9"))) == []
    wide = resolve(SensorConfig(), ServerConfig(listen="0.0.0.0:8338"))
    assert len(exposure_warnings(wide)) == 2 and "0.0.0.0" not in wide.allowed_hosts
    named = resolve(SensorConfig(), ServerConfig(listen="0.0.0.0:8338", allowed_hosts=["Dash.Example.org"]))
    assert "dash.example.org" in named.allowed_hosts and len(exposure_warnings(named)) == 1
    with pytest.raises(ConfigError, match="--listen"):
        resolve(SensorConfig(), ServerConfig(), listen="8338")


def test_sync_in_bounded_steps(tmp_path: Path) -> None:
    from webui.store import CHUNK_BYTES

    logs = tmp_path / "logs"
    ev = (T0, 0, "10.0.0.1", 1, "10.0.0.2", 80, "TCP", "IP", "10.0.0.2", "malware (x)", "(static)")
    line = format_event(ev, "s")
    count = 2 * CHUNK_BYTES // len(line) + 10
    (logs / time.strftime("%Y-%m-%d.log", time.localtime(T0))).parent.mkdir()
    (logs / time.strftime("%Y-%m-%d.log", time.localtime(T0))).write_text(line * count)
    ing = Ingester(logs, logs / ".webui", Severity([]))
    steps = []
    while not steps or ing.pending:
        steps.append(ing.sync(CHUNK_BYTES))
    assert len(steps) == 3 and sum(steps) == count and steps[-1] > 0
    assert ing.sync(CHUNK_BYTES) == 0 and not ing.pending


def test_threat_ids_stay_right_when_the_cache_overflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webui.store

    monkeypatch.setattr(webui.store, "THREAT_CACHE", 5)
    logs = tmp_path / "logs"
    events = [(T0 + i, 0, f"10.0.0.{i % 9}", 1, "10.0.0.99", 80, "TCP", "IP", f"t{i % 4}", "x", "y") for i in range(60)]
    DailyLog(logs, "s").write(events[:30])
    ing = Ingester(logs, logs / ".webui", Severity([]))
    assert ing.sync() == 30
    ing.close()
    DailyLog(logs, "s").write(events[30:])
    again = Ingester(logs, logs / ".webui", Severity([]))  # more threats than the cache: starts empty
    assert again.sync() == 30
    conn = sqlite3.connect(again.path)
    pairs = {(f"10.0.0.{i % 9}", f"t{i % 4}") for i in range(60)}
    assert conn.execute("SELECT count(*) FROM threats").fetchone()[0] == len(pairs)
    assert conn.execute("SELECT count(*) FROM events e JOIN threats t ON t.id = e.threat "
                        "WHERE t.src_ip = e.src_ip AND t.trail = e.trail").fetchone()[0] == 60


def test_engine_status_derivation(tmp_path: Path) -> None:
    import json

    from webui.status import engine_status

    path = tmp_path / "sensor-status.json"
    memory: dict = {}
    assert engine_status(path, memory) == {"running": False}
    now = time.time()
    snapshot = {"sensor": "s", "started": now - 10, "updated": now - 1, "final": False,
                "counters": {"packets": 1000, "malformed": 2}, "per_worker_packets": [600, 400],
                "per_worker_busy_seconds": [0.5, 0.25], "events_written": 7, "local_log": False,
                "outputs": [{"name": "siem", "type": "syslog", "sent": 5, "dropped": 1}],
                "rings": [{"occupancy": 1, "dropped_packets": 3, "dropped_batches": 1}, {"dropped_packets": 2}]}
    path.write_text(json.dumps(snapshot))
    first = engine_status(path, memory)
    assert first["running"] is True and first["packets_per_second"] == round(1000 / 9, 1)
    assert first["per_worker"] == [{"packets": 600, "busy": 0.5, "share": 0.6}, {"packets": 400, "busy": 0.25,
                                                                              "share": 0.4}]
    assert first["drops"] == {"ring_packets": 5, "ring_batches": 1, "malformed": 2}
    assert first["events"]["written"] == 7
    assert first["outputs"] == [{"name": "siem", "type": "syslog", "sent": 5, "dropped": 1}]
    assert first["local_log"] is False
    path.write_text(json.dumps({**snapshot, "updated": now, "counters": {"packets": 3000}}))
    assert engine_status(path, memory)["packets_per_second"] == 2000.0  # from the last two snapshots
    path.write_text(json.dumps({**snapshot, "updated": now - 60}))
    assert engine_status(path, {})["running"] is False  # stale: the sensor is gone
    path.write_text("{broken")
    assert engine_status(path, memory) == {"running": False}


def test_index_follow_up_opens_only_changed_files(tmp_path: Path) -> None:
    """Following the logs costs the same with a year of days: unchanged files are not reopened."""
    from unittest import mock

    logs = tmp_path / "logs"
    log = DailyLog(logs, "s")
    for d in range(30):
        log.write([(T0 + d * 86400, 0, "10.0.0.1", 1, "10.0.0.2", 80, "TCP", "IP", "10.0.0.2", "malware (x)", "(s)")])
    ing = Ingester(logs, logs / ".webui", Severity([]))
    assert ing.sync() == 30
    with mock.patch("webui.store.open", wraps=open, create=True) as opened:
        assert ing.sync() == 0
        assert opened.call_count == 0
        log.write([(T0 + 5 * 86400 + 60, 0, "10.0.0.3", 1, "10.0.0.2", 80, "TCP", "IP", "10.0.0.2", "x", "s")])
        assert ing.sync() == 1
        assert opened.call_count == 1


_FIELD = st.one_of(st.sampled_from(["-", "10.0.0.1", "80", "a b", 'say "hi"', "", "x" * 4097, '"', "(www).x.com",
                                    "tab\there", "cr\rhere"]),
                   st.text(alphabet=' "-ab\r.1', max_size=6))
_STAMP = st.sampled_from(['"2024-05-06 07:08:09.123456"', '"2024-05-06 07:08:10.5"', '"2024-05-06 24:00:00.000000"',
                          '"2024-05-06 07:08:11"', '"2024-05-06 07:61:00.000001"', "2024-05-06"])


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if (" " in value or '"' in value or not value) else value


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_STAMP, st.lists(_FIELD, min_size=9, max_size=11), st.booleans()), min_size=1, max_size=6))
def test_bulk_ingest_reads_lines_as_the_line_parser_does(rows: list) -> None:
    """The ingester's one-pass scan (plain lines) and the csv reader (the rest) give exactly what
    `parse_lines` gives, line for line: values, `-` as empty, quotes, long and malformed lines."""
    import tempfile

    lines = [" ".join([stamp, *((_quoted(v) if quote else v) for v in fields)]) for stamp, fields, quote in rows]
    expected = [e for e in parse_lines(lines) if e is not None]
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        (logs / "2024-05-06.log").write_text("".join(line + "\n" for line in lines), newline="")
        ing = Ingester(logs, logs / ".webui", Severity([]))
        try:
            ing.sync()
            got = ing.conn.execute("SELECT time, hour, sensor, src_ip, src_port, dst_ip, dst_port, proto, type, trail, "
                                   "info, reference FROM events ORDER BY id").fetchall()
            bad = ing.conn.execute("SELECT sum(malformed) FROM files").fetchone()[0]
        finally:
            ing.close()
    assert got == [tuple(e) for e in expected]
    assert bad == len(lines) - len(expected)


def test_a_big_chunk_indexes_as_its_lines_one_by_one(tmp_path: Path) -> None:
    """A chunk of many lines (inserted several hundred rows per statement) gives the very rows and
    aggregates that the same lines give when they arrive one at a time (one row per statement)."""
    lines = []
    for i in range(EVENT_ROWS * 2 + 37):
        ev = (T0 + i * 97, i % 7, f"10.0.{i % 5}.{i % 3}", 1000 + i, "-" if i % 11 == 0 else f"192.0.2.{i % 9}",
              "-" if i % 13 == 0 else ("x" if i % 17 == 0 else 80 + i % 4), "TCP" if i % 2 else "-",
              "IP" if i % 3 else "DNS", f"bad{i % 6}.example", f"malware {i % 4}", "(static)")
        lines.append(format_event(ev, "-" if i % 19 == 0 else f"s{i % 2}"))
    tables = []
    for name, steps in (("bulk", [lines]), ("one", [[line] for line in lines])):
        logs = tmp_path / name
        logs.mkdir()
        ing = Ingester(logs, logs / ".webui", Severity([{"severity": "low", "info": "malware 1"}]))
        try:
            for step in steps:
                with open(logs / "2024-05-06.log", "a") as f:
                    f.write("".join(step))
                ing.sync()
            tables.append([sorted(ing.conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                           for t in ("events", "agg", "threats", "threat_values")])
        finally:
            ing.close()
    assert len(tables[0][0]) == len(lines) and {r[9] for r in tables[0][0]} >= {None, 80}
    assert tables[0] == tables[1]


def test_flood_grouping_can_be_turned_off_and_a_change_rebuilds(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    DailyLog(logs, "s").write([(T0 + i, 0, f"10.5.0.{i}", 1, "192.0.2.1", 53, "UDP", "DNS", "many.example-x.org",
                                "suspicious (x)", "(static)") for i in range(60)])
    ing = Ingester(logs, logs / ".webui", Severity([]), flood_sources=0)
    assert ing.sync() == 60
    assert ing.conn.execute("SELECT count(*), count(sources) FROM threats").fetchone() == (60, 0)
    ing.close()
    ing = Ingester(logs, logs / ".webui", Severity([]))  # the default, 50: rebuilt with one flood threat
    assert ing.rebuilt and ing.sync() == 60
    assert ing.conn.execute("SELECT count(*), max(sources) FROM threats").fetchone() == (1, 60)
    ing.close()
