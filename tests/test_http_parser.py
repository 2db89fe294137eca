"""`workers.protocols.http`: Maltrail's request-line and `\\r\\nName:` header rules, responses, and
fuzzing (any TCP payload containing `HTTP/` reaches these parsers, so they must never raise)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.traffic import http_request, http_response
from workers.protocols.http import (
    HEAD_CHARS,
    MAX_EXAMINED,
    HttpRequest,
    HttpResponse,
    forwarded_for,
    header,
    parse_http_request,
    parse_http_response,
)


def test_get_from_generator() -> None:
    payload = http_request("GET", "/Path/To?Q=1", host="Example.COM", user_agent="curl/8.0")
    req = parse_http_request(payload)
    assert req == HttpRequest(method="GET", path="/Path/To?Q=1", version="HTTP/1.1", host="Example.COM",
                              user_agent="curl/8.0", body="", text=payload.decode())


def test_post_body() -> None:
    req = parse_http_request(http_request("POST", "/gate.php", host="evil.com", body=b"id=1&x=\xc3\xa9"))
    assert req is not None and req.method == "POST" and req.body == "id=1&x=é"


def test_body_keeps_later_blank_lines() -> None:
    req = parse_http_request(b"POST / HTTP/1.1\r\nHost: a\r\n\r\nline1\r\n\r\nline2")
    assert req is not None and req.body == "line1\r\n\r\nline2"


def test_no_blank_line_means_empty_body() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert req is not None and req.body == "" and req.host == "a"


def test_connect() -> None:
    req = parse_http_request(http_request("CONNECT", "evil.com:443", host="evil.com:443"))
    assert req is not None and req.method == "CONNECT" and req.path == "evil.com:443"
    assert req.host == "evil.com:443"


def test_absolute_uri_proxy_request() -> None:
    req = parse_http_request(http_request("GET", "http://Evil.com:8080/x.php?a=b", host="evil.com:8080"))
    assert req is not None and req.path == "http://Evil.com:8080/x.php?a=b"


def test_missing_host() -> None:
    req = parse_http_request(http_request("GET", "/", user_agent="Mozilla/5.0"))
    assert req is not None and req.host is None and req.user_agent == "Mozilla/5.0"


def test_host_with_port_and_padding_kept() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost:   Evil.COM:80 \r\n\r\n")
    assert req is not None and req.host == "Evil.COM:80"


def test_empty_host_value() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost:\r\n\r\n")
    assert req is not None and req.host == ""


def test_host_without_terminating_crlf() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost: evil.com")
    assert req is not None and req.host is None


@pytest.mark.parametrize("line", [b"host: evil.com", b"HOST: evil.com", b"Host : evil.com", b"X-Host: evil.com"])
def test_header_name_is_case_sensitive(line: bytes) -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\n" + line + b"\r\nuser-agent: sqlmap\r\n\r\n")
    assert req is not None and req.host is None and req.user_agent is None


def test_first_matching_header_wins() -> None:
    req = parse_http_request(b"GET / HTTP/1.1\r\nHost: one\r\nHost: two\r\n\r\n")
    assert req is not None and req.host == "one"


def test_path_case_and_percent_escapes_preserved() -> None:
    req = parse_http_request(b"GET /A%20B/../C HTTP/1.0\r\n\r\n")
    assert req is not None and req.path == "/A%20B/../C" and req.version == "HTTP/1.0"


def test_http_anywhere_in_line_is_enough() -> None:
    # Maltrail tests `" HTTP/" in line`, so the path may be the HTTP token itself
    req = parse_http_request(b"GET HTTP/1.1 x\r\n\r\n")
    assert req is not None and (req.method, req.path, req.version) == ("GET", "HTTP/1.1", "x")


@pytest.mark.parametrize("payload", [
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", id="three-spaces"),
    pytest.param(b"GET  / HTTP/1.1\r\n\r\n", id="double-space"),
    pytest.param(b"GET / HTTP/1.1 \r\n\r\n", id="trailing-space"),
    pytest.param(b"GET /\tHTTP/1.1\r\n\r\n", id="tab"),
    pytest.param(b"GET / FTP/1.1\r\nX: HTTP/1.1\r\n\r\n", id="http-only-in-a-header"),
    pytest.param(b"GET / HTTP/1.1", id="no-crlf"),
    pytest.param(b"GET / HTTP/1.1\n\n", id="bare-lf"),
    pytest.param(b"GET /\r\n HTTP/1.1\r\n", id="http-on-second-line"),
    pytest.param(b" / HTTP/1.1\r\n\r\n", id="empty-method"),
    pytest.param(b"GET  HTTP/1.1\r\n\r\n", id="empty-path"),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="response"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls"),
])
def test_refused_requests(payload: bytes) -> None:
    assert parse_http_request(payload) is None


def test_non_utf8_bytes_replaced() -> None:
    req = parse_http_request(b"GET /\xff\xfe HTTP/1.1\r\nUser-Agent: a\x80b\r\n\r\n")
    assert req is not None and req.path == "/\ufffd\ufffd" and req.user_agent == "a\ufffdb"


def test_only_first_bytes_examined() -> None:
    filler = b"X-Pad: " + b"a" * MAX_EXAMINED + b"\r\n"
    req = parse_http_request(b"GET / HTTP/1.1\r\n" + filler + b"Host: late\r\n\r\n")
    assert req is not None and req.host is None and len(req.text) == MAX_EXAMINED
    assert parse_http_request(b"x" * MAX_EXAMINED + b" / HTTP/1.1\r\n") is None


def test_memoryview_input() -> None:
    req = parse_http_request(memoryview(b"junk" + http_request("GET", "/", host="a.b"))[4:])
    assert req is not None and req.host == "a.b"


def test_header_helper() -> None:
    text = "GET / HTTP/1.1\r\nContent-Type:  Text/HTML \r\nX-Forwarded-For: 1.2.3.4\r\nTail: x"
    assert header(text, "Content-Type") == "Text/HTML"
    assert header(text, "X-Forwarded-For") == "1.2.3.4"
    assert header(text, "content-type") is None
    assert header(text, "Tail") is None  # no closing CRLF
    assert header("Host: a\r\n", "Host") is None  # the name must follow a CRLF


def test_response_from_generator() -> None:
    body = b"<html><head><TITLE>Domain Seized</Title></head><body>x</body></html>"
    resp = parse_http_response(http_response(451, "Text/HTML; charset=UTF-8", body))
    assert resp is not None
    assert resp.status == 451 and resp.content_type == "text/html; charset=utf-8"
    assert resp.title == "Domain Seized" and resp.head.startswith("HTTP/1.1 451 ")


def test_response_title_needs_closing_tag() -> None:
    resp = parse_http_response(http_response(200, "text/html", b"<title>never closed" + b"x" * 100))
    assert resp is not None and resp.title is None


def test_response_empty_title_and_first_pair() -> None:
    resp = parse_http_response(http_response(200, "text/html", b"<title></title><title>second</title>"))
    assert resp is not None and resp.title == ""


def test_response_without_content_type() -> None:
    resp = parse_http_response(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n")
    assert resp == HttpResponse(status=404, content_type=None, title=None,
                                raw=b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n")
    assert resp.head == "HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n"


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_response_bytes_search_equals_decoding_first(body: bytes, title: bytes) -> None:
    """Title and content type found in the bytes equal those of the decoded text."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: " + body[:20] + b"\r\n\r\n" + body + b"<TITLE>" + title + b"</title>"
    text = raw.decode("utf-8", "replace")
    resp = parse_http_response(raw)
    start = text.find("\r\nContent-Type:") + len("\r\nContent-Type:")
    assert resp.content_type == text[start:text.find("\r\n", start)].strip().lower()
    opening = re.search("<title>", text, re.I | re.A)
    closing = re.search("</title>", text[opening.end():], re.I | re.A)
    assert resp.title == text[opening.end():opening.end() + closing.start()]
    assert resp.head == text[:HEAD_CHARS]


