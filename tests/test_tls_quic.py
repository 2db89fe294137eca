"""TLS ClientHello / certificate and QUIC Initial parsers (spec 2.8): RFC 9001 / RFC 9369 test vectors,
round trips through the traffic builders, hostile and cut inputs, and fuzzing for "never raises"."""

from __future__ import annotations

import datetime
import hashlib
import struct
from collections.abc import Iterator
from typing import ClassVar
from unittest.mock import patch

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.traffic import (
    quic_crypto,
    quic_initial,
    quic_protect_initial,
    tls_client_hello,
    tls_server_certificate_flight,
    tls_server_hello,
)
from workers.protocols import quic
from workers.protocols.quic import MAX_FRAMES, QUIC_V1, QUIC_V2, initial_keys, initial_sni
from workers.protocols.tls import client_hello_sni, handshake_sni, server_certificate_sha1

RFC_DCID = bytes.fromhex("8394c8f03e515708")
# RFC 9001 A.2 (and RFC 9369 A.2): the client's CRYPTO frame carrying a ClientHello for example.com,
# padded to a 1200-byte datagram
RFC_FRAMES = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff") + bytes(917)
# version, unprotected header, protected packet's first 38 bytes (header + sample), last 16 (the tag)
RFC_PACKETS = (
    (QUIC_V1, "c300000001088394c8f03e5157080000449e00000002",
     "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9b",
     "e221af44860018ab0856972e194cd934"),
    (QUIC_V2, "d36b3343cf088394c8f03e5157080000449e00000002",
     "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485dd04de806071",
     "a18b2faa745b6fe189cf772a9f84cbfc"),
)
SNIS = ("example.com", "a.b", "www.some-host_name.co.uk", "x" * 63 + "." + "y" * 63 + ".com", "1.2.3.4")


# --- QUIC --------------------------------------------------------------------------------------------


def test_rfc9001_client_initial_keys() -> None:
    assert initial_keys(RFC_DCID, QUIC_V1) == (bytes.fromhex("1f369613dd76d5467730efcbe3b1a22d"),
                                               bytes.fromhex("fa044b2f42a3fd3b46fb255c"),
                                               bytes.fromhex("9f50449e04a0e810283a1e9933adedd2"))


