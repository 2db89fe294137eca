"""While the server builds its index, every data answer says it is partial and how far the
build is; once caught up, the marks are gone and the totals are whole."""

from __future__ import annotations

import time
from pathlib import Path

from webui_support import PASSWORDS, add_user, logged_in, start_server

from engine.eventlog import format_event, log_date

T0 = int(time.mktime((2024, 6, 1, 0, 0, 0, 0, 0, -1)))
EVENTS = 240_000  # ~30 MB: more than one ingest round (webui.store.SYNC_BYTES)


def test_partial_answers_while_indexing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    day = log_date(T0)
    with open(logs / f"{day}.log", "w") as f:
        for start in range(0, EVENTS, 20_000):
            f.write("".join(format_event((T0 + i // 4, i % 1_000_000, f"10.1.{i % 200}.{i % 50}", 40000 + i % 999,
                                          f"198.51.100.{i % 200}", 443, "TCP", "IP", f"198.51.100.{i % 200}",
                                          "malware (indexing test)", "(static)"), "gw")
                            for i in range(start, start + 20_000)))
    users = tmp_path / "users.json"
    assert add_user(users, "admin", PASSWORDS["admin"], "--admin").returncode == 0
    server = start_server(logs, users, wait_index=False)
    try:
        admin = logged_in(server, "admin")
        status, first = admin.get_json(f"/api/threats?from={day}&to={day}")
        assert status == 200 and first["partial"] is True, first
        progress = first["indexing"]
        assert progress["bytes_total"] == (logs / f"{day}.log").stat().st_size
        assert 0 <= progress["bytes_done"] < progress["bytes_total"]
        for path in ("/api/stats", "/api/days"):
            assert admin.get_json(f"{path}?from={day}&to={day}")[1].get("partial") in (True, None)
        deadline = time.monotonic() + 180
        while True:
            status, body = admin.get_json(f"/api/threats?from={day}&to={day}&per_page=500")
            if "partial" not in body:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        assert sum(r["count"] for r in body["rows"]) == EVENTS and body["total"] == 200
        assert "partial" not in admin.get_json("/api/status")[1]["index"]
    finally:
        server.stop()
