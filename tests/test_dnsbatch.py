"""`workers.dnsbatch`: the bulk DNS decoder agrees with the per-message parser on every message it
decodes, and hands everything else (compressed questions, several questions, hostile input) to it."""

from __future__ import annotations

import socket
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.traffic import dns_query, dns_response
from workers.dnsbatch import DnsBatch, decode
from workers.nameshapes import NameShapes
from workers.protocols.dns import parse_dns


def _batch(payloads: list[bytes], pad: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The payloads laid out in one buffer with junk between them, as packets sit in a batch."""
    buf, offs = bytearray(), []
    for p in payloads:
        buf += b"\xc0" * pad
        offs.append(len(buf))
        buf += p
    buf += b"\xc0" * pad
    return (np.frombuffer(bytes(buf), np.uint8), np.array(offs, np.int64),
            np.array([len(p) for p in payloads], np.int64))


def _names(b: DnsBatch) -> list[str | None]:
    """Each decoded row's name: standard queries and NXDOMAIN answers (byte 3 0x83) have one."""
    names: list[str | None] = [None] * b.fast.size
    for i, name in zip(b.queries.tolist() + b.nx.tolist(), b.query_names + b.nx_names, strict=True):
        names[i] = name
    return names


def _check_agrees(payloads: list[bytes]) -> tuple[list[int], list[int]]:
    data, off, length = _batch(payloads)
    b = decode(data, off, length, True)
    assert sorted(b.fast.tolist() + b.slow.tolist()) == list(range(len(payloads)))
    names = _names(b)
    qtype, qclass = b.types(np.arange(b.fast.size))
    for i, pos in enumerate(b.fast.tolist()):
        msg = parse_dns(payloads[pos])
        assert msg is not None, payloads[pos]
        assert (b.flags[i] >> 8, b.flags[i] & 0xFF, qtype[i], qclass[i]) == (msg.byte2, msg.byte3, msg.qtype,
                                                                            msg.qclass)
        assert (i in b.queries.tolist()) == (msg.byte2 & 0xFA == 0)
        assert (i in b.nx.tolist()) == bool(msg.byte2 & 0x80 and msg.byte3 == 0x83)
        name = names[i]
        if i in b.queries.tolist() or i in b.nx.tolist():  # a query or NXDOMAIN: named
            assert name is not None
        if name is not None and name.isascii():
            assert name == msg.qname
        if msg.byte2 & 0x80 and msg.byte3 == 0x80:
            if msg.answers_a:  # the bulk walk finds the parser's first A (it may find more: a superset)
                assert b.has_a[i] and socket.inet_ntoa(int(b.answer_a[i]).to_bytes(4, "big")) == msg.answers_a[0]
        else:
            assert not b.has_a[i]
    _check_laid_out(b)
    return b.fast.tolist(), b.slow.tolist()


def _check_laid_out(b: DnsBatch) -> None:
    """The names' bytes the decoder hands on give the bulk name checks what the names themselves do."""
    named = b.named()
    if named is None:
        assert b.lines is None
        return
    laid_out = named.head(len(b.query_names))
    names = b.query_names
    assert all(name.isascii() and "\n" not in name for name in names + b.nx_names)
    assert laid_out.buf.tobytes() == "\n".join(names).encode()
    assert named.buf.tobytes() == "\n".join(names + b.nx_names).encode()
    theirs_all = NameShapes.of(names + b.nx_names, lower=False)
    for a in ("starts", "ends", "dots", "owner"):
        assert getattr(theirs_all.laid_out, a).tolist() == getattr(named, a).tolist(), a
    mine, theirs = NameShapes.of(names, lower=False, queries=True), NameShapes.of(
        names, lower=False, queries=True, laid_out=laid_out)
    for field in ("plain", "special", "ip_literal", "valid", "long_first_label", "exhaustion_cut", "ignored"):
        assert getattr(mine, field).tolist() == getattr(theirs, field).tolist(), field
    for a, z in (("starts", "starts"), ("ends", "ends"), ("dots", "dots"), ("owner", "owner")):
        assert getattr(mine.laid_out, a).tolist() == getattr(laid_out, z).tolist(), a


def test_plain_messages_are_decoded_in_bulk() -> None:
    payloads = [dns_query("WWW.Example.COM"), dns_query("a.b.c.d.example.org", qtype=28),
                dns_response("evil.example.net", ["203.0.113.5", "203.0.113.6"]),
                dns_response("nx.example.net", [], rcode=3), dns_query(".")]
    fast, slow = _check_agrees(payloads)
    assert fast == [0, 1, 2, 3, 4] and slow == []
    data, off, length = _batch(payloads)
    b = decode(data, off, length, True)
    assert _names(b) == ["www.example.com", "a.b.c.d.example.org", None, "nx.example.net", ""]  # answers: unnamed
    assert b.has_a.tolist() == [False, False, True, False, False]


def test_answer_after_cname_is_found() -> None:
    head = bytearray(dns_response("cdn.example.com", []))
    head[6:8] = struct.pack("!H", 2)
    cname_at = len(head) + 12  # where the CNAME record's rdata starts
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 4) + b"\x01x\xc0\x0c"
    a = struct.pack("!H", 0xC000 | cname_at) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((198, 51, 100, 9))
    msg = bytes(head) + cname + a
    assert parse_dns(msg).answers_a == ("198.51.100.9",)
    fast, _ = _check_agrees([msg])
    assert fast == [0]