def _public_ecb(key: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(RFC_DCID * 2)


def test_quic_header_mask_from_the_binding_is_the_public_one() -> None:
    """The ECB context made straight from `cryptography`'s binding (the one this version has) and the
    public path's give one mask; without the binding the public path is used."""
    quic._ecb_maker.cache_clear()
    try:
        make = quic._ecb_maker()
        assert make.__name__ == "direct"
        for key in (bytes(16), bytes(range(16)), hashlib.sha256(b"hp").digest()[:16]):
            assert make(key).update(RFC_DCID * 2) == _public_ecb(key)
        quic._ecb_maker.cache_clear()
        with patch.dict("sys.modules", {"cryptography.hazmat.bindings._rust": None}):
            public = quic._ecb_maker()
        assert public.__name__ == "public" and public(bytes(16)).update(RFC_DCID * 2) == _public_ecb(bytes(16))
    finally:
        quic._ecb_maker.cache_clear()


@pytest.mark.parametrize(("version", "header", "head", "tag"), RFC_PACKETS)
def test_rfc_client_initial_packet(version: int, header: str, head: str, tag: str) -> None:
    """The builder reproduces the RFC packet (same header, sample and GCM tag, so the same bytes), and
    the parser reads example.com out of it."""
    packet = quic_protect_initial(bytes.fromhex(header), RFC_FRAMES, RFC_DCID, version)
    assert len(packet) == 1200
    assert packet.startswith(bytes.fromhex(head)) and packet.endswith(bytes.fromhex(tag))
    assert initial_sni(packet) == "example.com"
    assert initial_sni(memoryview(packet)) == "example.com"


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
@pytest.mark.parametrize("dcid", [b"", b"\x01", RFC_DCID, bytes(range(20))])
@pytest.mark.parametrize("pn_len", [1, 2, 4])
def test_quic_initial_round_trip(version: int, dcid: bytes, pn_len: int) -> None:
    for sni in SNIS:
        packet = quic_initial(sni.upper(), dcid=dcid, version=version, scid=b"\xaa" * 5, pn_len=pn_len,
                              packet_number=(1 << (8 * pn_len - 1)) - 1)
        assert len(packet) == 1200
        assert initial_sni(packet) == sni


def test_quic_initial_coalesced_and_unpadded() -> None:
    packet = quic_initial("example.org", pad_to=0)
    assert len(packet) < 1200
    assert initial_sni(packet + bytes(300)) == "example.org"  # bytes after the packet are ignored


def test_quic_cut_datagram_falls_back_to_ctr() -> None:
    """A snap-length cut loses the tag, yet the frames before the cut are read."""
    packet, record = quic_initial("cut.example.net"), tls_client_hello("cut.example.net")
    # 19 header bytes, 4 of CRYPTO frame header, then the handshake message (the record minus 5 bytes)
    plain_sni_end = 19 + 4 + record.index(b"cut.example.net") - 5 + len("cut.example.net")
    assert initial_sni(packet[:400]) == "cut.example.net"
    assert initial_sni(packet[:plain_sni_end]) == "cut.example.net"
    assert initial_sni(packet[: plain_sni_end - 1]) is None
    assert initial_sni(packet[:60]) is None


def test_quic_tag_is_not_checked() -> None:
    """Whole packets are read with one AEAD call; one whose tag does not verify is still read, as
    Maltrail reads every Initial without checking its tag."""
    packet = bytearray(quic_initial("tag.example.net"))
    assert initial_sni(bytes(packet)) == "tag.example.net"
    packet[-1] ^= 0xFF
    assert initial_sni(bytes(packet)) == "tag.example.net"


class _CountingGcm:
    """AES-GCM that counts which of its calls the parser makes."""

    calls: ClassVar[list[str]] = []

    def __init__(self, key: bytes) -> None:
        self._gcm = AESGCM(key)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        self.calls.append("decrypt")
        return self._gcm.decrypt(nonce, data, aad)

    def encrypt(self, nonce: bytes, data: bytes, aad: None) -> bytes:
        self.calls.append("first byte" if len(data) == 1 else "keystream")
        return self._gcm.encrypt(nonce, data, aad)


@pytest.fixture
def counted() -> Iterator[list[str]]:
    """The calls the parser makes to AES-GCM and to the header-protection context maker, from fresh
    DCID state and the default guess of a new connection's numbering."""
    made = _CountingGcm.calls
    made.clear()
    ecb = quic._ecb_maker()

    def counting_ecb(key: bytes) -> object:
        made.append("ecb")
        return ecb(key)

    quic._protection.cache_clear()  # its contexts were made by the real AES-GCM
    with patch.object(quic, "_aead", lambda: (_CountingGcm, InvalidTag, UnsupportedAlgorithm)), \
            patch.object(quic, "_ecb_maker", lambda: counting_ecb), patch.object(quic, "_FIRST", (1, 0)):
        yield made
    quic._protection.cache_clear()


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
@pytest.mark.parametrize("pn_len", [1, 2, 4])
def test_quic_whole_packet_opens_with_one_aead_call(counted: list[str], version: int, pn_len: int) -> None:
    """A whole Initial whose number is not the guessed one is opened by GCM with its unmasked header
    as the associated data (the tag verifies: no keystream pass); a corrupted one falls back to the
    keystream, a cut one goes to it at once, each after one byte of it shows a frame; a server's
    Initial (other keys) stops at that byte."""
    packet = quic_initial("aead.example.net", version=version, pn_len=pn_len, packet_number=(1 << (8 * pn_len - 1)) - 3)
    corrupted = packet[:-1] + bytes((packet[-1] ^ 1,))
    server = bytearray(quic_initial("aead.example.net", dcid=bytes(8), version=version, pn_len=pn_len))
    server[6 : 6 + 8] = RFC_DCID  # another DCID than the one whose keys protect it, as a server's Initial
    for data, calls in ((packet, ["decrypt", "ecb", "decrypt"]), (corrupted, ["decrypt", "ecb", "decrypt",
                        "first byte", "keystream"]), (packet[:600], ["ecb", "first byte", "keystream"])):
        counted.clear()
        quic._protection.cache_clear()
        with patch.object(quic, "_FIRST", (1, 0)):
            assert initial_sni(data) == "aead.example.net"
        assert counted == calls
    counted.clear()
    assert quic.initial_crypto(bytes(server)) == (b"", [])
    assert counted[0] == "decrypt" and counted[-2:] == ["decrypt", "first byte"]  # the guess, then unmasked


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_quic_guessed_number_opens_without_header_protection(counted: list[str], version: int) -> None:
    """A new connection's first Initial under the usual numbering (number 0 in one byte), and each of
    its later ones (the number after), open with one GCM call and no header-protection context; a
    connection numbered otherwise pays the context once, and the next new connection is guessed with
    its numbering."""
    for number in range(3):
        assert initial_sni(quic_initial("guess.example.net", version=version, packet_number=number)) == \
            "guess.example.net"
    assert counted == ["decrypt"] * 3
    counted.clear()
    other = bytes(range(8))
    for number in (7, 8):
        assert initial_sni(quic_initial("other.example.net", dcid=other, version=version, pn_len=2,
                                        packet_number=number)) == "other.example.net"
    assert counted == ["decrypt", "ecb", "decrypt", "decrypt"]  # the miss, the context, the hit of number 8
    counted.clear()
    assert initial_sni(quic_initial("next.example.net", dcid=bytes(8), version=version, pn_len=2,
                                    packet_number=7)) == "next.example.net"
    assert counted == ["decrypt"]
    counted.clear()
    corrupted = bytearray(quic_initial("bad.example.net", dcid=bytes(7), version=version, pn_len=2, packet_number=7))
    corrupted[-1] ^= 1
    assert initial_sni(bytes(corrupted)) == "bad.example.net"
    assert counted == ["decrypt", "ecb", "first byte", "keystream"]  # the unmasked number was the one tried


def test_quic_reserved_bits_fail_the_guess(counted: list[str]) -> None:
    """A header whose reserved bits are set (a protocol violation the guess does not assume) is
    unmasked and opened as before."""
    frames = RFC_FRAMES[:-100]
    header = bytearray(_header(QUIC_V1, 1 + len(frames) + 16))
    header[0] |= 0x0C
    packet = quic_protect_initial(bytes(header), frames, RFC_DCID, QUIC_V1)
    assert initial_sni(packet) == "example.com"
    assert counted == ["decrypt", "ecb", "decrypt"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 3, 4]), st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3, 4]),
       st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 1300))
