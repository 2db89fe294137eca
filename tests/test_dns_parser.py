"""`workers.protocols.dns`: well-formed messages from the traffic generator, hostile ones built by
hand, and fuzzing (the parser sees attacker-controlled datagrams and must never raise)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.traffic import dns_query, dns_response
from workers.protocols.dns import (
    IGNORED_QUERY_SUFFIXES,
    MAX_ANSWERS,
    MAX_POINTER_HOPS,
    DnsMessage,
    is_ignored_query,
    is_valid_dns_name,
    parse_dns,
)


def _header(flags: int = 0x0100, qd: int = 1, an: int = 0, txid: int = 0xBEEF) -> bytes:
    return struct.pack("!HHHHHH", txid, flags, qd, an, 0, 0)


def _name(*labels: bytes) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def _rr(owner: bytes, rtype: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, 60, len(rdata)) + rdata


QUESTION_A = _name(b"evil", b"com") + struct.pack("!HH", 1, 1)


def test_query_from_generator() -> None:
    msg = parse_dns(dns_query("WWW.Example.ORG", qtype=1, txid=0x4242))
    assert msg == DnsMessage(
        txid=0x4242, flags=0x0100, is_query=True, opcode=0, truncated=False, rcode=0, byte2=0x01,
        byte3=0x00, qname="www.example.org", qtype=1, qclass=1, answers_a=(), answers_aaaa=())
    assert msg.byte2 & 0xFA == 0  # Maltrail's standard-query gate


def test_query_accepts_memoryview() -> None:
    msg = parse_dns(memoryview(b"\x00" * 8 + dns_query("a.b.example.net", qtype=28))[8:])
    assert msg is not None and msg.qname == "a.b.example.net" and msg.qtype == 28


@pytest.mark.parametrize("compress", [True, False])
def test_response_a_answers_in_order(compress: bool) -> None:
    msg = parse_dns(dns_response("evil.com", ["1.2.3.4", "5.6.7.8"], compress=compress))
    assert msg is not None
    assert not msg.is_query and msg.byte2 == 0x81 and msg.byte3 == 0x80 and msg.rcode == 0
    assert msg.qname == "evil.com" and msg.qtype == 1
    assert msg.answers_a == ("1.2.3.4", "5.6.7.8") and msg.answers_aaaa == ()


@pytest.mark.parametrize("compress", [True, False])
def test_response_aaaa_answers(compress: bool) -> None:
    msg = parse_dns(dns_response("v6.example.net", ["2001:db8::1", "2a00:1450::200e"], compress=compress))
    assert msg is not None and msg.qtype == 28 and msg.answers_a == ()
    assert msg.answers_aaaa == (ipaddress.IPv6Address("2001:db8::1").packed,
                                ipaddress.IPv6Address("2a00:1450::200e").packed)


def test_nxdomain_flag_bytes() -> None:
    msg = parse_dns(dns_response("nope.example.com", [], rcode=3))
    assert msg is not None and msg.byte3 == 0x83 and msg.rcode == 3 and msg.answers_a == ()


def test_mixed_answers_keep_a_and_aaaa_skip_others() -> None:
    cname = _rr(b"\xc0\x0c", 5, _name(b"alias", b"com"))
    a = _rr(b"\xc0\x0c", 1, bytes((9, 9, 9, 9)))
    aaaa = _rr(b"\xc0\x0c", 28, bytes(15) + b"\x01")
    odd_a = _rr(b"\xc0\x0c", 1, bytes(5))  # type A with the wrong rdlength is not an address
    chaos_a = _rr(b"\xc0\x0c", 1, bytes((8, 8, 4, 4)), rclass=3)  # class is not checked
    msg = parse_dns(_header(0x8180, an=5) + QUESTION_A + cname + odd_a + a + aaaa + chaos_a)
    assert msg is not None
    assert msg.answers_a == ("9.9.9.9", "8.8.4.4") and msg.answers_aaaa == (bytes(15) + b"\x01",)


def test_flags_decoded() -> None:
    msg = parse_dns(_header(0x8780 | (2 << 11)) + QUESTION_A)  # response, opcode 2, AA, TC, RD, RA
    assert msg is not None
    assert not msg.is_query and msg.opcode == 2 and msg.truncated and msg.byte2 == 0x97
    assert msg.flags == 0x9780


def test_truncated_query_fails_standard_gate() -> None:
    msg = parse_dns(_header(0x0300) + QUESTION_A)
    assert msg is not None and msg.is_query and msg.truncated and msg.byte2 & 0xFA != 0


def test_ad_bit_changes_byte3() -> None:
    msg = parse_dns(_header(0x81A0) + QUESTION_A)
    assert msg is not None and msg.byte3 == 0xA0 and msg.rcode == 0


def test_non_in_class_and_type_reported() -> None:
    msg = parse_dns(_header() + _name(b"version", b"bind") + struct.pack("!HH", 16, 3))
    assert msg is not None and msg.qclass == 3 and msg.qtype == 16


def test_root_name_is_empty() -> None:
    msg = parse_dns(_header() + b"\x00" + struct.pack("!HH", 2, 1))
    assert msg is not None and msg.qname == ""


def test_question_pointer_is_followed() -> None:
    # the question name points back into the header: NSCOUNT/ARCOUNT (offset 8) spell "\x02ab\x00"
    data = struct.pack("!HHHH", 0x1234, 0x0100, 1, 0) + b"\x02ab\x00"
    msg = parse_dns(data + b"\x03www\xc0\x08" + struct.pack("!HH", 1, 1))
    assert msg is not None and msg.qname == "www.ab"


def test_pointer_chain_within_hop_limit() -> None:
    # name at 12: "x" then a pointer; a chain of pointers after the question ends at "end.com"
    hops = MAX_POINTER_HOPS
    base = 12 + 4 + 4  # header + question ("\x01x" + pointer) + qtype/qclass
    chain = b"".join(struct.pack("!H", 0xC000 | (base + 2 * (i + 1))) for i in range(hops - 1))
    data = _header() + b"\x01x" + struct.pack("!H", 0xC000 | base) + struct.pack("!HH", 1, 1)
    data += chain + _name(b"end", b"com")
    msg = parse_dns(data)
    assert msg is not None and msg.qname == "x.end.com"


def test_pointer_chain_beyond_hop_limit() -> None:
    hops = MAX_POINTER_HOPS + 1
    base = 12 + 4 + 4
    chain = b"".join(struct.pack("!H", 0xC000 | (base + 2 * (i + 1))) for i in range(hops - 1))
    data = _header() + b"\x01x" + struct.pack("!H", 0xC000 | base) + struct.pack("!HH", 1, 1)
    assert parse_dns(data + chain + _name(b"end", b"com")) is None


@pytest.mark.parametrize("data", [
    pytest.param(_header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1), id="pointer-to-itself"),
    pytest.param(_header() + b"\xc0\x0e\xc0\x0c" + struct.pack("!HH", 1, 1), id="two-pointers-to-each-other"),
    pytest.param(_header() + b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1), id="label-then-loop"),
    pytest.param(_header() + b"\xc0\xff" + struct.pack("!HH", 1, 1), id="pointer-past-end"),
    pytest.param(_header() + b"\xc0", id="half-pointer"),
    pytest.param(_header() + b"\x40" + b"a" * 70 + b"\x00" + struct.pack("!HH", 1, 1), id="label-type-0x40"),
    pytest.param(_header() + b"\x80" + b"a" * 130 + b"\x00" + struct.pack("!HH", 1, 1), id="label-type-0x80"),
    pytest.param(_header() + b"\x3fabc", id="label-longer-than-data"),
    pytest.param(_header() + b"\x03com", id="no-root-byte"),
    pytest.param(_header() + _name(b"evil", b"com"), id="no-qtype"),
    pytest.param(_header() + _name(b"evil", b"com") + b"\x00\x01\x00", id="short-qclass"),
    pytest.param(_header(qd=0) + QUESTION_A, id="qdcount-0"),
    pytest.param(_header()[:11], id="short-header"),
    pytest.param(b"", id="empty"),
])
def test_unreadable_question(data: bytes) -> None:
    assert parse_dns(data) is None


def test_name_length_limit() -> None:
    # 4 labels of 63 bytes: 4 * 64 + 1 = 257 bytes on the wire (> 255)
    too_long = _header() + _name(*[b"a" * 63] * 4) + struct.pack("!HH", 1, 1)
    assert parse_dns(too_long) is None
    # 3 * 64 + 62 + 1 = 255 exactly
    longest = _header() + _name(*[b"a" * 63] * 3, b"b" * 61) + struct.pack("!HH", 1, 1)
    msg = parse_dns(longest)
    assert msg is not None and len(msg.qname) == 253


def test_name_length_limit_across_pointers() -> None:
    # two 63-byte labels, then a pointer to two more after the question: 257 bytes in all
    tail = _name(*[b"c" * 63] * 2)  # 129 bytes
    data = _header() + b"\x3f" + b"d" * 63 + b"\x3f" + b"e" * 63 + struct.pack("!H", 0xC000 | (12 + 128 + 2 + 4))
    data += struct.pack("!HH", 1, 1) + tail
    assert parse_dns(data) is None


def test_huge_ancount_without_data() -> None:
    msg = parse_dns(_header(0x8180, an=0xFFFF) + QUESTION_A)
    assert msg is not None and msg.answers_a == ()


def test_answers_stop_at_bad_record_keep_earlier() -> None:
    good = _rr(b"\xc0\x0c", 1, bytes((1, 1, 1, 1)))
    looping = b"\xc0" + bytes((12 + len(QUESTION_A) + len(good),))  # owner pointer to itself
    after = _rr(b"\xc0\x0c", 1, bytes((2, 2, 2, 2)))
    msg = parse_dns(_header(0x8180, an=3) + QUESTION_A + good + looping + struct.pack("!HHIH", 1, 1, 0, 4)
                    + bytes(4) + after)
    assert msg is not None and msg.answers_a == ("1.1.1.1",)


def test_answer_rdata_cut_short() -> None:
    good = _rr(b"\xc0\x0c", 1, bytes((1, 1, 1, 1)))
    cut = _rr(b"\xc0\x0c", 1, bytes((2, 2, 2, 2)))[:-1]
    msg = parse_dns(_header(0x8180, an=2) + QUESTION_A + good + cut)
    assert msg is not None and msg.answers_a == ("1.1.1.1",)


def test_answer_count_bounded() -> None:
    rr = _rr(b"\xc0\x0c", 1, bytes((7, 7, 7, 7)))
    msg = parse_dns(_header(0x8180, an=MAX_ANSWERS + 10) + QUESTION_A + rr * (MAX_ANSWERS + 10))
    assert msg is not None and len(msg.answers_a) == MAX_ANSWERS


def test_answers_after_several_questions() -> None:
    second = _name(b"other", b"net") + struct.pack("!HH", 1, 1)
    rr = _rr(b"\xc0\x0c", 1, bytes((3, 3, 3, 3)))
    msg = parse_dns(_header(0x8180, qd=2, an=1) + QUESTION_A + second + rr)
    assert msg is not None and msg.qname == "evil.com" and msg.answers_a == ("3.3.3.3",)
    # a broken later question leaves the first one readable but no answers
    broken = parse_dns(_header(0x8180, qd=2, an=1) + QUESTION_A + b"\xc0\xff" + rr)
    assert broken is not None and broken.qname == "evil.com" and broken.answers_a == ()


def test_non_ascii_label_bytes_kept() -> None:
    msg = parse_dns(_header() + _name(b"ev\xffil", b"COM") + struct.pack("!HH", 1, 1))
    assert msg is not None and msg.qname == "ev\xffil.com" and not is_valid_dns_name(msg.qname)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    msg = parse_dns(data)
    assert msg is None or isinstance(msg, DnsMessage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
def test_random_body_after_valid_header_never_raises(body: bytes, flags: int, ancount: int) -> None:
    msg = parse_dns(_header(flags, an=ancount) + body)
    assert msg is None or len(msg.answers_a) <= MAX_ANSWERS


@pytest.mark.parametrize(("name", "valid"), [
    ("evil.com", True),
    ("a.b-c.d_e.example", True),
    ("_ldap._tcp.dc.example", True),
    (".com", True),  # the regex allows an empty first part, as Maltrail's does
    ("com", False),
    ("", False),
    ("evil.com.", False),
    ("evil.c_m", False),
    ("ev il.com", False),
    ("evil.com\n", False),
    ("évil.com", False),
])
def test_is_valid_dns_name(name: str, valid: bool) -> None:
    assert is_valid_dns_name(name) is valid


def test_ignored_suffixes() -> None:
    expected = {"arpa", "local", "guest", "intranet", "corp", "home", "lan", "intra", "intran", "workgroup",
                "localdomain", "url", "alienvault", "example", "internal", "localnet", "test"}
    assert expected == IGNORED_QUERY_SUFFIXES


@pytest.mark.parametrize(("name", "ignored"), [
    ("4.3.2.1.in-addr.arpa", True),
    ("printer.local", True),
    ("wpad.lan", True),
    ("srv.intranet.acme.com", True),
    ("intranet.acme.com", False),
    ("evil.com", False),
    ("localhost", False),
    ("test", True),
    ("testing.com", False),
])
def test_is_ignored_query(name: str, ignored: bool) -> None:
    assert is_ignored_query(name) is ignored