def test_response_head_is_first_characters() -> None:
    resp = parse_http_response(http_response(200, "application/octet-stream", "é".encode() * 3000))
    assert resp is not None and len(resp.head) == HEAD_CHARS
    assert resp.content_type == "application/octet-stream"


@pytest.mark.parametrize(("payload", "status"), [
    (b"HTTP/1.1 200 OK\r\n\r\n", 200),
    (b"HTTP/1.1 200\r\n\r\n", 200),
    (b"HTTP/2 301 Moved\r\n\r\n", 301),
    (b"HTTP/1.1 2000 OK\r\n\r\n", None),
    (b"HTTP/1.1 OK\r\n\r\n", None),
    (b"HTTP/", None),
])
def test_response_status(payload: bytes, status: int | None) -> None:
    resp = parse_http_response(payload)
    assert resp is not None and resp.status == status


@pytest.mark.parametrize("payload", [b"", b" HTTP/1.1 200 OK\r\n", b"http/1.1 200 OK\r\n",
                                     b"GET / HTTP/1.1\r\n\r\n", b"\x00\xffHTTP/1.1 200"])
def test_not_a_response(payload: bytes) -> None:
    assert parse_http_response(payload) is None


@pytest.mark.parametrize(("text", "address"), [
    ("GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n", "203.0.113.7"),
    ("GET / HTTP/1.1\r\nx-forwarded-for:203.0.113.7, 10.0.0.1\r\n\r\n", "203.0.113.7"),
    ("GET / HTTP/1.1\r\nCF-CONNECTING-IP: 198.51.100.1\r\n\r\n", "198.51.100.1"),
    ("GET / HTTP/1.1\r\nTrue-Client-IP:\t192.0.2.9\r\n\r\n", "192.0.2.9"),
    ("GET /?q=X-Forwarded-For:1.2.3.4 HTTP/1.1\r\n\r\n", "1.2.3.4"),  # anywhere in the packet
    ("GET / HTTP/1.1\r\nX-Forwarded-For: 2001:db8::1\r\n\r\n", "2001"),  # the leading digit run
    ("GET / HTTP/1.1\r\nX-Forwarded-For: unknown\r\n\r\n", None),
    ("GET / HTTP/1.1\r\nX-Forwarded-For : 1.2.3.4\r\n\r\n", None),
    ("GET / HTTP/1.1\r\nMy-X-Forwarded-For: 1.2.3.4\r\n\r\n", "1.2.3.4"),  # `-` is a word boundary
    ("GET / HTTP/1.1\r\nMyX-Forwarded-For: 1.2.3.4\r\n\r\n", None),
    ("GET / HTTP/1.1\r\nX-Forwarded-For: \u0661\u0662\r\n\r\n", None),  # ASCII digits only
])
def test_forwarded_for(text: str, address: str | None) -> None:
    assert forwarded_for(text) == address


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    for payload in (data, b"GET / HTTP/1.1\r\n" + data, b"HTTP/1.1 200 OK\r\n" + data):
        req = parse_http_request(payload)
        resp = parse_http_response(payload)
        assert req is None or isinstance(req, HttpRequest)
        assert resp is None or isinstance(resp, HttpResponse)
        address = forwarded_for(payload.decode("utf-8", "replace"))
        assert address is None or address.strip("0123456789.") == ""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([" ", "\r\n", "HTTP/", "Host:", "<title>", "</TITLE>", "a", "\ufffd", ":"]),
                max_size=40))
