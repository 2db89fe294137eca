"""`maltrail server` and `maltrail user add|remove|list`: argument parsing and reporting only."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ConfigError, load_configs, load_nats_configs

if TYPE_CHECKING:
    from webui.settings import Settings


def _config_file(args: argparse.Namespace) -> Path | None:
    path = Path(args.config) if args.config else None
    if path is None and Path("maltrail.toml").is_file():
        path = Path("maltrail.toml")
    return path


def _settings(args: argparse.Namespace) -> Settings:
    """The dashboard's settings; their module (the severity rules, address scopes) is imported here,
    not at the start of every command: the sensor's start-up path imports this file."""
    from webui.settings import resolve  # noqa: PLC0415 - deferred: see the docstring

    sensor, server = load_configs(_config_file(args))
    return resolve(sensor, server, log_dir=args.log_dir, users=args.users, listen=getattr(args, "listen", None),
                   trails=getattr(args, "trails", None))


def cmd_server(args: argparse.Namespace) -> int:
    from webui.server import serve  # aiohttp only when serving

    _, collect = load_nats_configs(_config_file(args))
    if collect is not None:
        from engine.ship.collector import check_collect  # nats-py only with [collect]

        check_collect(collect)
    return serve(_settings(args), collect=collect)


def _read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("passwords differ")
    return first


def _role_note(role: str, sep: str) -> str:
    """Analyst is the default role and goes unsaid (the listing format predates roles)."""
    return "" if role == "analyst" else sep + role


def cmd_user(args: argparse.Namespace) -> int:
    from webui.auth import UserError, UserStore  # scrypt set-up only for user commands

    store = UserStore(_settings(args).users)
    try:
        if args.user_command == "add":
            scope = [s for s in args.scope.split(",")] if args.scope is not None else None
            password = _read_password().rstrip("\r")
            role = "admin" if args.admin else args.role
            user = store.set_user(args.name, password, scope=scope, role=role)
            scope_text = ", ".join(user.scope) or "everything"
            print(f"user {user.name!r} saved in {store.path} (scope: {scope_text}{_role_note(user.role, ', ')})")
        elif args.user_command == "remove":
            if not store.remove(args.name):
                raise ConfigError(f"no user {args.name!r} in {store.path}")
            print(f"user {args.name!r} removed from {store.path}")
        else:
            for user in store.load().values():
                print(f"{user.name}  scope={','.join(user.scope) or '*'}{_role_note(user.role, '  ')}"
                      f"{'  disabled' if user.disabled else ''}")
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{store.path}: {exc.strerror}") from None
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from webui.tokens import TokenError, TokenStore

    store = TokenStore(_settings(args).tokens)
    try:
        if args.token_command == "add":
            token = store.add(args.name, [s.strip() for s in args.scope.split(",") if s.strip()])
            print(token)
            print(f"token {args.name!r} saved (hashed) in {store.path}, scope {args.scope}; it is shown only now",
                  file=sys.stderr)
        elif args.token_command == "remove":
            store.remove(args.name)
            print(f"token {args.name!r} removed from {store.path}")
        else:
            for t in store.load().values():
                print(f"{t.name}  scope={','.join(t.scopes)}")
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{store.path}: unreadable or unwritable ({exc})") from None
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="configuration file (default: ./maltrail.toml if present)")
    p.add_argument("--log-dir", dest="log_dir", help="directory of the daily event files")
    p.add_argument("--users", help="users file (default: LOG_DIR/.webui/users.json)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="serve the dashboard and its JSON API over the event logs")
    _common(p)
    p.add_argument("--listen", help="HOST:PORT to bind (default 127.0.0.1:8338)")
    p.add_argument("--trails", help="trail index (or trails.csv / static folder) for indicator lookups")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("user", help="dashboard users")
    usub = p.add_subparsers(dest="user_command", required=True)
    a = usub.add_parser("add", help="add a user or set a password (read from stdin when it is not a terminal)")
    a.add_argument("name")
    _common(a)
    a.add_argument("--scope", help="comma-separated CIDRs the user may see (default: everything)")
    a.add_argument("--admin", action="store_true", help="administrator (same as --role admin)")
    a.add_argument("--role", choices=("admin", "analyst", "viewer"),
                   help="admin: users and every rule; analyst (default for a new user): triage and "
                        "suppressions in its scope; viewer: read-only")
    a.set_defaults(func=cmd_user)
    r = usub.add_parser("remove", help="remove a user")
    r.add_argument("name")
    _common(r)
    r.set_defaults(func=cmd_user)
    ls = usub.add_parser("list", help="list users")
    _common(ls)
    ls.set_defaults(func=cmd_user)

    p = sub.add_parser("token", help="bearer tokens for automation (GET /api/blocklist, /api/status)")
    tsub = p.add_subparsers(dest="token_command", required=True)
    a = tsub.add_parser("add", help="create (or replace) a token; it is printed once, stored hashed")
    a.add_argument("name")
    a.add_argument("--scope", required=True, help="comma-separated: blocklist, status")
    _common(a)
    r = tsub.add_parser("remove", help="revoke a token")
    r.add_argument("name")
    _common(r)
    ls = tsub.add_parser("list", help="list tokens (names and scopes)")
    _common(ls)
    for q in (a, r, ls):
        q.set_defaults(func=cmd_token)