def test_quic_guess_changes_nothing(pn_len: int, number: int, guess_len: int, guess: int, corrupt: bool,
                                    cut: int) -> None:
    """Whatever numbering is guessed, a packet reads as it does with its number unmasked first: whole,
    corrupted or cut."""
    number &= (1 << (8 * pn_len)) - 1
    guess &= (1 << (8 * guess_len)) - 1
    packet = bytearray(quic_initial("any.example.net", pn_len=pn_len, packet_number=number))
    packet[-1] ^= corrupt
    data = bytes(packet[: max(cut, 60)])
    quic._protection.cache_clear()
    with patch.object(quic, "_FIRST", (guess_len, guess)):
        got = quic.initial_crypto(data)
    quic._protection.cache_clear()
    with patch.object(quic, "_FIRST", (pn_len, (number + 1) & ((1 << (8 * pn_len)) - 1))):
        expected = quic.initial_crypto(data)  # a guess wrong by one: unmasked first
    assert got == expected
    quic._protection.cache_clear()


def test_quic_connection_keys_made_once() -> None:
    """A connection's later Initials (a hello split over two, a retransmission) reuse the contexts
    of its first: the key derivation runs once per DCID."""
    quic._protection.cache_clear()
    first, second = quic_initial("once.example.net", packet_number=0), quic_initial("once.example.net", packet_number=1)
    with patch.object(quic, "_client_pads", wraps=quic._client_pads) as derive:
        assert initial_sni(first) == initial_sni(second) == "once.example.net"
    assert derive.call_count == 1


