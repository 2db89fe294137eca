"""The bulk settling of new HTTP requests (`workers.httpbatch`): a batch inspected with it gives
exactly the items of the per-request checks alone, whatever the requests hold (listed hosts, URL
and User-Agent trails, attack patterns, downloads, odd Hosts and paths) and whatever the settings;
and a plain request is settled, not left to the per-request checks."""

from __future__ import annotations

import re
from urllib.parse import unquote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from workers import httpbatch
from workers.batch import parse_batch
from workers.heuristics import http_rules
from workers.httpbatch import url_candidates, url_keys
from workers.payload import DetectionSettings, PayloadInspector
from workers.protocols.http import request_fields

TRAILS = """\
evil-host.example,malware (test),(static)
evil-url.example/bad/path,malware (test),(static)
/malicious-login.php,malware (test),(static)
/shop/cart.php?item=,malware (test),(static)
shop.example/shop/basket.php,malware (test),(static)
plain.examplelogin.php,malware (test),(static)
203.0.113.44,malware (test),(static)
ua:evilbot/6.6,malware agent (test),(static)
"""
PATH_PIECES = ["/", "/", "shop", "cart.php", "?", "item=", "1", "&", "x=", "..", "%2e%2e/", "//", "bad/path",
               "malicious-login.php", "setup.exe", "login.php", "basket.php", "A.EXE", "inexistent", "union+select+1",
               "%3cscript%3e", "\t", "%0a", ";p", "#f", "dl.ex", "e", "http://evil-host.example/", "ads", "\u00e9",
               "%c3%a9", "=", "etc/passwd", "x" * 30]
HOSTS = ["plain.example", "shop.example", "www.evil-host.example", "evil-url.example", "evil-host.example",
         "EVIL-URL.example:80", "plain.example:8080", "1.2.3.4", "203.0.113.44", "a/b.exe?", "x@evil-host.example",
         " spaced.example ", "\u00e9x.example", None]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0", "EvilBot/6.6", "masscan/1.0", "sqlmap/1.7", "curl/8.4.0",
          "Microsoft-CryptoAPI/10.0", "%0aagent", "", None]
SERVERS = ["198.51.100.7", "203.0.113.44", "10.1.1.1"]
ODD_PATHS = ["/dl.ex\te", "/a.e\nxe", "/index.html", "/inexistent.x", "/a.b;c.exe", "/%c3%a9/a.exe",
             "/x%20y/dl.exe?q=%27"]
REQUEST = st.tuples(st.sampled_from(["GET", "GET", "HEAD", "CONNECT"]),
                    st.lists(st.sampled_from(PATH_PIECES), min_size=1, max_size=8).map("".join)
                    .map(lambda path: path if path.startswith(("x", "h")) else "/" + path)  # mostly origin form
                    | st.sampled_from(ODD_PATHS),
                    st.sampled_from(HOSTS[:3] * 4 + HOSTS), st.sampled_from(AGENTS), st.sampled_from(SERVERS))


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> TrailIndex:
    d = tmp_path_factory.mktemp("httpbatch")
    (d / "trails.csv").write_text(TRAILS)
    build_index_file([str(d / "trails.csv")], d / "t.mtidx")
    return TrailIndex(d / "t.mtidx")


def _frames(requests: list[tuple[str, str, str | None, str | None, str]]) -> list[bytes]:
    frames = []
    for n, (method, path, host, agent, server) in enumerate(requests):
        payload = t.http_request(method, path, host=host, user_agent=agent)
        frames.append(t.ethernet(t.tcp4(f"10.0.{n >> 8}.{n & 0xFF or 1}", server, 40000 + n, 80, t.PSH | t.ACK,
                                        payload)))
    return frames


def _items(index: TrailIndex, frames: list[bytes], detection: DetectionSettings) -> list:
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)
    inspector = PayloadInspector(index, detection)
    return inspector.inspect(p, data, inspector.rows(p))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(REQUEST, min_size=1, max_size=16), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_bulk_settling_reports_what_the_per_request_checks_do(
        index: TrailIndex, requests: list, heuristics: bool, host_domains: bool, web: bool, old_index: bool) -> None:
    detection = DetectionSettings(use_heuristics=heuristics, check_host_domains=host_domains, web_scanning=web,
                                  check_missing_host=True)
    frames = _frames(requests) * 3  # a request's first sighting, its plan's recording, its replay
    with pytest.MonkeyPatch.context() as patch:
        if old_index:  # built before the URL-host table
            patch.setattr(index, "_url_hosts", None)
        bulk = _items(index, frames, detection)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpbatch, "settle", lambda *args: [None] * len(args[3]))
        assert bulk == _items(index, frames, detection)


