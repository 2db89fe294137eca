"""The search language (`q`) compiled to SQL with bound parameters; user text is never spliced.

Terms are `field:value` (`src dst ip port proto type trail info sev sensor ref status count
suppressed`) or bare words (any text field). Terms next to each other must all hold (AND, also
written `AND` / `&&`); `OR` / `||` between terms, parentheses for groups, and `NOT` / `!` / a
leading `-` to negate. Double quotes group spaces. Text values match as substrings, or as a
whole with `*` / `?` wildcards (`trail:*.pastebin.com`). `port` and `count` take numbers,
ranges `a-b` and comparisons `>n >=n <n <=n`.

Each term is answered at one of three levels: the threat (`t` threat key, `g` aggregate, `tr`
triage: source, trail, severity, status, tag, count), the per-day aggregates (`type`, which they
have too), or single events (`e`). The top-level AND keeps each level apart, so a query with no
event term is answered from the aggregates; a group (OR, NOT of a group) is compiled at the one
level all its terms can be written at: source, trail and severity also exist on each event, but
status and count do not, so an OR between them and an event term is refused with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.severity import LEVELS
from webui.netaddr import NetworkError, parse_network

MAX_QUERY = 1024
MAX_TOKENS = 32
MAX_DEPTH = 8
STATUSES = ("new", "investigating", "resolved", "false_positive")
EVENT_TEXT = {"proto": "e.proto", "type": "e.type", "info": "e.info", "sensor": "e.sensor", "ref": "e.reference"}
BARE_COLUMNS = ("e.src_ip", "e.dst_ip", "e.trail", "e.info", "e.reference", "e.type", "e.proto", "e.sensor")
FIELDS = ("src", "dst", "ip", "port", "proto", "type", "trail", "info", "sev", "sensor", "ref", "status", "count",
          "tag", "suppressed")
LEVEL_ORDER = ("threat", "row", "event")  # cheapest first; a row form also works on events
OPERATORS = {"or": "OR", "||": "OR", "and": "AND", "&&": "AND", "not": "NOT", "!": "NOT"}
TRAIL_VALUES = "EXISTS (SELECT 1 FROM threat_values v WHERE v.threat = t.id AND {test})"


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


Term = tuple[bool, "str | None", str]  # (negated, field or None, value)
Forms = dict[str, tuple[str, list[object]]]  # level -> (sql, params)


def lex(q: str) -> list[Term | str]:
    """Terms, and the strings `(`, `)`, `OR`, `AND`, `NOT`."""
    if len(q) > MAX_QUERY:
        raise SearchError(f"query longer than {MAX_QUERY} characters")
    out: list[Term | str] = []
    depth = 0
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
            continue
        if c == "(":
            out.append("(")
            depth += 1
            i += 1
            continue
        if c == ")" and depth:
            out.append(")")
            depth -= 1
            i += 1
            continue
        start = i
        negated = c == "-" and i + 1 < n and not q[i + 1].isspace()
        if negated:
            i += 1
        name: str | None = None
        j = i
        while j < n and (q[j].isalnum() or q[j] == "_"):
            j += 1
        if j < n and q[j] == ":" and q[i:j].lower() in FIELDS:
            name, i = q[i:j].lower(), j + 1
        elif j < n and q[j] == ":" and q[i:j].isalpha() and q[j + 1:j + 3] != "//":
            raise SearchError(f"{q[i:j]}: unknown field (fields: {', '.join(FIELDS)})")
        if i < n and q[i] == '"':
            value, i = _quoted(q, i)
        else:
            j = i
            while j < n and not q[j].isspace() and not (q[j] == ")" and depth):
                j += 1
            value, i = q[i:j], j
        if name is None and not negated and value.lower() in OPERATORS:
            out.append(OPERATORS[value.lower()])
            continue
        if name is None and not value:
            raise SearchError(f"empty token {q[start:i]!r}")
        out.append((negated, name, value))
        if sum(1 for x in out if isinstance(x, tuple)) > MAX_TOKENS:
            raise SearchError(f"more than {MAX_TOKENS} tokens")
    return out


def tokenize(q: str) -> list[Term]:
    """The terms alone (negated, field or None, value)."""
    return [x for x in lex(q) if isinstance(x, tuple)]


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


def _number_range(name: str, value: str, top: int) -> tuple[int, int]:
    try:
        if value.startswith(">="):
            lo, hi = int(value[2:]), top
        elif value.startswith("<="):
            lo, hi = 0, int(value[2:])
        elif value.startswith(">"):
            lo, hi = int(value[1:]) + 1, top
        elif value.startswith("<"):
            lo, hi = 0, int(value[1:]) - 1
        elif "-" in value:
            a, b = value.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(value)
    except ValueError:
        raise SearchError(f"{name}:{value}: expected a number, a range a-b or >n/<n") from None
    if not (0 <= lo <= top and 0 <= hi <= top and lo <= hi) and not (lo > hi and value[0] in "<>"):
        raise SearchError(f"{name}:{value}: out of range 0..{top}")
    return lo, hi


def _ranges(name: str, value: str, column: str, top: int) -> tuple[str, list[object]]:
    ranges = [_number_range(name, v, top) for v in value.split(",")]
    return "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in ranges) + ")", [v for r in ranges for v in r]


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
    """Substring, or a whole-value match when the value has `*` / `?` wildcards."""
    if "*" in value or "?" in value:
        return f"lower({column}) GLOB ?", [value.lower().replace("[", "[[]")]
    return f"instr(lower({column}), ?) > 0", [value.lower()]


def _in(column: str, values: list[object]) -> tuple[str, list[object]]:
    return f"{column} IN ({','.join('?' * len(values))})", values


def _forms(name: str | None, value: str) -> Forms:
    """The SQL of one term at each level it can be written at."""
    if not value:
        raise SearchError(f"{name}: needs a value")
    if name == "src":
        one, p1 = _address(name, value, "t.src_key", "t.src_ip")
        many, p2 = _address(name, value, "fs.src_key", "fs.src_ip")  # any source of a flood threat
        return {"threat": (f"({one} OR (t.sources IS NOT NULL AND EXISTS (SELECT 1 FROM threat_sources fs "
                           f"WHERE fs.threat = t.id AND {many})))", p1 + p2),
                "event": _address(name, value, "e.src_key", "e.src_ip")}
    if name == "dst":
        return {"event": _address(name, value, "e.dst_key", "e.dst_ip")}
    if name == "ip":
        a, pa = _address(name, value, "e.src_key", "e.src_ip")
        b, pb = _address(name, value, "e.dst_key", "e.dst_ip")
        return {"event": (f"({a} OR {b})", pa + pb)}
    if name == "port":
        return {"event": _ranges(name, value, "e.dport", 65535)}
    if name == "count":
        return {"threat": _ranges(name, value, "g.cnt", 1 << 62)}
    if name == "trail":
        sql, params = _text("t.trail", value)
        values_sql, values_params = _text("v.value", value)
        return {"threat": (f"({sql} OR {TRAIL_VALUES.format(test=values_sql)})", params + values_params),
                "event": _text("e.trail", value)}
    if name == "sev":
        levels = _choices(name, value, dict(LEVELS))
        return {"threat": _in("g.sev", levels), "event": _in("e.sev", levels)}
    if name == "tag":  # a whole tag, or a pattern with wildcards
        tags = "(',' || lower(COALESCE(tr.tags, '')) || ',')"
        if "*" in value or "?" in value:
            return {"threat": (f"{tags} GLOB ?", [f"*,{value.lower().replace('[', '[[]')},*"])}
        return {"threat": (f"instr({tags}, ?) > 0", [f",{value.lower()},"])}
    if name == "status":
        states = _choices(name, value.replace("-", "_"), {s: s for s in STATUSES})
        return {"threat": _in("COALESCE(tr.status, 'new')", states)}
    if name in ("proto", "type"):
        values = [v for v in value.lower().split(",") if v]
        column = "type" if name == "type" else EVENT_TEXT[name]
        sql = "(" + " OR ".join(f"lower({column}) = ?" for _ in values) + ")"
        return {"row" if name == "type" else "event": (sql, list(values))}
    if name is not None:
        return {"event": _text(EVENT_TEXT[name], value)}
    parts = [_text(c, value) for c in BARE_COLUMNS]
    return {"event": ("(" + " OR ".join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]])}


def _negate(forms: Forms) -> Forms:
    return {level: (f"NOT COALESCE({sql}, 0)", params) for level, (sql, params) in forms.items()}


def _usable(forms: Forms) -> set[str]:
    """Levels a term can be written at (a row form also serves events)."""
    levels = set(forms)
    return levels | {"event"} if "row" in levels else levels


def _at(forms: Forms, level: str) -> tuple[str, list[object]]:
    return forms[level] if level in forms else forms["row"]


def _combine(op: str, items: list[Forms], text: str) -> Forms:
    """AND/OR of compiled items, at every level all of them can be written at."""
    common = set.intersection(*(_usable(f) for f in items))
    if not common:
        raise SearchError(f"{text}: {op} between threat fields (status, tag, count) and event fields "
                          "(dst, ip, port, proto, info, sensor, ref, words) is not supported; search them apart")
    out: Forms = {}
    for level in common:
        parts = [_at(f, level) for f in items]
        out[level] = ("(" + f" {op} ".join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]])
    return out


class _Parser:
    def __init__(self, items: list[Term | str], q: str) -> None:
        self.items, self.pos, self.q = items, 0, q
        self.include_suppressed = False

    def peek(self) -> Term | str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def top(self) -> list[Forms]:
        """The top level: AND of alternatives, kept apart so each level can be answered alone."""
        out = []
        while self.peek() is not None:
            if self.peek() == ")":
                raise SearchError("unbalanced parenthesis ')'")
            out.append(self.alternatives(0))
            if self.peek() == "AND":
                self.pos += 1
        return [f for f in out if f]

    def alternatives(self, depth: int) -> Forms:
        first = self.conjunction(depth)
        options = [first]
        while self.peek() == "OR":
            self.pos += 1
            if self.peek() in (None, ")", "OR", "AND"):
                raise SearchError("OR: needs a term on both sides")
            options.append(self.conjunction(depth))
        if len(options) == 1:
            return first
        if any(not o for o in options):
            raise SearchError("suppressed: cannot be part of an OR")
        return _combine("OR", options, self.q)

    def conjunction(self, depth: int) -> Forms:
        parts = [self.unary(depth)]
        while self.peek() not in (None, ")", "OR") and depth > 0:
            if self.peek() == "AND":
                self.pos += 1
            parts.append(self.unary(depth))
        parts = [p for p in parts if p]
        if len(parts) <= 1:
            return parts[0] if parts else {}
        return _combine("AND", parts, self.q)

    def unary(self, depth: int) -> Forms:
        item = self.peek()
        if item in ("AND", "OR", None):
            raise SearchError(f"{item or 'end of query'}: expected a term")
        self.pos += 1
        if item == "NOT":
            inner = self.unary(depth)
            if not inner:
                raise SearchError("suppressed: cannot be negated")
            return _negate(inner)
        if item == "(":
            if depth >= MAX_DEPTH:
                raise SearchError(f"more than {MAX_DEPTH} nested parentheses")
            inner = self.alternatives(depth + 1)
            if self.peek() != ")":
                raise SearchError("unbalanced parenthesis '('")
            self.pos += 1
            if not inner:
                raise SearchError("empty parentheses")
            return inner
        if item == ")":
            raise SearchError("unbalanced parenthesis ')'")
        negated, name, value = item  # type: ignore[misc]
        if name == "suppressed":
            if negated or value.lower() not in ("yes", "no") or depth > 0:
                raise SearchError(f"suppressed:{value}: expected yes or no, outside parentheses")
            self.include_suppressed = value.lower() == "yes"
            return {}
        forms = _forms(name, value)
        return _negate(forms) if negated else forms


def compile_query(q: str) -> Query:
    """Raises SearchError (message names the bad token)."""
    parser = _Parser(lex(q or ""), q or "")
    query = Query()
    for forms in parser.top():
        level = next(lv for lv in LEVEL_ORDER if lv in forms)
        sql, params = forms[level]
        if level == "threat":
            query.threat_sql.append(sql)
            query.threat_params += params
        elif level == "row":
            query.row_sql.append(sql)
            query.row_params += params
        else:
            query.event_sql.append(sql)
            query.event_params += params
    query.include_suppressed = parser.include_suppressed
    return query