def _header(version: int, length: int, pn: bytes = b"\x00", dcid: bytes = RFC_DCID) -> bytes:
    type_bits = 0x10 if version == QUIC_V2 else 0x00
    return (bytes((0xC0 | type_bits | (len(pn) - 1),)) + version.to_bytes(4, "big") + bytes((len(dcid),)) + dcid
            + b"\x00\x00" + (0x4000 | length).to_bytes(2, "big") + pn)


def _packet(frames: bytes, version: int = QUIC_V1) -> bytes:
    """A client Initial carrying arbitrary frames, padded to 1200 bytes."""
    frames += bytes(1200 - 19 - 16 - len(frames))
    return quic_protect_initial(_header(version, 1 + len(frames) + 16), frames, RFC_DCID, version)


def _crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + (0x80000000 | offset).to_bytes(4, "big") + (0x4000 | len(data)).to_bytes(2, "big") + data


HELLO = tls_client_hello("split.example.com")[5:]


def test_quic_crypto_frames_reassembled_in_any_order() -> None:
    """Clients split the ClientHello into shuffled, overlapping CRYPTO frames between PING/PADDING/ACK."""
    frames = (_crypto(300, HELLO[300:]) + b"\x01\x00\x00" + _crypto(100, HELLO[100:310]) + b"\x01"
              + b"\x02\x05\x00\x01\x00\x01\x00" + _crypto(0, HELLO[:100])  # ACK: 1 extra range
              + b"\x03\x05\x40\x10\x00\x00\x00\x01\x02")  # ACK_ECN: no extra range, 3 counts
    assert initial_sni(_packet(frames)) == "split.example.com"
    assert initial_sni(_packet(frames, QUIC_V2)) == "split.example.com"


@pytest.mark.parametrize("frames", [
    _crypto(1, HELLO),  # does not start at offset 0
    _crypto(0, HELLO[:50]) + _crypto(60, HELLO[60:]),  # gap
    b"\x1c" + _crypto(0, HELLO),  # unknown (CONNECTION_CLOSE) frame ends the parse
    b"\x01" * MAX_FRAMES + _crypto(0, HELLO),  # past the frame budget
    b"\x02\x05\x00\xbf\xff\xff\xff\x00" + _crypto(0, HELLO),  # ACK claiming 2**30 ranges eats the rest
    _crypto(0, tls_server_hello()[5:]),  # not a ClientHello
    b"",
])
def test_quic_frames_without_sni(frames: bytes) -> None:
    assert initial_sni(_packet(frames)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 255), st.booleans())
def test_quic_first_frame_shortcut_changes_nothing(frames: bytes, first: int, hello: bool) -> None:
    """Rejecting a packet whose first decrypted byte is no frame `_crypto_chunks` takes gives what
    decrypting and parsing it all would (the shortcut disabled)."""
    packet = _packet(bytes((first,)) + frames + (_crypto(0, HELLO) if hello else b""))
    with patch.object(quic, "_FIRST_FRAMES", frozenset(range(256))):
        expected = initial_sni(packet)
    assert initial_sni(packet) == expected


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**20), st.binary(max_size=60), st.integers(0, 40), st.binary(max_size=3), st.integers(1, 200))
def test_quic_one_crypto_frame_shortcut_changes_nothing(offset: int, data: bytes, padding: int, junk: bytes,
                                                        cut: int) -> None:
    """A plaintext of one CRYPTO frame then PADDING is read without the frame loop; a PING in
    front (which adds no chunk) makes the loop read it, and both must agree, cut or not."""
    plain = (_crypto(offset, data) + bytes(padding) + junk)[:cut]
    assert quic._crypto_chunks(plain) == quic._crypto_chunks(b"\x01" + plain)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=10), st.integers(-2, 11))