@pytest.mark.parametrize("heuristics", [True, False])
def test_every_odd_path_with_every_host_reports_what_the_per_request_checks_do(index: TrailIndex,
                                                                               heuristics: bool) -> None:
    detection = DetectionSettings(use_heuristics=heuristics, check_host_domains=True)
    frames = _frames([("GET", path, host, agent, server) for path in ODD_PATHS + PATH_PIECES for host in HOSTS
                      for agent in AGENTS[:3] for server in SERVERS])
    bulk = _items(index, frames, detection)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpbatch, "settle", lambda *args: [None] * len(args[3]))
        assert bulk == _items(index, frames, detection)


def test_only_hosts_that_begin_a_url_trail_have_their_url_keys_hashed(index: TrailIndex) -> None:
    hosts = ["evil-url.example", "shop.example", "plain.example", "evil-host.example", "", "bad"]
    assert index.url_hosts_maybe(hosts).tolist() == [True, True, False, False, False, False]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index, "_url_hosts", None)
        assert index.url_hosts_maybe(hosts).all()


def test_plain_requests_are_settled_and_doubtful_ones_are_not(index: TrailIndex) -> None:
    detection = DetectionSettings()
    texts = [t.http_request("GET", path, host=host, user_agent=agent) for path, host, agent in [
        ("/news/item.html?id=7&ref=x", "Plain.Example:80", "Mozilla/5.0 (X11) Firefox/121.0"),  # settled
        ("/shop/cart.php?item=5", "plain.example", None),  # a URL trail
        ("/index.html", "plain.example", "EvilBot/6.6"),  # a User-Agent trail
        ("/index.html", "plain.example", "masscan/1.0"),  # a suspicious User-Agent
        ("/q?id=1+union+select+2", "plain.example", None),  # an attack pattern
        ("/files/a.exe", "plain.example", None),  # a direct download
        ("/index.html", "1.2.3.4", None),  # an address for Host
        ("http://plain.example/", "plain.example", None),  # an absolute URI
        ("/dl.ex\te", "plain.example", None),  # urlparse drops the tab: a download
        ("/index.html", "a/b.exe?", None),  # urlparse takes the file name from the Host
        ("/shop/basket.php", "Shop.Example", None),  # a URL trail of a URL-trail host
        ("/a/login.php", "plain.example", None),  # the file name after the Host: a trail of its own
        ("/%c3%a9/a.exe", "plain.example", None),  # a download whose path decodes to another text
    ]]
    requests = [request_fields(text)[0] for text in texts]
    settled = httpbatch.settle(index, detection, PayloadInspector(index, detection).domains, requests)
    assert settled == [("news",)] + [None] * (len(requests) - 1)


def _candidates_as_written(path: str, post: str) -> list[str]:
    """Spec 2.6 step 6 transcribed step by step, for comparison."""
    checks = [path.rstrip("/")]
    if "?" in path:
        checks.append(path.split("?", 1)[0].rstrip("/"))
    if "=" in path:
        checks.append(path[: path.index("=") + 1])
        reduced = re.sub(r"(?<=[?&])([^=&]*)=[^&]*", r"\1=", path)
        if reduced not in checks:
            checks.append(reduced)
            if reduced.count("/") > 1:
                checks.append("/" + reduced.split("/")[-1])
    elif post:
        checks.append(f"{path}?{unquote(post).lower()}")
    if checks[-1].count("/") > 1:
        checks.append(checks[-1][: checks[-1].rfind("/")])
        checks.append(checks[0].split("?")[0].split("/")[-1])
    return [x for x in checks if x]


@settings(max_examples=500)
@given(st.text(alphabet="ab?&=/.%", max_size=24) | st.lists(st.sampled_from(PATH_PIECES), max_size=10).map("".join),
       st.sampled_from(["", "a=1", "x", "%41=b"]))
def test_url_candidates_follow_the_spec(path: str, post: str) -> None:
    assert url_candidates(path, post) == _candidates_as_written(path, post)


