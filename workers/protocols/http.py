"""HTTP/1.x request and response parsing with Maltrail's exact, deliberately naive rules.

Pure functions from one TCP payload to a small record (no reassembly, no I/O), in the style of
h11; they never raise and examine only the first `MAX_EXAMINED` bytes. A segment carrying
pipelined requests is cut into them first (`split_requests`, at most `MAX_PIPELINED`). Maltrail looks headers up
as the case-sensitive substring `\\r\\nName:` ending at the next `\\r\\n`, and trails depend on
that, so no real HTTP header parsing is done here on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EXAMINED = 8192  # bytes of a payload that are decoded and searched
MAX_PIPELINED = 16  # requests of one segment that are inspected (pipelining); later ones are not
HEAD_CHARS = 2000  # response characters Maltrail runs the sinkhole regex on

_STATUS = re.compile(rb"HTTP/\S* +(\d{3})(?!\d)")
# Maltrail's forwarded-address rule, matched on the raw packet bytes there (hence ASCII here).
_FORWARDED_FOR = re.compile(r"\b(?:CF-Connecting-IP|True-Client-IP|X-Forwarded-For):\s*([0-9.]+)",
                            re.IGNORECASE | re.ASCII)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond more to build
class HttpRequest:
    """A request line plus the two headers every request is checked for; `path` is as sent. The
    fields are in `RequestFields` order."""

    method: str
    path: str
    host: str | None
    user_agent: str | None
    body: str
    version: str
    text: str


# `HttpRequest`'s fields as plain tuples, which cost a tenth as much to build: what the checks of
# a batch's lone requests read (`request_fields`): ((method, path, Host, User-Agent), body,
# version, text). The first is what settling them reads, and their key.
RequestFields = tuple[tuple[str, str, str | None, str | None], str, str, str]


@dataclass(slots=True)
class HttpResponse:
    """What Maltrail's response heuristics look at: sinkhole banner, seized title, content type.

    Bodies are mostly binary, and decoding them costs more than everything else here, so the
    response is searched as bytes and only the pieces that are used are decoded."""

    status: int | None
    content_type: str | None
    title: str | None
    raw: bytes  # the examined bytes

    @property
    def head(self) -> str:
        """The first HEAD_CHARS characters, decoded (4 bytes at most per character)."""
        return _text(self.raw[:4 * HEAD_CHARS])[:HEAD_CHARS]


def _text(raw: bytes) -> str:
    """UTF-8 with replacement characters, as Maltrail decodes TCP payloads."""
    return raw.decode("utf-8", "replace")


def header(text: str, name: str) -> str | None:
    """Value of the first `\\r\\nName:` (case-sensitive), stripped; None without a closing `\\r\\n`."""
    return _value_after(text, f"\r\n{name}:")


def _value_after(text: str, key: str, start: int = 0) -> str | None:
    """`header` with its key (`\\r\\nName:`) spelled out already, searched from `start`."""
    start = text.find(key, start)
    if start < 0:
        return None
    start += len(key)
    end = text.find("\r\n", start)
    return text[start:end].strip() if end >= 0 else None


def split_requests(payload: bytes) -> list[bytes]:
    """The examined bytes cut into pipelined requests, at most MAX_PIPELINED. A request ends after
    its blank line and its Content-Length body when a complete request line follows; otherwise it
    runs to the end, as Maltrail's body does (everything after the blank line). A lone request
    (the usual case) comes back as the payload itself, without a copy."""
    raw = payload[:MAX_EXAMINED]
    pieces = []
    start = 0
    while len(pieces) < MAX_PIPELINED:
        end = _request_end(raw, start)
        pieces.append(raw[start:end])
        if end >= len(raw):
            break
        start = end
    return pieces


def _request_end(raw: bytes, start: int) -> int:
    """Where the request at `start` ends: the start of the next one, else len(raw)."""
    head = raw.find(b"\r\n\r\n", start)
    if head < 0 or head + 4 >= len(raw):
        return len(raw)
    end = head + 4 + _content_length(raw[start:head].lower())
    return end if end < len(raw) and _request_line(raw, end) else len(raw)


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased header block; 0 when absent or not a number."""
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    value = head[at + 17 :].split(b"\r\n", 1)[0].strip()
    return int(value) if value.isdigit() and len(value) < 12 else 0


