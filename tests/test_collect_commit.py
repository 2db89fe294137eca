"""The collector's checks and its durable append, on whole messages (no NATS needed): a message's
lines are checked and written in bulk, so these pin what the per-line rules were: every line must
name the subject's sensor, lines below the expected offset are skipped as duplicates, a gap is
dropped, a CR inside a line becomes a space."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.ship.collector import EventFiles, Rejected, check_event

DAY = "2026-12-05.log"


def line(sensor: str, i: int, tail: str = "") -> bytes:
    return (f'"2026-12-05 10:00:00.{i:06d}" {sensor} 10.0.0.9 1234 198.51.100.66 80 TCP IP 198.51.100.66 '
            f'"known attacker" (static){tail}').encode()


def message(sensor: str, start: int, lines: list[bytes]) -> tuple[str, dict[str, str], bytes]:
    data = b"\n".join(lines)
    return f"maltrail.events.{sensor}", {"Nats-Msg-Id": f"{sensor}/{DAY}/{start}-{start + len(data) + 1}"}, data


def test_check_event_accepts_its_own_sensor_only() -> None:
    lines = [line("alpha", i) for i in range(5)]
    assert check_event(*message("alpha", 0, lines)) == ("alpha", DAY, 0, b"\n".join(lines))
    assert check_event(*message("alpha", 0, [b'"2026-12-05 10:00:00.000001" alpha']))[0] == "alpha"
    for bad, named in ((line("beta", 3), "'beta'"), (line("alphabet", 3), "'alphabet'"), (b"x" * 40, "None"),
                       (line("alpha", 3).replace(b"alpha", b"alpha\rx"), "'alpha\\rx'"), (b"", "None")):
        with pytest.raises(Rejected, match=re.escape(f"names sensor {named}")):
            check_event(*message("alpha", 0, [*lines[:3], bad, *lines[3:]]))
    subject, headers, data = message("alpha", 0, lines)
    with pytest.raises(Rejected, match="names sensor None"):  # a trailing newline is an empty last line
        check_event(subject, {"Nats-Msg-Id": f"alpha/{DAY}/0-{len(data) + 2}"}, data + b"\n")
    with pytest.raises(Rejected, match="message id of sensor 'beta'"):
        check_event(subject, {"Nats-Msg-Id": f"beta/{DAY}/0-{len(data) + 1}"}, data)
    with pytest.raises(Rejected, match="does not match"):
        check_event(subject, {"Nats-Msg-Id": f"alpha/{DAY}/0-{len(data)}"}, data)


def test_commit_skips_duplicates_drops_gaps_and_survives_a_restart(tmp_path: Path) -> None:
    lines = [line("alpha", i) for i in range(10)]
    offsets = [0]
    for one in lines:
        offsets.append(offsets[-1] + len(one) + 1)
    files = EventFiles(tmp_path)
    first = check_event(*message("alpha", 0, lines[:4]))
    assert files.commit([first], 7) == (4, 0, 0)
    again = check_event(*message("alpha", offsets[2], lines[2:7]))  # lines 2, 3 written already
    gap = check_event(*message("alpha", offsets[8], lines[8:]))  # line 7 never came: dropped
    assert files.commit([again, first, gap], 9) == (3, 4 + 2, 1)
    cr = check_event(*message("alpha", offsets[7], [lines[7] + b"\rend", *lines[8:]]))
    assert files.commit([cr], 10) == (3, 0, 0)
    expected = [*lines[:7], lines[7] + b" end", *lines[8:]]
    assert (tmp_path / "alpha" / DAY).read_bytes() == b"".join(x + b"\n" for x in expected)
    with open(tmp_path / "alpha" / DAY, "ab") as f:
        f.write(b"uncommitted\n")
    reopened = EventFiles(tmp_path)  # a crash after the write, before the record: cut off
    assert (tmp_path / "alpha" / DAY).read_bytes() == b"".join(x + b"\n" for x in expected)
    assert reopened.stream_seq == 10
    assert reopened.commit([first, cr], 11) == (0, 4 + 3, 0)