@settings(max_examples=500)
@given(st.lists(st.text(alphabet="ab?&=/.%\t", max_size=16) | st.lists(st.sampled_from(PATH_PIECES), max_size=10)
                .map("".join), min_size=1, max_size=6)
       .map(lambda paths: ["/" + path.replace("\n", "").lower() for path in paths]))
def test_candidates_of_paths_cut_together_are_those_of_each_alone(paths: list[str]) -> None:
    """`settle` spells out the usual shapes of a batch's paths with their pieces cut for all
    lines at once: the candidates are those of each path alone, in order."""
    assert [list(found) for found in httpbatch.candidates_many("\n".join(paths))] == [
        url_candidates(path, "") for path in paths]


def test_values_of_a_line_end_at_an_ampersand_or_a_line_feed_only() -> None:
    """The batch's value cut spells `[^&\\n]` as ranges: the same characters, every one of them."""
    text = "=" + "=".join(map(chr, range(0x110000)))
    assert httpbatch._LINE_VALUES.findall(text) == re.findall("=[^&\n]*", text)


@pytest.mark.parametrize("path", ["/a/b/c.html?id=1&ref=2&u=x", "/a/b.png", "/favicon.ico", "/a/b?id=1", "/a/?x=1",
                                  "/a?x=1&y=2", "/a/b?x", "/a/b/", "/a/b?x=1/", "/?x=1", "/a=b?c=d", "/a/b?x=&y=",
                                  "/a/b?x=1&y/"])
def test_candidates_of_the_usual_shapes(path: str) -> None:
    assert list(httpbatch.candidates_many(path)[0]) == url_candidates(path, "")


@given(st.lists(st.sampled_from(PATH_PIECES), max_size=10).map("".join), st.sampled_from(["", "a=1", "x"]))
def test_url_keys_are_each_candidate_bare_then_with_the_host(path: str, post: str) -> None:
    keys = url_keys("h.example", path, post)
    candidates = url_candidates(path, post)
    assert keys[:-1:2] == candidates and keys[1::2] == ["h.example" + c for c in candidates]
    assert keys[-1] == "h.example/" and all(keys)


def test_a_batch_of_new_requests_is_settled_in_one_pass(index: TrailIndex) -> None:
    requests = [(f"/p{n}/page.html?id={n}", f"site{n}.example", f"Mozilla/5.0 Firefox/{n}") for n in range(200)]
    frames = _frames([("GET", path, host, agent, SERVERS[0]) for path, host, agent in requests])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PayloadInspector, "_request_plan", None)  # the per-request checks are not called
        items = _items(index, frames, DetectionSettings())
    assert [kind for _, kind, _ in items] == ["web"] * len(requests)
    assert np.array_equal([row for row, _, _ in items], np.arange(len(requests)))


def test_items_of_a_batch_come_in_row_order_whatever_path_made_them(index: TrailIndex) -> None:
    """Requests are parsed before the other rows and lone ones checked after them: the items are
    still those of each row inspected alone, in row order."""
    response = t.http_response(200, "application/x-sh", b"#!/bin/sh\n")
    pipelined = t.http_request("POST", "/a", host="plain.example", body=b"x") + t.http_request(
        "GET", "/setup.exe", host="plain.example")
    payloads = [response, pipelined, t.http_request("GET", "/b.exe", host="plain.example"), response]
    frames = [t.ethernet(t.tcp4("10.0.0.9", SERVERS[0], 40000 + n, 80, t.PSH | t.ACK, payload))
              for n, payload in enumerate(payloads)]
    for batch in (frames, frames[:2]):  # with and without a lone request
        meta, data = t.frames_batch(batch)
        p = parse_batch(meta, data, 1)
        items = PayloadInspector(index, DetectionSettings()).inspect(p, data, np.arange(len(batch)))
        alone = [item for row in range(len(batch))
                 for item in PayloadInspector(index, DetectionSettings()).inspect(p, data, np.array([row]))]
        assert items == alone
        assert {row for row, kind, _ in items if kind == "event"} == set(range(len(batch)))


PATH_TEXT = st.lists(st.sampled_from([*"/abx.?=&;#'<>()*: +\t\r\n", "union", "select", "<script", "exe", "lnk", "..",
                                      "inexistent", "php://input", "etc/passwd", "%20", "%27", "%3c", "%2e", "%0a",
                                      "%c3%a9", "%41", "%", "${jndi:ldap://h/a}", "a@b.cc&"]), max_size=14).map(
    lambda pieces: "/" + "".join(pieces))


