"""The server's clock for the dashboard: its time zone name and the epoch bounds of its days.

Log files, date ranges and the charts' axes are the server's days. A browser in another time
zone must not cut them at its own midnight: the server names its zone (an IANA name the browser
can format with) and gives the start of each day of a range, daylight-saving changes included.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

MAX_AXIS_DAYS = 400


def server_tz() -> str:
    """IANA name of the server's local zone: `TZ`, else /etc/localtime's target, else a fixed
    offset (`Etc/GMT-2` is UTC+2) when the zone has no daylight saving, else `UTC`."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and "/" in name or name == "UTC":
        return name
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    if not time.daylight and time.timezone % 3600 == 0:
        hours = time.timezone // 3600
        return "UTC" if hours == 0 else f"Etc/GMT{'+' if hours > 0 else '-'}{abs(hours)}"
    return "UTC"


def day_start(day: dt.date) -> float:
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


def day_axis(day_from: str, day_to: str) -> dict[str, object]:
    """{"days": [[date, start epoch], ...], "end": epoch of the midnight after the last day}."""
    first, last = dt.date.fromisoformat(day_from), dt.date.fromisoformat(day_to)
    days = []
    d = first
    while d <= last and len(days) < MAX_AXIS_DAYS:
        days.append([d.isoformat(), day_start(d)])
        d += dt.timedelta(days=1)
    return {"days": days, "end": day_start(d)}
