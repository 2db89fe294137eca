"""Users, passwords, sessions, login throttling and the login audit trail.

- Users file: JSON, written atomically with mode 0600; each password is stored as scrypt
  (N=2^15, r=8, p=1) of a per-user random 16-byte salt. No default password exists: the first
  start creates `admin` with a random password printed once.
- Sessions live in memory (a restart logs everyone out) with an idle and an absolute expiry and
  a CSRF token each; the user record is re-read on every request, so a removed user or a changed
  scope takes effect at once.
- Throttling (`LoginGuard`) is per (account, client address) (IPv6 per /64), with a higher limit
  per address and a global ceiling: after a few failures attempts are refused with 429 and a
  Retry-After that doubles per further failure; nothing ever sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.netaddr import NetworkError, Scope, parse_network
from webui.roles import ROLES, role_of

log = logging.getLogger("maltrail.webui")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
SCRYPT_MAXMEM = 64 << 20
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
THROTTLE_FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 30
GLOBAL_FAILURES_PER_MINUTE = 120
THROTTLE_MAX_SECONDS = 900
THROTTLE_FORGET_SECONDS = 3600
THROTTLE_TABLE = 10_000
MAX_SESSIONS = 10_000
MAX_SESSIONS_PER_USER = 32


class UserError(ValueError):
    """Bad user name, password, scope or users file; one line."""


class LastAdmin(UserError):
    """A change that would leave nobody able to administer the dashboard."""


def hash_password(password: str, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> dict[str, Any]:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=32)
    return {"kdf": "scrypt", "n": n, "r": r, "p": p, "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(digest).decode()}


def verify_password(password: str, record: dict[str, Any]) -> bool:
    try:
        salt = base64.b64decode(record["salt"])
        expected = base64.b64decode(record["hash"])
        n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
        if record.get("kdf") != "scrypt" or not (1 << 14 <= n <= 1 << 20) or r > 32 or p > 16:
            return False
        digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM * 8,
                                dklen=len(expected))
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


_DUMMY = hash_password(secrets.token_urlsafe(16))


def check_username(name: str) -> str:
    if not USERNAME.match(name):
        raise UserError(f"user name {name[:64]!r}: use 1-64 letters, digits, _ . @ -")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"password: use {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_scope(items: list[str]) -> list[str]:
    try:
        return Scope.parse([i for i in items if i.strip()]).texts()
    except NetworkError as exc:
        raise UserError(f"scope: {exc}") from None


@dataclass
class User:
    name: str
    password: dict[str, Any]
    role: str = "analyst"
    scope: list[str] = field(default_factory=list)
    unshown: bool = False  # a generated password that was never printed (first start)
    disabled: bool = False  # kept (name, role, scope) but may not log in; its sessions end

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def as_dict(self) -> dict[str, Any]:
        out = {"password": self.password, "role": self.role, "admin": self.admin, "scope": self.scope}
        if self.unshown:
            out["unshown"] = True
        if self.disabled:
            out["disabled"] = True
        return out


class UserStore:
    """The users file, re-read when it changes on disk (`maltrail user add` on a running server)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    def load(self) -> dict[str, User]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return self._users
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._users = self._read()
            self._stamp = stamp
        return self._users

    def _read(self) -> dict[str, User]:
        try:
            data = json.loads(self.path.read_text())
            users = {}
            for name, rec in data["users"].items():
                check_username(name)
                scope = check_scope(list(rec.get("scope", [])))
                if not isinstance(rec["password"], dict):
                    raise TypeError
                if "role" in rec and rec["role"] not in ROLES:
                    raise UserError(f"user {name!r}: role must be one of {', '.join(ROLES)}")
                users[name] = User(name, rec["password"], role_of(rec), scope, bool(rec.get("unshown", False)),
                                   bool(rec.get("disabled", False)))
            return users
        except UserError as exc:
            raise UserError(f"{self.path}: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{self.path}: not a valid users file") from None

    def get(self, name: str) -> User | None:
        """For the running server: a users file that became unreadable fails closed (nobody), and
        a disabled user is nobody."""
        try:
            user = self.load().get(name)
        except UserError as exc:
            log.error("%s: every session refused until it is fixed", exc)
            return None
        return None if user is None or user.disabled else user

    def save(self, users: dict[str, User]) -> None:
        """Atomic replace; the file is 0600 from its first byte."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "users": {n: u.as_dict() for n, u in sorted(users.items())}}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._stamp = None

    def set_user(self, name: str, password: str, admin: bool | None = None, scope: list[str] | None = None,
                 role: str | None = None, unshown: bool = False, disabled: bool | None = None) -> User:
        users = dict(self.load())
        old = users.get(check_username(name))
        if role is None and admin is not None:
            role = "admin" if admin else "analyst"
        if role is not None and role not in ROLES:
            raise UserError(f"role: expected one of {', '.join(ROLES)}")
        user = User(name, hash_password(check_password(password)),
                    role if role is not None else (old.role if old else "analyst"),
                    check_scope(scope) if scope is not None else (old.scope if old else []), unshown,
                    disabled if disabled is not None else bool(old and old.disabled))
        users[name] = user
        self.save(users)
        return user

    def change(self, name: str, role: str | None = None, scope: list[str] | None = None,
               password: str | None = None, disabled: bool | None = None, remove: bool = False) -> User | None:
        """One administrator's change to an existing user (None: no such user). Refused when it
        would leave no enabled admin, so the dashboard can always be administered."""
        users = dict(self.load())
        old = users.get(name)
        if old is None:
            return None
        if role is not None and role not in ROLES:
            raise UserError(f"role: expected one of {', '.join(ROLES)}")
        user = User(name, hash_password(check_password(password)) if password is not None else old.password,
                    role if role is not None else old.role, check_scope(scope) if scope is not None else old.scope,
                    old.unshown and password is None, old.disabled if disabled is None else disabled)
        if remove:
            del users[name]
        else:
            users[name] = user
        if old.admin and not old.disabled and not any(u.admin and not u.disabled for u in users.values()):
            raise LastAdmin("the last enabled admin cannot be removed, disabled or demoted")
        self.save(users)
        return user

    def remove(self, name: str) -> bool:
        users = dict(self.load())
        if users.pop(name, None) is None:
            return False
        self.save(users)
        return True

    def ensure_admin(self) -> str | None:
        """Create `admin` with a random password when there is no user at all, or replace one that
        was created but never shown (the start failed before printing it); returns the password.
        The caller prints it and then calls `shown`."""
        users = self.load()
        if users and not (len(users) == 1 and "admin" in users and users["admin"].unshown):
            return None
        password = secrets.token_urlsafe(15)
        self.set_user("admin", password, role="admin", scope=[], unshown=True)
        return password

    def shown(self, name: str) -> None:
        """The generated password of `name` has been printed: it is an ordinary user now."""
        users = dict(self.load())
        user = users.get(name)
        if user is not None and user.unshown:
            user.unshown = False
            self.save(users)


def verify(users: UserStore, name: str, password: str) -> User | None:
    """Constant work whether or not the user exists."""
    user = users.get(name) if USERNAME.match(name) else None
    ok = verify_password(password[:MAX_PASSWORD], user.password if user else _DUMMY)
    return user if ok and user is not None else None


@dataclass
class Session:
    token: str
    user: str
    csrf: str
    created: float
    seen: float


class Sessions:
    """Server-side sessions; `clock` is injectable so expiry can be tested on a running server."""

    def __init__(self, idle_seconds: float, max_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle_seconds
        self.max = max_seconds
        self.clock = clock
        self._by_token: dict[str, Session] = {}

    def create(self, user: str, now: float | None = None) -> Session:
        now = self.clock() if now is None else now
        self.reap(now)
        theirs = [s for s in self._by_token.values() if s.user == user]
        if len(theirs) >= MAX_SESSIONS_PER_USER:
            del self._by_token[min(theirs, key=lambda s: s.seen).token]
        if len(self._by_token) >= MAX_SESSIONS:
            oldest = min(self._by_token.values(), key=lambda s: s.seen)
            del self._by_token[oldest.token]
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None, now: float | None = None) -> Session | None:
        if not token or len(token) > 128:
            return None
        now = self.clock() if now is None else now
        s = self._by_token.get(token)
        if s is None:
            return None
        if now - s.seen > self.idle or now - s.created > self.max:
            del self._by_token[token]
            return None
        s.seen = now
        return s

    def peek(self, token: str | None, now: float | None = None) -> Session | None:
        """Still valid? Without counting as activity (a live stream does not keep a session alive)."""
        s = self._by_token.get(token or "")
        now = self.clock() if now is None else now
        if s is None or now - s.seen > self.idle or now - s.created > self.max:
            return None
        return s

    def delete(self, token: str) -> None:
        self._by_token.pop(token, None)

    def end_user(self, user: str, keep: str = "") -> None:
        """Log a user out everywhere (a new password), but for the session `keep`."""
        for token in [t for t, s in self._by_token.items() if s.user == user and t != keep]:
            del self._by_token[token]

    def reap(self, now: float) -> None:
        for token in [t for t, s in self._by_token.items() if now - s.seen > self.idle or now - s.created > self.max]:
            del self._by_token[token]


def client_bucket(address: str) -> str:
    """Throttle key: the address, or its /64 for IPv6 (one host owns a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Record:
    failures: int
    last: float
    locked_until: float
    refused: int = 0  # attempts refused during the current lockout
    names: set[str] = field(default_factory=set)  # user names tried and failed (at most 16 kept)


class Throttle:
    """Per-client login failure counter with exponential lockout."""

    def __init__(self, free: int = THROTTLE_FREE_FAILURES, max_seconds: float = THROTTLE_MAX_SECONDS) -> None:
        self.free = free
        self.max_seconds = max_seconds
        self._table: dict[str, _Record] = {}

    def retry_after(self, bucket: str, now: float | None = None) -> float:
        """Seconds the client must wait before its next attempt is evaluated (0 = go ahead)."""
        now = time.monotonic() if now is None else now
        rec = self._table.get(bucket)
        if rec is None:
            if len(self._table) >= THROTTLE_TABLE and not self._prune(now):
                return 60.0  # table full of live lockouts: refuse newcomers rather than forget attackers
            return 0.0
        return max(0.0, rec.locked_until - now)

    def failure(self, bucket: str, name: str = "", now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        rec = self._table.get(bucket)
        if rec is None or now - rec.last > THROTTLE_FORGET_SECONDS:
            rec = self._table[bucket] = _Record(0, now, 0.0)
        rec.failures += 1
        rec.last = now
        if len(rec.names) < 16:
            rec.names.add(name[:64])
        if rec.failures >= self.free:
            rec.locked_until = now + min(self.max_seconds, 2.0 ** (rec.failures - self.free))
            rec.refused = 0
        return max(0.0, rec.locked_until - now)

    def refused(self, bucket: str) -> int:
        """Count one refused attempt; returns how many came before it in this lockout (the audit
        records the first only, so a flood cannot fill the disk)."""
        rec = self._table.get(bucket)
        if rec is None:
            return 0
        rec.refused += 1
        return rec.refused - 1

    def success(self, bucket: str, name: str = "") -> None:
        """Clears the record only when every failure was for this same user: logging in to one's
        own account between guesses at another must not reset the count."""
        rec = self._table.get(bucket)
        if rec is not None and rec.names <= {name[:64]}:
            del self._table[bucket]

    def _prune(self, now: float) -> bool:
        for key in [k for k, r in self._table.items()
                    if r.locked_until <= now and now - r.last > 60 or now - r.last > THROTTLE_FORGET_SECONDS]:
            del self._table[key]
        return len(self._table) < THROTTLE_TABLE


class LoginGuard:
    """Login throttling that does not let users behind one proxy lock each other out:
    failures count per (account, client address); an address that fails across many accounts is
    stopped at a higher count; and a global ceiling on failures per minute (any account, any
    address) refuses every attempt for a while, against guessing spread over many addresses."""

    def __init__(self, free: int = THROTTLE_FREE_FAILURES, address_free: int = ADDRESS_FREE_FAILURES,
                 global_per_minute: int = GLOBAL_FAILURES_PER_MINUTE) -> None:
        self.pair = Throttle(free)
        self.address = Throttle(address_free)
        self.global_per_minute = global_per_minute
        self._recent: deque[float] = deque()

    @staticmethod
    def _key(bucket: str, name: str) -> str:
        return f"{bucket}|{name[:64].lower()}"

    def _global_wait(self, now: float) -> float:
        while self._recent and now - self._recent[0] >= 60:
            self._recent.popleft()
        if len(self._recent) < self.global_per_minute:
            return 0.0
        return 60 - (now - self._recent[0])

    def retry_after(self, bucket: str, name: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(self.pair.retry_after(self._key(bucket, name), now), self.address.retry_after(bucket, now),
                   self._global_wait(now))

    def failure(self, bucket: str, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.pair.failure(self._key(bucket, name), name, now)
        self.address.failure(bucket, name, now)
        self._recent.append(now)

    def refused(self, bucket: str, name: str) -> int:
        return self.pair.refused(self._key(bucket, name))

    def success(self, bucket: str, name: str) -> None:
        self.pair.success(self._key(bucket, name), name)
        self.address.success(bucket, name)


_UNSAFE = re.compile(r"[^\x21-\x7e]")


def sanitize(text: str, limit: int = 64) -> str:
    """Control characters and spaces become `?` so one attempt is always one audit line."""
    return _UNSAFE.sub("?", text[:limit])


class Audit:
    """Append-only `LOG_DIR/.webui/audit.log` (0600): one line per login attempt or logout."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, user: str, client: str, detail: str = "") -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        line = f"{stamp} {event} user={sanitize(user)} from={sanitize(client)}"
        if detail:
            line += f" {sanitize(detail, 200)}"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def scope_of(user: User) -> Scope:
    try:
        return Scope.parse(user.scope)
    except NetworkError:
        return Scope([parse_network("::/128")])  # fail closed: a damaged scope shows nothing
