"""Retro hunt, per day: one indicator over every day the event index holds, newest day first,
within a time budget.

An address or CIDR matches the source, destination or address trail of an event; a literal is a
case-insensitive substring of a field (`webui.queries._hunt_filter`, the same test as the paged
hunt events). Each day is one indexed query, so a day is always counted whole; the budget is
checked between days (the first day always runs): days never reached are listed as such and the
answer says `complete: false`, never passing a partial count off as complete. While the index is
still being built the answer is marked partial too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from webui import queries as Q
from webui.netaddr import Network, NetworkError, Scope, parse_network
from webui.store import Readers

MAX_SAMPLES = 200
MIN_LITERAL = 3
MAX_INDICATOR = 256


class HuntError(ValueError):
    """Unusable indicator."""


def check_indicator(indicator: str) -> Network | None:
    """The network of an address / CIDR indicator, None for text; HuntError when unusable."""
    if "\n" in indicator or "\r" in indicator or "\x00" in indicator or len(indicator) > MAX_INDICATOR:
        raise HuntError("must be one line of at most 256 characters")
    try:
        return parse_network(indicator)
    except NetworkError:
        pass
    if len(indicator) < MIN_LITERAL:
        raise HuntError(f"give an address, a CIDR or at least {MIN_LITERAL} characters")
    return None


def hunt(readers: Readers, indicator: str, budget: float, scope: Scope, day_from: str | None = None,
         day_to: str | None = None, stopping: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """`stopping()` true (the server is shutting down) ends the hunt like a spent budget."""
    indicator = indicator.strip()
    net = check_indicator(indicator)
    started = time.monotonic()
    deadline = started + budget
    days: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    unscanned: list[str] = []
    with readers.snapshot() as conn:
        for date in Q.hunt_days(conn, day_from or "0000-01-01", day_to or "9999-12-31"):
            if days and (stopping() or time.monotonic() >= deadline):
                unscanned.append(date)
                continue
            hits, found = Q.hunt_day(conn, scope, date, net, indicator, MAX_SAMPLES - len(samples))
            samples += [{**e, "id": None} for e in found]  # ids: the paged hunt events have them
            days.append({"date": date, "hits": hits, "complete": True})
    return {"indicator": indicator, "kind": "network" if net else "text", "complete": not unscanned,
            "days": days, "unscanned_days": unscanned, "events": samples, "capped": len(samples) >= MAX_SAMPLES,
            "elapsed": round(time.monotonic() - started, 3)}
