"""OpenAPI 3.1 description of the JSON API (served at /api/openapi.json; docs/WEBUI.md is the prose).

Paths marked `security: session` answer 401 without a valid session cookie; a test walks this
file and checks exactly that, so the description and the server cannot drift apart.
"""

from __future__ import annotations

from typing import Any

_RANGE = [
    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
]
_Q = [{"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 1024}}]
_CSRF = [{"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"}}]
_OBJ = {"type": "object"}

THREAT = {"type": "object", "properties": {k: {} for k in (
    "id", "src_ip", "dst_ip", "dst_port", "proto", "type", "trail", "info", "reference", "sensor", "count",
    "first_seen", "last_seen", "severity", "hourly", "status", "note", "values", "tags")}}
EVENT = {"type": "object", "properties": {k: {} for k in (
    "id", "time", "sensor", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "type", "trail", "info",
    "reference", "severity")}}


def _op(summary: str, params: list[dict[str, Any]] | None = None, secured: bool = True,
        body: bool = False, response: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": {"200": {"description": "OK", "content": {
                              "application/json": {"schema": response or _OBJ}}}}}
    if secured:
        op["security"] = [{"session": []}]
        op["responses"]["401"] = {"description": "no valid session"}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _OBJ}}}
    op["responses"]["400"] = {"description": "invalid parameter (the message names it)"}
    return op


def _int(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "integer"}}


def _str(name: str, where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "schema": {"type": "string"}, **({"required": True} if where == "path" else {})}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "maltrail-ng dashboard API", "version": "1"},
        "components": {"securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "mt_session"},
                                           "token": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Threat": THREAT, "Event": EVENT}},
        "paths": {
            "/api/login": {"post": _op("Log in; sets the mt_session cookie", secured=False, body=True)},
            "/api/logout": {"post": _op("Log out (server-side)", _CSRF)},
            "/api/session": {"get": _op("Current user, CSRF token and scope")},
            "/api/threats": {"get": _op("Threats grouped as Maltrail does (source and normalised trail, or source "
                                        "and heuristic family)", _RANGE + _Q + [
                _str("sort"), _str("order"), _int("page"), _int("per_page")])},
            "/api/threats/{id}/events": {"get": _op("Raw events of one threat, newest first",
                                                    [_str("id", "path"), *_RANGE, _int("limit")])},
            "/api/days": {"get": _op("Events per day", _RANGE)},
            "/api/stats": {"get": _op("Timeline, top sources and trails, severity split", _RANGE + _Q)},
            "/api/check": {"get": _op("Indicator lookup in the trail index", [_str("indicator")])},
            "/api/hunt": {"get": _op("Retro hunt over the daily logs within a time budget",
                                     [_str("indicator"), {"name": "budget", "in": "query",
                                                          "schema": {"type": "number"}}, *_RANGE])},
            "/api/hunt/events": {"get": _op("Every event matching a hunted indicator, paged, from the index",
                                            [_str("indicator"), *_RANGE, _int("page"), _int("per_page")])},
            "/api/hunt/export": {"get": _op("The hunted events as CSV or JSON",
                                            [_str("indicator"), _str("format"), *_RANGE])},
            "/api/live": {"get": {**_op("Server-Sent Events of new events", [_int("after"),
                                                                            _str("Last-Event-ID", "header")]),
                                  "responses": {"200": {"description": "text/event-stream"},
                                                "401": {"description": "no valid session"}}}},
            "/api/status": {"get": {**_op("Engine status (aggregator counters)"),
                                    "security": [{"session": []}, {"token": []}]}},
            "/api/blocklist": {"get": {**_op("Addresses to block (text, one a line, or JSON); bearer token with "
                                             "the blocklist scope (403 without it)",
                                             [_str("since"), _str("severity"), _str("format")]),
                                       "security": [{"token": []}]}},
            "/api/sensors": {"get": _op("Every sensor with a status file: last event, events/s, drops, index age")},
            "/api/sensors/remote": {"get": _op("Collected sensors ([collect]): heartbeats, connected/stale, index, "
                                               "drops")},
            "/api/export": {"get": _op("Filtered threats as CSV, JSON or defanged indicators",
                                       [_str("format"), *_RANGE, *_Q, _str("sort"), _str("order")])},
            "/api/threats/{id}/history": {"get": _op("Triage history of a threat: who changed what and when",
                                                     [_str("id", "path")])},
            "/api/triage/{id}": {"post": _op("Set the shared status, note and tags of a threat",
                                             [_str("id", "path"), *_CSRF], body=True)},
            "/api/suppressions": {"get": _op("Suppression rules"),
                                  "post": _op("Add a suppression rule", _CSRF, body=True)},
            "/api/suppressions/{id}": {"delete": _op("Remove a suppression rule", [_str("id", "path"), *_CSRF])},
            "/api/users": {"get": _op("Users with role, scope and whether disabled (admin only)"),
                           "post": _op("Create a user: name, password, role, scope (a list of CIDRs), disabled "
                                       "(admin without a scope)", _CSRF, body=True)},
            "/api/users/{id}": {"post": _op("Change a user's role, scope, password or disabled flag (admin without "
                                            "a scope; never the last enabled admin: 409)",
                                            [_str("id", "path"), *_CSRF], body=True),
                                "delete": _op("Remove a user (admin without a scope; never the last enabled admin)",
                                              [_str("id", "path"), *_CSRF])},
            "/api/views": {"get": _op("This user's saved views"),
                           "post": _op("Save a named view (search + range) for this user", _CSRF, body=True)},
            "/api/views/{id}": {"delete": _op("Remove one of this user's saved views", [_str("id", "path"), *_CSRF])},
            "/api/openapi.json": {"get": _op("This description", secured=False)},
        },
    }
