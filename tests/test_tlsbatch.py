"""`workers.tlsbatch`: the bulk SNI walk gives `client_hello_sni`'s answer for every hello it
decides (browser-shaped, shuffled, cut, corrupted or hostile), and leaves the rest to it."""

from __future__ import annotations

import struct
from operator import itemgetter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.traffic import tls_client_hello
from workers import payload
from workers.batch import parse_batch
from workers.payload import BULK_HELLOS, DetectionSettings, PayloadInspector
from workers.protocols.tls import client_hello_sni
from workers.tlsbatch import MAX_STEPS, MIN_FOUND, snis


def _batch(payloads: list[bytes], junk: bytes = b"A.\n") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The payloads laid out in one buffer as packets sit in a batch, with junk between them that
    reads as host name bytes and line breaks: a read past a payload shows in the names."""
    length = np.array([len(p) for p in payloads], np.int64)
    off = len(junk) + np.concatenate(([0], np.cumsum(length + len(junk))[:-1]))
    return np.frombuffer(junk + junk.join(payloads) + junk, np.uint8), off, length


def _agrees(payloads: list[bytes], min_found: int = 0) -> tuple[dict[int, str], list[int]]:
    """The bulk answers (position: name) and slow positions, each decided one checked against
    `client_hello_sni`. Every extension step is taken unless `min_found` says otherwise."""
    b = snis(*_batch(payloads), min_found=min_found)
    named = dict(zip(b.named.tolist(), b.names, strict=True))
    slow = b.slow.tolist()
    assert len(named) == len(b.names) and not set(named) & set(slow)
    for i, p in enumerate(payloads):
        if i not in slow:
            assert named.get(i) == client_hello_sni(p), (i, p)
    return named, slow


def _ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


def _hello(entries: list[tuple[int, bytes]], before: list[bytes] = (), after: list[bytes] = (), session: int = 32,
           suites: int = 16) -> bytes:
    """A ClientHello record whose server_name list holds `entries` (type, raw name), amid the
    extensions `before` and `after` it."""
    names = b"".join(struct.pack("!BH", kind, len(raw)) + raw for kind, raw in entries)
    extensions = b"".join((*before, _ext(0, struct.pack("!H", len(names)) + names), *after))
    body = (b"\x03\x03" + bytes(32) + bytes((session,)) + bytes(session) + struct.pack("!H", 2 * suites)
            + bytes(2 * suites) + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


def test_browser_hellos_are_read_in_bulk() -> None:
    payloads = [tls_client_hello(name) for name in ("example.com", "WWW.Some-Host_name.CO.uk", "a", "1.2.3.4")]
    named, slow = _agrees(payloads)
    assert named == {0: "example.com", 1: "www.some-host_name.co.uk", 2: "a", 3: "1.2.3.4"} and slow == []


def test_names_that_are_not_host_names_have_none() -> None:
    raws = [b"a..b", b".a", b"a.", b"a b", b"caf\xc3\xa9.fr", b"a\nb", b"", b"x" * 254, b"x" * 253, b"A_B-c.D"]
    named, slow = _agrees([_hello([(0, raw)]) for raw in raws])
    assert named == {8: "x" * 253, 9: "a_b-c.d"} and slow == []


def test_unusual_hellos_go_to_the_parser() -> None:
    late = _hello([(0, b"late.example")], before=[_ext(0xFE00 + i, b"") for i in range(MAX_STEPS)])
    other_first = _hello([(1, b"x"), (0, b"second.example")])
    named, slow = _agrees([late, other_first, _hello([(0, b"ok.example")], before=[_ext(23, b"")] * 5)])
    assert named == {2: "ok.example"} and slow == [0, 1]
    assert client_hello_sni(late) == "late.example" and client_hello_sni(other_first) == "second.example"


def test_steps_that_find_few_snis_leave_the_rest_to_the_parser() -> None:
    """A step must find MIN_FOUND SNIs for the next to be taken: shuffled extensions in a few
    hellos are walked by the parser instead."""
    first, second, third = ([_hello([(0, b"%d-%d.example" % (k, i))], before=[_ext(23, b"")] * k)
                             for i in range(MIN_FOUND)] for k in range(3))
    named, slow = _agrees(first + second[1:] + third, MIN_FOUND)  # the second step finds too few
    assert len(named) == 2 * MIN_FOUND - 1 and slow == list(range(2 * MIN_FOUND - 1, 3 * MIN_FOUND - 1))
    named, slow = _agrees(first + second + third[:3], MIN_FOUND)  # steps that find enough go on
    assert len(named) == 2 * MIN_FOUND + 3 and slow == []


def test_cut_hellos_agree_at_every_length() -> None:
    hello = _hello([(0, b"cut.example.org")], before=[_ext(10, b"\x00\x02\x00\x1d")], after=[_ext(21, bytes(40))])
    named, _ = _agrees([hello[:n] for n in range(len(hello) + 1)])
    first = min(named)  # cut after the server_name extension: still named
    assert named == dict.fromkeys(range(first, len(hello) + 1), "cut.example.org") and first < len(hello) - 40


def _length_fields(hello: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every length field of a `_hello` with one name: record, handshake,
    session id, cipher suites, compression, extension list, each extension, name list, name."""
    fields = [(3, 2), (6, 3), (43, 1)]
    pos = 44 + hello[43]
    fields.append((pos, 2))
    pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")
    fields.append((pos, 1))
    pos += 1 + hello[pos]
    fields.append((pos, 2))
    end, pos = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big"), pos + 2
    while pos < end:
        fields.append((pos + 2, 2))
        if hello[pos : pos + 2] == b"\x00\x00":
            fields += [(pos + 4, 2), (pos + 7, 2)]
        pos += 4 + int.from_bytes(hello[pos + 2 : pos + 4], "big")
    return fields