def test_quic_varint_short_forms_agree_with_the_rfc_decode(data: bytes, pos: int) -> None:
    """The one- and two-byte shortcuts of `_varint` give what RFC 9000 16's generic decode gives,
    cut or whole."""
    expected: tuple[int, int] = (0, -1)
    if 0 <= pos < len(data) and pos + (size := 1 << (data[pos] >> 6)) <= len(data):
        expected = int.from_bytes(data[pos : pos + size], "big") & ((1 << (8 * size - 2)) - 1), pos + size
    assert quic._varint(data, pos) == expected


def _varint_of(value: int, width: int) -> bytes:
    """`value` as a QUIC varint of `width` bytes (RFC 9000 16: longer forms than needed are allowed)."""
    return (value | (width.bit_length() - 1) << (8 * width - 2)).to_bytes(width, "big")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=70), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4, 8]), st.integers(0, 300),
       st.integers(0, 700))
def test_quic_header_fields_in_any_varint_form(token: bytes, token_width: int, length_width: int, size: int,
                                               cut: int) -> None:
    """The token length and Length an Initial usually carries (one byte, two bytes) are read inline,
    other forms by the generic decode: every form gives the packet end RFC 9000's decode gives, cut
    or whole, and a whole packet its CRYPTO data."""
    frames = quic_crypto(0, HELLO[:size])
    length = 1 + len(frames) + 16
    if len(token) >= 1 << (8 * token_width - 2) or length >= 1 << (8 * length_width - 2):
        return
    header = (b"\xc0" + QUIC_V1.to_bytes(4, "big") + bytes((len(RFC_DCID),)) + RFC_DCID + b"\x00"
              + _varint_of(len(token), token_width) + token + _varint_of(length, length_width) + b"\x00")
    packet = quic_protect_initial(header, frames, RFC_DCID)
    data = packet[:cut] if cut < len(packet) else packet
    _, _, chunks, end = quic._initial_packet(data, 0, None)
    token_len, at = quic._varint(data, 6 + len(RFC_DCID) + 1)
    declared, pn_offset = quic._varint(data, at + token_len) if at >= 0 else (0, -1)
    whole = pn_offset >= 0 and declared >= 4 + quic.SAMPLE and pn_offset + 4 + quic.SAMPLE <= len(data)
    assert end == (pn_offset + declared if whole else -1)
    if data is packet and size:
        assert chunks == [(0, HELLO[:size])]


def test_quic_rejects_other_packets() -> None:
    good = bytearray(quic_initial("example.com"))
    assert initial_sni(bytes(good)) == "example.com"
    cases = {
        "version negotiation": good[:1] + bytes(4) + good[5:],
        "unknown version": good[:1] + b"\xff\x00\x00\x1d" + good[5:],
        "v1 Handshake type": bytes((good[0] | 0x20,)) + good[1:],
        "v2 version with v1 Initial bits": good[:1] + QUIC_V2.to_bytes(4, "big") + good[5:],
        "short header": bytes((good[0] & 0x7F,)) + good[1:],
        "DCID too long": good[:5] + b"\x15" + good[6:],
        "header only": good[:24],
        "length below sample": good[:16] + b"\x40\x10" + good[18:],
        "token overruns": good[:15] + b"\x44\xff" + good[17:],
        "empty": b"",
    }
    for name, packet in cases.items():
        assert initial_sni(bytes(packet)) is None, name


# --- TLS over TCP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sni", SNIS)
def test_client_hello_sni(sni: str) -> None:
    record = tls_client_hello(sni.upper())
    assert client_hello_sni(record) == sni
    assert client_hello_sni(memoryview(record)) == sni
    assert handshake_sni(record[5:]) == sni


def test_client_hello_idna_name_is_its_ascii_form() -> None:
    assert client_hello_sni(tls_client_hello("bücher.example")) == "xn--bcher-kva.example"


