"""Maltrail's event line format and the daily files."""

from __future__ import annotations

import os
from pathlib import Path

from engine.eventlog import DailyLog, format_event, safe_value


def test_safe_value_rules() -> None:
    assert safe_value(0) == "-" and safe_value("") == "-" and safe_value(None) == "-"
    assert safe_value(443) == "443"
    assert safe_value("a b") == '"a b"'
    assert safe_value('say "hi"') == '"say ""hi"""'
    assert safe_value("line\r\nbreak") == '"line  break"'


def test_line_matches_maltrail_example() -> None:
    ev = (1700000001, 0, "10.0.0.66", 50003, "6.6.6.6", 8443, "TCP", "IPORT", "6.6.6.6:8443",
          "malware (test)", "(static)")
    assert format_event(ev, "parity") == (
        '"2023-11-14 22:13:21.000000" parity 10.0.0.66 50003 6.6.6.6 8443 TCP IPORT 6.6.6.6:8443 '
        '"malware (test)" (static)\n')
    icmp = (1700000000, 5, "10.0.0.66", None, "66.66.66.66", None, "ICMP", "IP", "66.66.66.66", "m", "(static)")
    assert format_event(icmp, "s").split(" ")[3:8] == ["10.0.0.66", "-", "66.66.66.66", "-", "ICMP"]


def test_daily_files_by_event_date(tmp_path: Path) -> None:
    log = DailyLog(tmp_path, "s")
    day1 = (1700000000, 0, "1.1.1.1", 1, "2.2.2.2", 2, "TCP", "IP", "2.2.2.2", "x", "(static)")
    day2 = (1700000000 + 86400, 0, *day1[2:])
    assert log.write([day1, day2, day1]) == 3
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2023-11-14.log", "2023-11-15.log"]
    assert len((tmp_path / "2023-11-14.log").read_text().splitlines()) == 2
    assert oct(os.stat(tmp_path / "2023-11-14.log").st_mode & 0o777) == "0o644"
