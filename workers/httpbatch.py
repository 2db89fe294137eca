"""New HTTP requests of a batch settled in bulk: the ones whose checks certainly report nothing.

Nearly every request on a real link is new, and nearly every new request reports nothing but its
web-scan observation, yet Maltrail's checks (spec 2.6, `PayloadInspector._request_plan`) cost
some forty Python calls each. Here the checks that could report are asked for a whole batch at
once: the User-Agent and URL keys hashed in one pass and tested against the index in numpy, the
attack categories and the User-Agent list in one Hyperscan scan each, the Host names in one
`check_many`. A request is settled only when none of them can report; any doubt sends it to the
per-request checks, which stay the judge, so what is reported never changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import cast
from urllib.parse import unquote

import numpy as np

from engine.index.mapped import TrailIndex
from engine.index.schema import UA_PREFIX
from workers.domains import DomainChecker
from workers.heuristics import http_rules
from workers.settings import DetectionSettings

# A lowercase Host the bulk path takes: it starts with a letter (no address, no IoT-download
# test), and has none of the characters that make urlparse move part of it into the path.
_PLAIN_HOSTS = re.compile(r"^(?:[a-z][a-z0-9._-]*(?::[0-9]*)?$)?", re.MULTILINE)  # a plain line, else ""
# Every line plain (the usual batch), in one match that walks the text once: `_PLAIN_HOSTS` tries
# its `^` at every character.
_ALL_PLAIN = re.compile(r"(?:[a-z][a-z0-9._-]*(?::[0-9]*)?\n)*")
_VALUES = re.compile("=[^&]*")  # a parameter's value, with its `=`
# The same in text of one path a line: `[^&\n]` spelled as ranges, which `re` tests as one set where it walks
# a negated list of literals per character (a tenth less to cut a batch's values).
_LINE_VALUES = re.compile("=[\x00-\t\x0b-%'-\U0010ffff]*")
_SECOND = itemgetter(1)

# What settling reads of a request without a body to an unlisted address: method, path as sent,
# Host, User-Agent.
Request = tuple[str, str, str | None, str | None]


def url_keys(host: str, path: str, post: str) -> list[str]:
    """Maltrail's URL keys of a request in order: each candidate bare, then with the host; then
    `host/`. `path` is lowercase, with `//` folded to `/`."""
    keys = [key for cand in url_candidates(path, post) for key in (cand, host + cand)]
    keys.append(host + "/")
    return keys


def url_candidates(path: str, post: str, cut: str | None = None) -> list[str]:
    """Maltrail's candidate keys for a request path (spec 2.6 step 6), in order, without blanks.
    `cut`: the path with every value after an `=` cut (`_VALUES`), when the caller made it for
    many paths in one substitution (a call per path costs more than the rest of the candidates)."""
    first = path.rstrip("/")
    q = path.find("?")
    eq = path.find("=")
    checks = [first, path[:q].rstrip("/")] if q >= 0 else [first]
    if eq >= 0:
        checks.append(path[: eq + 1])
        if 0 <= q < eq:  # `without_values`
            reduced = _VALUES.sub("=", path) if cut is None else cut
        else:
            reduced = _cut_pieces(path)
        if reduced not in checks:
            checks.append(reduced)
            slash = reduced.rfind("/")
            if reduced.find("/") < slash:  # two slashes or more: the piece cut off holds one, the last step is void
                checks.append(reduced[slash:])
                return [x for x in checks if x] if "" in checks else checks
    elif post:
        checks.append(f"{path}?{unquote(post).lower()}")
    last = checks[-1]
    if last.count("/") > 1:
        checks.append(last[: last.rfind("/")])
        name = path[:q] if q >= 0 else first  # the first candidate up to its `?`: `?` is never stripped
        checks.append(name[name.rfind("/") + 1 :])
    return [x for x in checks if x] if "" in checks else checks


def candidates_many(text: str, lines: list[str] | None = None) -> list[Sequence[str]]:
    """`url_candidates` of each line of `text` (lowercase paths that start with `/`, without a
    body), their values cut for all lines at once, and the two usual shapes spelled out here with
    the tests that make `url_candidates` take them (a call per path cost more than everything else
    its candidates need): a query whose first `=` follows its `?` (to a path with two slashes or
    more once its values are cut), and a path without `?` or `=`; the others call it. `lines`:
    `text` split at its line feeds, when the caller has it."""
    return [(path, path[:q], path[: eq + 1], cut, cut[slash:])
            if 0 < (q := path.find("?")) < (eq := path.find("=")) and path[q - 1] != "/" and path[-1] != "/"
            and len(cut) > eq + 1 and cut != path and (slash := cut.rfind("/")) > 0
            else ((path, path[:slash], path[slash + 1 :]) if (slash := path.rfind("/")) > 0 else (path,))
            if q < 0 and "=" not in path and path[-1] != "/"
            else url_candidates(path, "", cut)
            for path, cut in zip(text.split("\n") if lines is None else lines, _LINE_VALUES.sub("=", text).split("\n"),
                                 strict=True)]


def without_values(path: str) -> str:
    """Every `name=value` that follows a `?` or `&` cut to `name=`: Maltrail's
    `re.sub(r"(?<=[?&])([^=&]*)=[^&]*", r"\\1=", path)` (its template substitution cost several
    microseconds a request). When every `=` follows the first `?` (the usual query), nothing before
    it is cut, and each piece between `&` after it loses what follows its first `=`: one
    substitution with a literal replacement, half the cost of cutting the pieces one by one."""
    q, eq = path.find("?"), path.find("=")
    if eq < 0:
        return path
    return _VALUES.sub("=", path) if 0 <= q < eq else _cut_pieces(path)


def _cut_pieces(path: str) -> str:
    """`without_values` piece by piece: pieces between `&` are independent; in the first,
    parameters start after its first `?`."""
    pieces = path.split("&")
    first = pieces[0]
    q = first.find("?")
    if q >= 0:
        eq = first.find("=", q)
        if eq >= 0:
            pieces[0] = first[: eq + 1]
    for i in range(1, len(pieces)):
        eq = pieces[i].find("=")
        if eq >= 0:
            pieces[i] = pieces[i][: eq + 1]
    return "&".join(pieces)


def settle(index: TrailIndex, settings: DetectionSettings, domains: DomainChecker,
           requests: list[Request]) -> list[tuple[str] | None]:
    """Per request without a body to an unlisted address: the detail of its web observation
    (`web_details` of the path as the checks spell it: lowercase) when its checks
    certainly report nothing but that observation of a path that starts with `/`; None when the
    per-request checks must run. (Host and User-Agent are stripped by the parser already: a Host
    with spaces is not plain, so not settled.) Hosts and paths are spelled a batch at a time, joined by line feeds."""
    out: list[tuple[str] | None] = [None] * len(requests)
    picks, hosts_sent, sent, path_text = _picked(requests, settings)
    if not picks:
        return out
    host_text = ("\n".join(hosts_sent).lower() + "\n").replace(":80\n", "\n")
    hosts = (host_text[:-1].split("\n") if _ALL_PLAIN.fullmatch(host_text)
             else _PLAIN_HOSTS.findall(host_text[:-1]))  # "": not plain
    if not all(hosts):
        kept = [n for n, host in enumerate(hosts) if host]
        picks, hosts, sent = [picks[n] for n in kept], [hosts[n] for n in kept], [sent[n] for n in kept]
        if not picks:
            return out
        path_text = "\n".join([requests[i][1] for i in picks])
    path_text = path_text.lower()
    paths = path_text.split("\n")
    folded = path_text.replace("//", "/")  # the text itself when it has no `//` (the usual case)
    cands = candidates_many(folded, paths if folded is path_text else None)
    keys = list(chain.from_iterable(cands))  # `url_keys` of each pick, in another order: see `_host_keys`
    host_owners = _host_keys(index, hosts, cands, keys)
    at: Sequence[int] = range(len(sent))  # position of each User-Agent among the picks
    agents = cast("list[str]", sent)  # when every request has one (the usual case)
    if None in sent or "" in sent:
        at = [n for n, agent in enumerate(sent) if agent]
        agents = [agent for agent in sent if agent]
    keys += [UA_PREFIX + agent.lower() for agent in agents]
    maybe = index.strings_maybe(index.hash_keys(keys)).nonzero()[0]
    quiet = np.ones(len(picks), bool)
    if maybe.size:  # rare: which requests those keys belong to
        owners = np.concatenate((np.arange(len(picks)).repeat([len(found) for found in cands]),
                                 np.array(host_owners, np.int64), np.array(at, np.int64)))
        quiet[owners[maybe]] = False
    if settings.use_heuristics:
        quiet &= http_rules.paths_unremarkable(paths, path_text)
        flat = "".join(agents)
        if "%" in flat:
            agents = [unquote(agent).strip() if "%" in agent else agent for agent in agents]
        joined = "\n".join(agents) if "%" not in flat and "\n" not in flat else None  # the usual: one line each
        unsuspicious = http_rules.user_agents_unsuspicious(agents, joined)
        if not all(unsuspicious):
            quiet[[n for n, fine in zip(at, unsuspicious, strict=True) if not fine]] = False
    if settings.check_host_domains:
        names = [host.split(":", 1)[0] for host in hosts] if ":" in "".join(hosts) else hosts
        hits = domains.hits_many(names)
        if hits:
            quiet[list(hits)] = False
    if len(picks) == len(requests) and quiet.all():  # the usual batch: every request settled
        return web_details(paths)
    details = web_details(paths)
    for n in quiet.nonzero()[0].tolist():
        out[picks[n]] = details[n]
    return out


def _picked(requests: list[Request], settings: DetectionSettings
            ) -> tuple[Sequence[int], Sequence[str], Sequence[str | None], str]:
    """The requests settling may take (with a Host, an ASCII path that starts with `/`, neither
    holding a line feed, and with the heuristics off no absolute URI or CONNECT), their Hosts and
    User-Agents, and their paths joined by line feeds. The usual batch, where every request is
    taken, is recognised from the texts joined: one search for a line feed in each (counting them
    cost ten times as much), then each line after the first starts a path."""
    if settings.use_heuristics and requests:
        _, paths, hosts, agents = zip(*requests, strict=True)
        if None not in hosts and "\n" not in "".join(paths) and "\n" not in "".join(cast("tuple[str]", hosts)):
            path_text = "\n".join(paths)
            if path_text[:1] == "/" and path_text.isascii() and path_text.count("\n/") == len(requests) - 1:
                return range(len(requests)), cast("tuple[str]", hosts), agents, path_text
    picks = [i for i, (method, path, host, _) in enumerate(requests)
             if host is not None and path[:1] == "/" and path.isascii() and "\n" not in path + host
             and (settings.use_heuristics or _proper(method, path))]
    return (picks, [cast(str, requests[i][2]) for i in picks], [requests[i][3] for i in picks],
            "\n".join([requests[i][1] for i in picks]))


def _proper(method: str, path: str) -> bool:
    """Not an absolute URI or a CONNECT target, whose checks without heuristics look up another host."""
    return "://" not in path and method != "CONNECT"


def _host_keys(index: TrailIndex, hosts: list[str], cands: list[list[str]], keys: list[str]) -> list[int]:
    """The picks' `host + candidate` keys and `host/`, appended to `keys`, for hosts that may begin
    a URL trail; for the others only the file name's, which makes a key that is no URL: it is the
    one candidate without the path's leading `/`, and last when present. Returns each key's pick."""
    owners: list[int] = []
    for n in index.url_hosts_maybe(hosts).nonzero()[0].tolist():  # few hosts begin a URL trail
        keys += [hosts[n] + cand for cand in cands[n]]
        keys.append(hosts[n] + "/")
        owners += [n] * (len(cands[n]) + 1)
    begin = set(owners)
    named = [n for n, found in enumerate(cands) if found and found[-1][0] != "/" and n not in begin]
    keys += [hosts[n] + cands[n][-1] for n in named]
    return owners + named


def web_details(paths: list[str]) -> list[tuple[str]]:
    """The web-scan observation's detail of each request whose (lowercase) path starts with `/`:
    its first path segment, all the aggregator keeps (`Heuristics.web_request`). The pieces are
    cut in `map`s (C loops), the `?` only when a piece holds one."""
    pieces = list(map(_SECOND, map(str.split, paths, repeat("/"), repeat(2))))
    if "?" in "".join(pieces):
        pieces = [piece.split("?", 1)[0] for piece in pieces]
    return list(zip(pieces))