def test_truncated_client_hello() -> None:
    """Every cut either loses the SNI (before the extension ends) or keeps it; nothing else."""
    record = tls_client_hello("cut.example.com")
    sni_end = record.index(b"cut.example.com") + len("cut.example.com")
    for cut in range(len(record) + 1):
        assert client_hello_sni(record[:cut]) == ("cut.example.com" if cut >= sni_end else None), cut


def _hello(extensions: bytes, session_id: bytes = b"", ext_len: int | None = None, hs_len: int | None = None,
           record_type: int = 0x16, version: int = 0x0301) -> bytes:
    """A minimal ClientHello record with the given raw extension bytes and optionally lying lengths."""
    body = (b"\x03\x03" + bytes(32) + bytes((len(session_id),)) + session_id + b"\x00\x02\x13\x01\x01\x00"
            + struct.pack("!H", len(extensions) if ext_len is None else ext_len) + extensions)
    message = b"\x01" + (len(body) if hs_len is None else hs_len).to_bytes(3, "big") + body
    return struct.pack("!BHH", record_type, version, len(message)) + message


def _sni_ext(*entries: tuple[int, bytes], list_len: int | None = None) -> bytes:
    names = b"".join(struct.pack("!BH", kind, len(name)) + name for kind, name in entries)
    body = struct.pack("!H", len(names) if list_len is None else list_len) + names
    return struct.pack("!HH", 0, len(body)) + body


GREASE = struct.pack("!HH", 0x0A0A, 1) + b"\x00"


@pytest.mark.parametrize(("record", "expected"), [
    (_hello(_sni_ext((0, b"ok.example"))), "ok.example"),
    (_hello(GREASE + _sni_ext((0, b"ok.example")) + GREASE, session_id=bytes(32)), "ok.example"),
    (_hello(_sni_ext((1, b"other"), (0, b"second.example"))), "second.example"),
    (_hello(_sni_ext((0, b"a" * 253))), "a" * 253),
    (_hello(GREASE), None),  # no server_name
    (_hello(b""), None),
    (_hello(_sni_ext((0, b""))), None),  # zero-length name
    (_hello(_sni_ext((0, b"a" * 254))), None),
    (_hello(_sni_ext((0, "exämple.com".encode()))), None),
    (_hello(_sni_ext((0, b"bad name.com"))), None),
    (_hello(_sni_ext((0, b"trailing.dot."))), None),
    (_hello(_sni_ext((0, b"empty..label"))), None),
    (_hello(_sni_ext((0, b"nul\x00.com"))), None),
    (_hello(_sni_ext((0, b"ok.example"), list_len=200)), None),  # name list overruns the extension
    (_hello(struct.pack("!HH", 0, 200) + _sni_ext((0, b"ok.example"))[4:]), None),  # extension overruns list
    (_hello(_sni_ext((0, b"ok.example")), ext_len=300), None),  # extension list overruns the message
    (_hello(_sni_ext((0, b"ok.example")), hs_len=40), None),  # message shorter than its fields
    (_hello(_sni_ext((0, b"ok.example")), session_id=bytes(33)), None),
    (_hello(_sni_ext((0, b"ok.example")), record_type=0x17), None),
    (_hello(_sni_ext((0, b"ok.example")), version=0x0200), None),
    (tls_server_hello(), None),
])
def test_client_hello_malformed(record: bytes, expected: str | None) -> None:
    assert client_hello_sni(record) == expected


# --- server certificate ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.example")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def test_server_certificate_sha1(cert_der: bytes) -> None:
    flight = tls_server_certificate_flight(cert_der)
    assert server_certificate_sha1(flight) == hashlib.sha1(cert_der).hexdigest()
    assert server_certificate_sha1(memoryview(flight)) == hashlib.sha1(cert_der).hexdigest()