def test_every_length_field_bent_by_one_agrees() -> None:
    hello = _hello([(0, b"bent.example")], before=[_ext(23, b""), _ext(10, b"\x00\x02\x00\x1d")],
                   after=[_ext(21, bytes(3))], session=31)
    bent = []
    for pos, width in _length_fields(hello):
        value = int.from_bytes(hello[pos : pos + width], "big")
        for delta in (-2, -1, 1, 2):
            if 0 <= value + delta < 1 << 8 * width:
                bent.append(hello[:pos] + (value + delta).to_bytes(width, "big") + hello[pos + width :])
    bent.append(_hello([(0, b"bent.example")], session=33))  # a session id longer than allowed
    named, slow = _agrees(bent)
    assert len(bent) > 40 and slow == [] and 0 < len(named) < len(bent) and len(bent) - 1 not in named


_EXTS = st.lists(st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=12)).map(lambda e: _ext(*e)), max_size=6)
_NAME = st.one_of(st.from_regex(rb"[a-zA-Z0-9_.-]{0,30}", fullmatch=True), st.binary(max_size=30))


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """A hello built right, then maybe cut, with bytes overwritten, or a length field bent."""
    entries = draw(st.lists(st.tuples(st.sampled_from((0, 0, 1, 255)), _NAME), max_size=3))
    hello = bytearray(_hello(entries, draw(_EXTS), draw(_EXTS), draw(st.integers(0, 33)), draw(st.integers(0, 4))))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(hello) - 1), st.integers(0, 255)), max_size=3)):
        hello[pos] = value
    return bytes(hello[: draw(st.integers(0, len(hello)))]) if draw(st.booleans()) else bytes(hello)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_hostile(), st.binary(max_size=80).map(lambda b: b"\x16\x03\x01" + b)), min_size=1,
                max_size=6))
def test_bulk_agrees_with_the_parser(payloads: list[bytes]) -> None:
    _agrees(payloads)


def test_inspector_reports_the_same_with_and_without_the_bulk_walk(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with enough hellos for the bulk walk, some of them odd (read by the parser), some
    on a trail, over IPv4 and IPv6: the same items as one hello at a time, trail hits reported."""
    (tmp_path / "trails.csv").write_text("tls-evil.example,malware (test),(static)\n"
                                         "late-evil.example,malware (test),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "t.mtidx")
    ix = TrailIndex(tmp_path / "t.mtidx")
    hellos = [tls_client_hello(f"host{i}.example.org") for i in range(BULK_HELLOS)]
    hellos += [tls_client_hello("TLS-evil.example"), _hello([(1, b"x"), (0, b"tls-evil.example")]),
               _hello([(0, b"late-evil.example")], before=[_ext(0xFE00 + i, b"") for i in range(MAX_STEPS)]),
               tls_client_hello("tls-evil.example")[:60]]
    frames = [t.ethernet(t.tcp4("10.0.0.9", "203.0.113.30", 40000 + i, 443, t.PSH | t.ACK, h))
              for i, h in enumerate(hellos)]
    frames.append(t.ethernet(t.tcp6("2001:db8::9", "2001:db8::30", 41000, 443, t.PSH | t.ACK,
                                    tls_client_hello("tls-evil.example"))))
    frames.append(t.ethernet(t.tcp4("10.0.0.9", "203.0.113.30", 42000, 53, t.PSH | t.ACK,
                                    tls_client_hello("tls-evil.example"))))  # port 53: tried as DNS first
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)

    def items() -> list:
        inspector = PayloadInspector(ix, DetectionSettings(use_heuristics=True))
        return sorted(inspector.inspect(p, data, inspector.rows(p)), key=itemgetter(0))

    bulk = items()
    monkeypatch.setattr(payload, "BULK_HELLOS", len(frames) + 1)
    assert bulk == items()
    events = [(row, ev[0][3], ev[0][8]) for row, _, ev in bulk]
    n = BULK_HELLOS
    assert events == [(n, 40000 + n, "tls-evil.example"), (n + 1, 40000 + n + 1, "tls-evil.example"),
                      (n + 2, 40000 + n + 2, "late-evil.example"), (n + 4, 41000, "tls-evil.example"),
                      (n + 5, 42000, "tls-evil.example")]