def test_unusual_messages_go_to_the_parser() -> None:
    compressed_question = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    two_questions = struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0) + (b"\x01a\x02bc\x00" + b"\x00\x01\x00\x01") * 2
    spelled_owner = dns_response("x.example.com", ["192.0.2.1"], compress=False)
    cut = dns_query("cut.example.com")[:-3]
    long_label = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01"
    too_long = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x3f" + b"a" * 63 + (b"\x3fb" + b"b" * 62) * 4
    fast, slow = _check_agrees([compressed_question, two_questions, spelled_owner, cut, long_label, too_long,
                                b"", b"\x00" * 11])
    assert fast == [] and slow == list(range(8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["q", "r", "nx"]),
                          st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=5),
                          st.lists(st.integers(0, 2**32 - 1), max_size=3),
                          st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4)),
                min_size=1, max_size=8))
def test_mutated_messages_agree_with_the_parser(specs: list) -> None:
    payloads = []
    for kind, labels, answers, flips in specs:
        name = ".".join(labels)
        if kind == "q":
            raw = bytearray(dns_query(name))
        else:
            ips = [socket.inet_ntoa(a.to_bytes(4, "big")) for a in answers]
            raw = bytearray(dns_response(name, ips if kind == "r" else [], rcode=0 if kind == "r" else 3))
        for where, value in flips:
            if where < len(raw):
                raw[where] = value
        payloads.append(bytes(raw))
    _check_agrees(payloads)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=80), min_size=1, max_size=6))
def test_random_bytes_never_break_the_decoder(payloads: list[bytes]) -> None:
    _check_agrees(payloads)


def _raw_query(labels: list[bytes]) -> bytes:
    return (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"".join(bytes((len(x),)) + x for x in labels)
            + b"\x00" + struct.pack("!HH", 1, 1))


def test_names_holding_a_line_break_keep_their_place() -> None:
    """Names are cut out of one text at line breaks; a name that holds one itself (DNS allows any
    byte) must not shift its neighbours."""
    payloads = [dns_query("before.example"), _raw_query([b"a\nb", b"example"]), _raw_query([b"\n"]),
                dns_query("after.example"), dns_query(".")]
    fast, slow = _check_agrees(payloads)
    assert fast == [0, 1, 2, 3, 4] and slow == []
    data, off, length = _batch(payloads)
    assert _names(decode(data, off, length, True)) == ["before.example", "a\nb.example", "\n", "after.example", ""]


def test_odd_bytes_in_labels_keep_the_names_bytes_exact() -> None:
    """A dot or a high byte inside a label, upper case and the root: the bytes handed on match the
    names, or none are handed on (not ASCII)."""
    ascii_only = [_raw_query([b"A.b", b"Example"]), _raw_query([b"x_y", b"1-2-3-4", b"co", b"uk"]), dns_query("."),
                  _raw_query([b"a" * 63, b"b" * 63, b"local"])]
    for payloads in (ascii_only, [*ascii_only, _raw_query([b"\xe9t\xe9", b"fr"])]):
        data, off, length = _batch(payloads)
        b = decode(data, off, length, True)
        assert (b.lines is None) == (len(payloads) > len(ascii_only))
        _check_agrees(payloads)


def test_names_of_queries_among_answers_keep_their_place() -> None:
    payloads = [dns_response("r1.example", ["192.0.2.1"]), dns_query("q1.example"),
                dns_response("nx.example", [], rcode=3), dns_response("r2.example", ["192.0.2.2"]),
                dns_query("q2.example")]
    data, off, length = _batch(payloads)
    assert _names(decode(data, off, length, True)) == [None, "q1.example", "nx.example", None, "q2.example"]


def test_queries_among_nxdomain_answers_lead_the_names_bytes() -> None:
    """Every row named, queries and NXDOMAIN answers interleaved: the queries' names are cut out
    first (their bytes lead the buffer), yet every name keeps its row and its own dots."""
    payloads = [dns_query("q1.a.example"), dns_response("nx1.b.example", [], rcode=3), dns_query("q2.example"),
                dns_response("n.c.d.example", [], rcode=3), dns_query("q3.x.y.example")]
    _check_agrees(payloads)
    data, off, length = _batch(payloads)
    b = decode(data, off, length, True)
    assert _names(b) == ["q1.a.example", "nx1.b.example", "q2.example", "n.c.d.example", "q3.x.y.example"]
    assert b.query_names == ["q1.a.example", "q2.example", "q3.x.y.example"]
    assert b.named() is not None


def test_answers_with_a_reserved_owner_form_have_no_address() -> None:
    """An owner whose first byte is neither a pointer, the root nor a label length (0x40-0xBF,
    reserved) ends the answer walk, though the bytes after it read as an A record: no candidate
    address (a candidate would only cost a re-parse)."""
    head = bytearray(dns_response("x.example.com", []))
    head[6:8] = struct.pack("!H", 1)
    for first in (0x40, 0x80, 0xBF):
        msg = bytes(head) + bytes((first,)) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 7))
        assert parse_dns(msg).answers_a == ()
        fast, _ = _check_agrees([msg])
        data, off, length = _batch([msg])
        assert fast == [0] and not decode(data, off, length, True).has_a[0]  # no candidate to re-parse
