"""Roles and what each may do, checked for every request in one place (the auth middleware).

- viewer: reads everything in its scope (wall screens); changes nothing but its own session and
  saved views.
- analyst: a viewer that also triages and manages suppressions inside its own scope (and removes
  its own rules).
- admin: everything, including the users list and every suppression rule.

Reads (GET) need `viewer`; a change needs `analyst` unless listed in `CHANGES`; a route that is
not listed there and changes state needs `admin`, so a new endpoint is closed until it is placed.
"""

from __future__ import annotations

ROLES = ("viewer", "analyst", "admin")
RANK = {name: i for i, name in enumerate(ROLES)}

CHANGES: dict[tuple[str, str], str] = {
    ("POST", "/api/logout"): "viewer",
    ("POST", "/api/views"): "viewer",
    ("DELETE", "/api/views/{vid}"): "viewer",
    ("POST", "/api/triage/{tid}"): "analyst",
    ("POST", "/api/suppressions"): "analyst",
    ("DELETE", "/api/suppressions/{rid}"): "analyst",
}
READS_ADMIN = {"/api/users"}


def required(method: str, route: str) -> str:
    """The least role that may call `method` on the route pattern `route`."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return "admin" if route in READS_ADMIN else "viewer"
    return CHANGES.get((method, route), "admin")


def allows(role: str, method: str, route: str) -> bool:
    return RANK.get(role, -1) >= RANK[required(method, route)]


def role_of(record: dict) -> str:
    """The role of a users-file record; files written before roles have only `admin`."""
    role = record.get("role")
    if role in RANK:
        return role
    return "admin" if record.get("admin") else "analyst"