def _request_line(raw: bytes, at: int) -> bool:
    """`parse_http_request`'s request-line test on the bytes from `at`: a complete first line."""
    eol = raw.find(b"\r\n", at)
    if eol < 0:
        return False
    line = raw[at:eol]
    parts = line.split(b" ")
    return len(parts) == 3 and bool(parts[0]) and bool(parts[1]) and b" HTTP/" in line


def parse_http_request(payload: bytes | memoryview) -> HttpRequest | None:
    """Parse a request the way Maltrail accepts one, else None (`request_fields`)."""
    fields = request_fields(payload)
    return None if fields is None else HttpRequest(*fields[0], *fields[1:])


def request_fields(payload: bytes | memoryview) -> RequestFields | None:
    """The fields of the request the way Maltrail accepts one, else None.

    The text must contain ` HTTP/` and its first line (up to the first `\\r\\n`) exactly two
    spaces and ` HTTP/`; an empty method or path is refused too (Maltrail's `if method and path`).
    The two headers are searched from the first line's end: a `\\r\\n` cannot start before it.
    In the usual layout, Host then User-Agent right after the request line, both are where the
    searches would find them first, and the blank line is the first one from the User-Agent's
    end: the text's first three lines and the rest come from one split, which spares most of the
    searches (each string method call costs ~1,000 instructions).
    """
    text = str(payload[:MAX_EXAMINED], "utf-8", "replace")
    pieces = text.split("\r\n", 3)
    if len(pieces) < 2:
        return None
    line = pieces[0]
    parts = line.split(" ")
    if len(parts) != 3 or " HTTP/" not in line:
        return None
    method, path, version = parts
    if not method or not path:
        return None
    if len(pieces) == 4 and pieces[1][:5] == "Host:" and pieces[2][:11] == "User-Agent:":
        rest = pieces[3]  # after the User-Agent line's `\r\n`: a blank line there starts with it
        blank = -2 if rest[:2] == "\r\n" else rest.find("\r\n\r\n")
        return ((method, path, pieces[1][5:].strip(), pieces[2][11:].strip()), rest[blank + 4 :] if blank != -1 else "",
                version, text)
    end = len(line)
    host, user_agent = _value_after(text, "\r\nHost:", end), _value_after(text, "\r\nUser-Agent:", end)
    blank = text.find("\r\n\r\n", end)
    return (method, path, host, user_agent), text[blank + 4 :] if blank >= 0 else "", version, text


def parse_http_response(payload: bytes | memoryview) -> HttpResponse | None:
    """Parse a response (a payload starting with `HTTP/`), else None.

    The title is the text between the first `<title>` and the next `</title>`, None unless both
    are present (a missing close tag must not turn the whole body into a trail). The markers are
    ASCII, and UTF-8 decoding resynchronises at every ASCII byte, so searching the bytes and
    decoding the pieces gives the same strings as decoding first.
    """
    raw = bytes(payload[:MAX_EXAMINED])
    if not raw.startswith(b"HTTP/"):
        return None
    eol = raw.find(b"\r\n")
    status = _STATUS.match(raw[:eol] if eol >= 0 else raw)
    content_type = _header_bytes(raw, b"Content-Type")
    title = None
    low = raw.lower()  # bytes.lower() folds ASCII letters only, keeping every offset
    opening = low.find(b"<title>")
    if opening >= 0:
        closing = low.find(b"</title>", opening + 7)
        if closing >= 0:
            title = _text(raw[opening + 7:closing])
    return HttpResponse(status=int(status.group(1)) if status else None,
                        content_type=content_type.lower() if content_type is not None else None,
                        title=title, raw=raw)


def _header_bytes(raw: bytes, name: bytes) -> str | None:
    """`header` over undecoded bytes."""
    key = b"\r\n" + name + b":"
    start = raw.find(key)
    if start < 0:
        return None
    start += len(key)
    end = raw.find(b"\r\n", start)
    return _text(raw[start:end]).strip() if end >= 0 else None


def forwarded_for(text: str) -> str | None:
    """Client address a proxy put in `CF-Connecting-IP`/`True-Client-IP`/`X-Forwarded-For`.

    Maltrail's rule: header name in any case anywhere in the packet, then the run of digits and
    dots after the colon (so `1.2.3.4, 5.6.7.8` gives `1.2.3.4`); None when no such run exists.
    """
    low = text.lower()  # a case-insensitive regex search costs more than these three tests
    if "connecting-ip:" not in low and "client-ip:" not in low and "forwarded-for:" not in low:
        return None
    match = _FORWARDED_FOR.search(text)
    return match.group(1) if match else None
