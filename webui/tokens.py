"""Per-client bearer tokens for automation (fail2ban, firewall loaders, monitoring).

`maltrail token add NAME --scope blocklist` prints a token once; only its SHA-256 is stored (the
token is 256 random bits, so a fast hash is as good as a slow one and checks stay cheap). A token
reaches only the API paths its scopes name: no or an unknown token is 401, a valid token on a
path outside its scopes is 403.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

SCOPES = {"blocklist": "/api/blocklist", "status": "/api/status"}
TOKEN_PATHS = {path: scope for scope, path in SCOPES.items()}
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
PREFIX = "mtk_"


class TokenError(Exception):
    """A token command that cannot be done (bad name or scope, unknown token)."""


@dataclass(frozen=True)
class Token:
    name: str
    digest: str
    scopes: tuple[str, ...]
    created: float


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class TokenStore:
    """`tokens.json` (0600): name -> {sha256, scopes, created}. Re-read when the file changes, so
    a token added or removed by the command applies to a running server at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._tokens: dict[str, Token] = {}

    def load(self) -> dict[str, Token]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._tokens = None, {}
            return {}
        if self._seen != (st.st_mtime_ns, st.st_ino):
            data = json.loads(self.path.read_text())
            self._tokens = {name: Token(name, t["sha256"], tuple(t["scopes"]), t["created"])
                            for name, t in data.items()}
            self._seen = (st.st_mtime_ns, st.st_ino)
        return self._tokens

    def _save(self, tokens: dict[str, Token]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({t.name: {"sha256": t.digest, "scopes": list(t.scopes), "created": t.created}
                       for t in tokens.values()}, f, indent=1)
        os.replace(tmp, self.path)

    def add(self, name: str, scopes: list[str]) -> str:
        """A new token for `name` (replacing any it had); returned once, stored hashed."""
        if not NAME.match(name):
            raise TokenError(f"token name {name!r}: 1..64 letters, digits, _ . @ -")
        unknown = [s for s in scopes if s not in SCOPES]
        if not scopes or unknown:
            raise TokenError(f"--scope: {unknown[0] if unknown else '(none)'!r} is not a scope "
                             f"(scopes: {', '.join(SCOPES)})")
        token = PREFIX + secrets.token_urlsafe(32)
        tokens = dict(self.load())
        tokens[name] = Token(name, digest(token), tuple(dict.fromkeys(scopes)), time.time())
        self._save(tokens)
        return token

    def remove(self, name: str) -> None:
        tokens = dict(self.load())
        if tokens.pop(name, None) is None:
            raise TokenError(f"no token named {name!r} in {self.path}")
        self._save(tokens)

    def verify(self, token: str) -> Token | None:
        wanted = digest(token)
        found = None
        for t in self.load().values():  # every entry compared in constant time
            if hmac.compare_digest(t.digest, wanted):
                found = t
        return found


def token_gate(request: web.Request, store: TokenStore, scope: str) -> web.Response | None:
    """None when the request's bearer token holds `scope`; else the 401 / 403 answer."""
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="maltrail"'}
    if kind.lower() != "bearer" or not value.strip():
        return web.json_response({"error": "bearer token required (maltrail token add NAME --scope "
                                           f"{scope})"}, status=401, headers=challenge)
    try:
        token = store.verify(value.strip())
    except (OSError, ValueError, KeyError):
        return web.json_response({"error": "token store unreadable"}, status=500)
    if token is None:
        return web.json_response({"error": "unknown token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="maltrail", error="invalid_token"'})
    if scope not in token.scopes:
        return web.json_response({"error": f"token {token.name!r} lacks the {scope!r} scope"}, status=403)
    return None
