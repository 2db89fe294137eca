"""User administration over the API (admins without a scope limit): list, create, change role,
scope or password, disable and remove. The same users file and scrypt hashing as `maltrail user`;
every change is audited, and none may leave the dashboard without an enabled admin."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from webui.api import BadRequest, _json_body, handle
from webui.app import SESSION, USER, Context, client_address, ctx_of, json_error
from webui.auth import LastAdmin, User, UserError, check_password, check_username, scope_of
from webui.roles import ROLES


def _public(user: User) -> dict[str, Any]:
    """A user as the API shows it: never the password record."""
    return {"name": user.name, "role": user.role, "scope": user.scope, "disabled": user.disabled}


async def users_list(request: web.Request) -> web.Response:
    """Admin only (webui.roles): who may log in, with role and scope."""
    users = ctx_of(request).users.load()
    return web.json_response({"users": [_public(u) for u in sorted(users.values(), key=lambda u: u.name)]})


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The changeable fields present in a body, type-checked (values are checked by the store)."""
    out: dict[str, Any] = {}
    if "role" in body:
        if body["role"] not in ROLES:
            raise BadRequest(f"role: expected one of {', '.join(ROLES)}")
        out["role"] = body["role"]
    if "scope" in body:
        scope = body["scope"]
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope) or len(scope) > 256:
            raise BadRequest("scope: expected a list of networks (CIDR), empty for everything")
        out["scope"] = scope
    if "password" in body:
        if not isinstance(body["password"], str):
            raise BadRequest("password: expected a string")
        out["password"] = body["password"]
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise BadRequest("disabled: expected true or false")
        out["disabled"] = body["disabled"]
    return out


def _refuse_scoped(request: web.Request) -> web.Response | None:
    """A scoped admin could grant what it cannot see itself: user changes need an unscoped admin."""
    if not scope_of(request[USER]).unrestricted:
        return json_error(403, "an admin limited to a scope cannot manage users")
    return None


def _describe(fields: dict[str, Any]) -> str:
    parts = [f"{k}={','.join(v) or '*' if k == 'scope' else v}" for k, v in fields.items() if k != "password"]
    return " ".join(parts + (["password=reset"] if "password" in fields else []))


async def _store_write(ctx: Context, fn: Any, *args: Any) -> Any:
    """Users-file changes run one at a time on the writer thread (scrypt stays off the loop)."""
    try:
        return await ctx.write(fn, *args)
    except LastAdmin as exc:
        raise _Conflict(str(exc)) from None
    except UserError as exc:
        raise BadRequest(str(exc)) from None


class _Conflict(Exception):
    """Becomes a 409."""


def _conflicts(fn: Any) -> Any:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        refused = _refuse_scoped(request)
        if refused is not None:
            return refused
        try:
            return await fn(request)
        except _Conflict as exc:
            return json_error(409, str(exc))
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@handle
@_conflicts
async def users_add(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await _json_body(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("name: expected a string")
    fields = _fields(body)
    if "password" not in fields:
        raise BadRequest("password: required")
    try:
        check_username(name)
        check_password(fields["password"])
    except UserError as exc:
        raise BadRequest(str(exc)) from None

    def create() -> User:
        if name in ctx.users.load():
            raise _Conflict(f"user {name!r} exists already")
        return ctx.users.set_user(name, fields["password"], role=fields.get("role", "analyst"),
                                  scope=fields.get("scope", []), disabled=fields.get("disabled", False))

    return _done(request, "user-add", name, fields, _public(await _store_write(ctx, create)))


@handle
@_conflicts
async def users_change(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    name = request.match_info["name"]
    fields = _fields(await _json_body(request))
    if not fields:
        raise BadRequest("body: give role, scope, password or disabled")
    user = await _store_write(ctx, lambda: ctx.users.change(name, **fields))
    if user is None:
        return json_error(404, "no such user")
    if "password" in fields:  # a disabled user's sessions end by themselves (webui.app.current_user)
        ctx.sessions.end_user(name, keep=request[SESSION].token)
    return _done(request, "user-change", name, fields, _public(user))


@handle
@_conflicts
async def users_remove(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    name = request.match_info["name"]
    if await _store_write(ctx, lambda: ctx.users.change(name, remove=True)) is None:
        return json_error(404, "no such user")
    ctx.sessions.end_user(name)
    return _done(request, "user-remove", name, {}, {"ok": True})


def _done(request: web.Request, event: str, name: str, fields: dict[str, Any], answer: dict[str, Any]) -> web.Response:
    """Audit a change (never the password itself) and answer it."""
    ctx_of(request).audit.write(event, request[USER].name, client_address(request),
                                f"target={name} {_describe(fields)}".rstrip())
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/users", users_list)
    r.add_post("/api/users", users_add)
    r.add_post("/api/users/{name}", users_change)
    r.add_delete("/api/users/{name}", users_remove)