@settings(max_examples=400, deadline=None)
@given(st.lists(PATH_TEXT, min_size=1, max_size=8), st.booleans())
def test_unremarkable_paths_are_reported_by_no_path_rule(paths: list[str], private: bool) -> None:
    """What `paths_unremarkable` passes (lowercase ASCII paths of a plain Host, many per scan) no
    attack category, download or canary rule reports."""
    for path, quiet in zip(paths, http_rules.paths_unremarkable(paths), strict=True):
        if quiet:
            assert http_rules.suspicious_request(path, None, private) is None, path
            assert http_rules.direct_download("plain.example", path, private) is None, path
            assert http_rules.suspicious_path(path) is None, path
    assert http_rules.paths_unremarkable(["/news/a.html?id=1", "/x/setup.exe", "/?q=1+union+select+2", "/%41/a.exe",
                                          "/dl.ex\te", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd"]) == [
        True, False, False, False, False, False]


@settings(max_examples=300, deadline=None)
@given(st.lists(PATH_TEXT.map(lambda path: path.replace("\n", "")), min_size=1, max_size=8))
def test_paths_joined_by_the_caller_answer_as_the_list(paths: list[str]) -> None:
    """`settle` hands `paths_unremarkable` its paths' joined text (one line each): the answers
    are those of the list alone, decoded paths included."""
    assert http_rules.paths_unremarkable(paths, "\n".join(paths)) == http_rules.paths_unremarkable(paths)


AGENT_TEXT = st.lists(st.sampled_from(["Mozilla/5.0 ", "(X11; Linux)", "masscan", "sqlmap", "nikto", "curl/", "agent",
                                       "python-requests/2", "ab", "x", " ", "/", "1.0", "\x1c", "\u00e9", "Sophos",
                                       "\u212a", "\n"]), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(AGENT_TEXT, min_size=1, max_size=8))
def test_unsuspicious_user_agents_match_no_listed_agent(agents: list[str]) -> None:
    """What `user_agents_unsuspicious` passes (many per scan, `\\A`/`\\Z` patterns as line
    anchors) `suspicious_user_agent` reports nothing for."""
    for agent, fine in zip(agents, http_rules.user_agents_unsuspicious(agents), strict=True):
        if fine:
            assert http_rules.suspicious_user_agent(agent) is None, agent
    assert http_rules.user_agents_unsuspicious(["Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0", "masscan/1.0",
                                                "ab", "agent"]) == [True, False, False, False]


@settings(max_examples=300, deadline=None)
@given(st.lists(AGENT_TEXT.map(lambda agent: agent.replace("\n", "")), min_size=1, max_size=8))
def test_user_agents_joined_by_the_caller_answer_as_the_list(agents: list[str]) -> None:
    assert http_rules.user_agents_unsuspicious(agents, "\n".join(agents)) == http_rules.user_agents_unsuspicious(agents)


@pytest.mark.parametrize("paths", [["/a\n/b", "c"], ["c", "/a\n/b"], ["/a\nb", "/c"], ["/a", "b"]])
def test_only_paths_that_start_with_a_slash_are_settled(index: TrailIndex, paths: list[str]) -> None:
    """A batch's paths are recognised as all taken from their joined text: line feeds inside a
    path must not make one that does not start with `/` look as if it did."""
    inspector = PayloadInspector(index, DetectionSettings())
    requests = [("GET", path, "plain.example", None) for path in paths]
    settled = httpbatch.settle(index, inspector.settings, inspector.domains, requests)
    assert [detail is not None for detail in settled] == [path[0] == "/" and "\n" not in path for path in paths]


@pytest.mark.parametrize("hosts", [["plain.example\nx", "plain.example"], ["plain.example", "a\nplain.example"],
                                   ["plain.example", "plain.example"]])
def test_hosts_with_line_feeds_are_not_settled(index: TrailIndex, hosts: list[str]) -> None:
    """A batch's Hosts are read from their joined text: a line feed inside one must neither shift
    the others nor let it be settled."""
    inspector = PayloadInspector(index, DetectionSettings())
    requests = [("GET", f"/page{n}.html", host, None) for n, host in enumerate(hosts)]
    settled = httpbatch.settle(index, inspector.settings, inspector.domains, requests)
    assert settled == [None if "\n" in host else (f"page{n}.html",) for n, host in enumerate(hosts)]