def test_structured_fuzz_never_raises(parts: list[str]) -> None:
    payload = "".join(parts).encode()
    parse_http_request(payload)
    parse_http_response(b"HTTP/" + payload)


def _request_as_written(payload: bytes) -> tuple | None:
    """Maltrail's request rules spelled out plainly: each header is the first `\\r\\nName:` of the
    whole text, ending at the next `\\r\\n`; the body follows the first blank line."""
    text = payload[:MAX_EXAMINED].decode("utf-8", "replace")
    line = text.split("\r\n", 1)[0] if "\r\n" in text else None
    if line is None or len(line.split(" ")) != 3 or " HTTP/" not in line:
        return None
    method, path, version = line.split(" ")
    if not method or not path:
        return None
    values = []
    for name in ("Host", "User-Agent"):
        rest = text.split(f"\r\n{name}:", 1)[1] if f"\r\n{name}:" in text else None
        values.append(rest.split("\r\n", 1)[0].strip() if rest is not None and "\r\n" in rest else None)
    body = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else ""
    return method, path, *values, body, version, text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["\r\n", "\r\nHost:", "\r\nUser-Agent:", " h ", "\r\n\r\n", "x", " ", "\r", "\n",
                                 ":", "\ufffd"]), max_size=14))
def test_request_fields_follow_the_rules_as_written(parts: list[str]) -> None:
    """Whatever the layout after the request line (the usual Host then User-Agent is read without
    searching), the fields are those of the rules as written."""
    for head in ("GET /a HTTP/1.1", "GET /a HTTP/1.1\r\nHost: h", "GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u"):
        payload = (head + "".join(parts)).encode()
        req = parse_http_request(payload)
        expected = _request_as_written(payload)
        assert (None if req is None else (req.method, req.path, req.host, req.user_agent, req.body, req.version,
                                          req.text)) == expected
