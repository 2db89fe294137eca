"""The search language (`q`) compiled to SQL with bound parameters; user text is never spliced.

Tokens are ANDed. `field:value` (`src dst ip port proto type trail info sev sensor ref status
suppressed`), a leading `-` negates, double quotes group spaces, a bare word matches any text
field. Tokens on the threat key (source, trail) or on the threat itself (severity, status) are
kept apart from the tokens on single events: a query with no event token is answered from the
per-day aggregates (which are per type too, so `type:` is answered there), one with event tokens
from the raw events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.severity import LEVELS
from webui.netaddr import NetworkError, parse_network

MAX_QUERY = 1024
MAX_TOKENS = 32
STATUSES = ("new", "investigating", "resolved", "false_positive")
EVENT_TEXT = {"proto": "e.proto", "type": "e.type", "info": "e.info", "sensor": "e.sensor", "ref": "e.reference"}
BARE_COLUMNS = ("e.src_ip", "e.dst_ip", "e.trail", "e.info", "e.reference", "e.type", "e.proto", "e.sensor")
FIELDS = ("src", "dst", "ip", "port", "proto", "type", "trail", "info", "sev", "sensor", "ref", "status", "suppressed")


class SearchError(ValueError):
    """A token that cannot be understood; the message names it."""


@dataclass
class Query:
    """`event_sql` filters events (alias `e`), `row_sql` filters events and per-day aggregates
    alike (unqualified `type`), `threat_sql` filters grouped threats (aliases `t` for the threat
    key, `g` for the aggregate, `tr` for triage)."""

    event_sql: list[str] = field(default_factory=list)
    event_params: list[object] = field(default_factory=list)
    row_sql: list[str] = field(default_factory=list)  # on `type`, which events and aggregates both have
    row_params: list[object] = field(default_factory=list)
    threat_sql: list[str] = field(default_factory=list)
    threat_params: list[object] = field(default_factory=list)
    include_suppressed: bool = False

    @property
    def has_event_terms(self) -> bool:
        return bool(self.event_sql)


def tokenize(q: str) -> list[tuple[bool, str | None, str]]:
    """(negated, field or None, value) per token."""
    if len(q) > MAX_QUERY:
        raise SearchError(f"query longer than {MAX_QUERY} characters")
    tokens: list[tuple[bool, str | None, str]] = []
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        start = i
        negated = q[i] == "-" and i + 1 < n and not q[i + 1].isspace()
        if negated:
            i += 1
        name: str | None = None
        j = i
        while j < n and (q[j].isalnum() or q[j] == "_"):
            j += 1
        if j < n and q[j] == ":" and q[i:j].lower() in FIELDS:
            name, i = q[i:j].lower(), j + 1
        if i < n and q[i] == '"':
            value, i = _quoted(q, i)
        else:
            j = i
            while j < n and not q[j].isspace():
                j += 1
            value, i = q[i:j], j
        if name is None and not value:
            raise SearchError(f"empty token {q[start:i]!r}")
        tokens.append((negated, name, value))
        if len(tokens) > MAX_TOKENS:
            raise SearchError(f"more than {MAX_TOKENS} tokens")
    return tokens


def _quoted(q: str, i: int) -> tuple[str, int]:
    out, i = [], i + 1
    while i < len(q):
        if q[i] == '"':
            if i + 1 < len(q) and q[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            return "".join(out), i + 1
        out.append(q[i])
        i += 1
    raise SearchError("unclosed double quote")


def _port_range(value: str) -> tuple[int, int]:
    try:
        if value.startswith(">="):
            lo, hi = int(value[2:]), 65535
        elif value.startswith("<="):
            lo, hi = 0, int(value[2:])
        elif value.startswith(">"):
            lo, hi = int(value[1:]) + 1, 65535
        elif value.startswith("<"):
            lo, hi = 0, int(value[1:]) - 1
        elif "-" in value:
            a, b = value.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(value)
    except ValueError:
        raise SearchError(f"port:{value}: expected a number, a range a-b or >n/<n") from None
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535 and lo <= hi) and not (lo > hi and value[0] in "<>"):
        raise SearchError(f"port:{value}: out of range 0..65535")
    return lo, hi


def _choices(name: str, value: str, allowed: dict[str, object]) -> list[object]:
    out = []
    for v in value.lower().split(","):
        if v not in allowed:
            raise SearchError(f"{name}:{value}: expected one of {', '.join(allowed)}")
        out.append(allowed[v])
    return out


def _address(name: str, value: str, key_col: str, text_col: str) -> tuple[str, list[object]]:
    try:
        net = parse_network(value)
    except NetworkError:
        raise SearchError(f"{name}:{value}: expected an address or CIDR") from None
    sql = f"({key_col} BETWEEN ? AND ? OR ({key_col} IS NULL AND mt_in_range({text_col}, ?, ?)))"
    return sql, [net.lo, net.hi, net.lo, net.hi]


def _text(column: str, value: str) -> tuple[str, list[object]]:
    return f"instr(lower({column}), ?) > 0", [value.lower()]


def compile_query(q: str) -> Query:
    """Raises SearchError (message names the bad token)."""
    query = Query()
    for negated, name, value in tokenize(q or ""):
        threat_level = name in ("src", "trail", "sev", "status")
        if name == "suppressed":
            if negated or value.lower() not in ("yes", "no"):
                raise SearchError(f"suppressed:{value}: expected yes or no")
            query.include_suppressed = value.lower() == "yes"
            continue
        if not value:
            raise SearchError(f"{name}: needs a value")
        if name == "src":
            sql, params = _address(name, value, "t.src_key", "t.src_ip")
        elif name == "dst":
            sql, params = _address(name, value, "e.dst_key", "e.dst_ip")
        elif name == "ip":
            a, pa = _address(name, value, "e.src_key", "e.src_ip")
            b, pb = _address(name, value, "e.dst_key", "e.dst_ip")
            sql, params = f"({a} OR {b})", pa + pb
        elif name == "port":
            ranges = [_port_range(v) for v in value.split(",")]
            sql = "(" + " OR ".join("e.dport BETWEEN ? AND ?" for _ in ranges) + ")"
            params = [v for r in ranges for v in r]
        elif name == "trail":
            sql, params = _text("t.trail", value)
        elif name == "sev":
            levels = _choices(name, value, dict(LEVELS))
            sql, params = f"g.sev IN ({','.join('?' * len(levels))})", levels
        elif name == "status":
            states = _choices(name, value.replace("-", "_"), {s: s for s in STATUSES})
            sql, params = f"COALESCE(tr.status, 'new') IN ({','.join('?' * len(states))})", states
        elif name in ("proto", "type"):
            values = [v for v in value.lower().split(",") if v]
            column = "type" if name == "type" else EVENT_TEXT[name]
            sql = "(" + " OR ".join(f"lower({column}) = ?" for _ in values) + ")"
            params = list(values)
        elif name is not None:
            sql, params = _text(EVENT_TEXT[name], value)
        else:
            sql = "(" + " OR ".join(f"instr(lower({c}), ?) > 0" for c in BARE_COLUMNS) + ")"
            params = [value.lower()] * len(BARE_COLUMNS)
        if negated:
            sql = f"NOT COALESCE({sql}, 0)"
        if threat_level:
            query.threat_sql.append(sql)
            query.threat_params += params
        elif name == "type":
            query.row_sql.append(sql)
            query.row_params += params
        else:
            query.event_sql.append(sql)
            query.event_params += params
    return query