def test_server_certificate_across_records(cert_der: bytes) -> None:
    """One record holding both messages, or the Certificate message split over two records."""
    flight = tls_server_certificate_flight(cert_der)
    hello_len = struct.unpack("!H", flight[3:5])[0]
    hello, cert_msg = flight[5 : 5 + hello_len], flight[10 + hello_len :]
    joined = struct.pack("!BHH", 0x16, 0x0303, len(hello) + len(cert_msg)) + hello + cert_msg
    split = (flight[: 5 + hello_len] + struct.pack("!BHH", 0x16, 0x0303, 100) + cert_msg[:100]
             + struct.pack("!BHH", 0x16, 0x0303, len(cert_msg) - 100) + cert_msg[100:])
    for payload in (joined, split):
        assert server_certificate_sha1(payload) == hashlib.sha1(cert_der).hexdigest()


def test_server_certificate_absent_or_cut(cert_der: bytes) -> None:
    flight = tls_server_certificate_flight(cert_der)
    assert server_certificate_sha1(flight[:-1]) is None
    assert server_certificate_sha1(flight[: len(flight) // 2]) is None
    assert server_certificate_sha1(tls_server_hello()) is None
    assert server_certificate_sha1(tls_client_hello("example.com")) is None
    assert server_certificate_sha1(tls_server_certificate_flight(b"not der")) is None
    assert server_certificate_sha1(b"\x17\x03\x03\x00\x05hello" + flight) is None  # must start the segment


# --- fuzzing: never raise --------------------------------------------------------------------------


_FUZZ = settings(deadline=None, max_examples=300)
_QUIC_HEAD = bytes.fromhex("c000000001088394c8f03e515708")
_QUIC_GOOD = quic_initial("fuzz.example")
_TLS_GOOD = tls_client_hello("fuzz.example")


def _result_ok(value: str | None) -> bool:
    return value is None or (isinstance(value, str) and 0 < len(value) <= 253)


@_FUZZ
@given(st.binary(max_size=1500))
def test_fuzz_random_bytes(data: bytes) -> None:
    for payload in (data, _QUIC_HEAD + data, b"\x16\x03\x01" + data):
        assert _result_ok(client_hello_sni(payload))
        assert _result_ok(initial_sni(payload))
        digest = server_certificate_sha1(payload)
        assert digest is None or len(digest) == 40


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, 1199), st.integers(0, 255)), max_size=8), st.integers(0, 1200))
def test_fuzz_mutated_packets(edits: list[tuple[int, int]], cut: int) -> None:
    """Edits to ciphertext are edits to plaintext (CTR is malleable), so this fuzzes the frame parser."""
    quic, tls = bytearray(_QUIC_GOOD), bytearray(_TLS_GOOD)
    for pos, value in edits:
        quic[pos] = value
        tls[pos % len(tls)] = value
    assert _result_ok(initial_sni(bytes(quic[:cut])))
    assert _result_ok(client_hello_sni(bytes(tls[:cut])))
    assert _result_ok(handshake_sni(bytes(tls[5:cut])))


@_FUZZ
@given(st.lists(st.tuples(st.integers(19, 22) | st.integers(0, 1199), st.integers(0, 255)), max_size=4),
       st.integers(0, 1200), st.just(_QUIC_GOOD[6:14]) | st.binary(min_size=8, max_size=8))
def test_quic_unverified_first_byte_shortcut_changes_nothing(edits: list[tuple[int, int]], cut: int,
                                                             dcid: bytes) -> None:
    """A packet whose tag fails (edited, cut, or protected with another DCID's keys) is read past
    its first byte only when that byte starts a frame; reading it all (the shortcut disabled)
    gives the same chunks. Edits at 19-22 change the first plaintext bytes (GCM is malleable)."""
    packet = bytearray(_QUIC_GOOD)
    packet[6:14] = dcid
    for pos, value in edits:
        packet[pos] = value
    data = bytes(packet[:cut])
    with patch.object(quic, "_FIRST_FRAMES", frozenset(range(256))):
        expected = quic.initial_crypto(data)
    assert quic.initial_crypto(data) == expected
