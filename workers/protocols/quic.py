"""SNI of a QUIC client Initial packet (spec 2.8; RFC 9000, 9001, 9369).

Initial packets are protected with keys anyone can derive from the Destination Connection ID, so
a passive sensor can read the ClientHello. A whole packet is opened with one AES-GCM call, most
under a guessed packet number, which spares the header-protection cipher (`_open`); one whose
tag does not verify, or that the capture snap length cut, is read with the GCM keystream and no tag
check, as the spec asks (the plaintext is the same bytes GCM would return, and a cut datagram still
yields its first frames), once one byte of keystream shows that it starts with a frame (a server's
Initial, under keys the sensor cannot derive, almost never does). Work is bounded: at most MAX_COALESCED Initials of a
datagram are read, of each at most MAX_DECRYPT bytes decrypted and MAX_FRAMES frames parsed, and
any malformed field ends the parse. A ClientHello spread over several datagrams is reassembled by
the aggregator (`engine/quicstreams.py`) from the CRYPTO chunks `initial_crypto` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache
from hashlib import sha256
from types import ModuleType
from typing import TYPE_CHECKING

from workers.protocols.tls import handshake_sni

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

QUIC_V1, QUIC_V2 = 0x00000001, 0x6B3343CF
MAX_DECRYPT = 2048
MAX_FRAMES = 64  # clients split a ClientHello into a few CRYPTO frames among PING/PADDING, not hundreds
MAX_ACK_RANGES = 16
MAX_COALESCED = 4  # Initials in one datagram (RFC 9000 12.2); clients send one or two
MAX_CID = 20  # RFC 9000 17.2: longer connection IDs are not QUIC v1/v2
SAMPLE = 16
TAG = 16

# version -> (initial salt, HKDF label prefix, long-header type bits of Initial)
_VERSIONS = {
    QUIC_V1: (bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), b"quic ", 0b00),  # RFC 9001 5.2
    QUIC_V2: (bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), b"quicv2 ", 0b01),  # RFC 9369 3.3
}
# the version field as sent -> (version, long-header type bits of Initial)
_WIRE_VERSIONS = {version.to_bytes(4, "big"): (version, bits) for version, (_, _, bits) in _VERSIONS.items()}
_FRAME_PADDING, _FRAME_PING, _FRAME_ACK, _FRAME_ACK_ECN, _FRAME_CRYPTO = 0x00, 0x01, 0x02, 0x03, 0x06
_ZEROS = bytes(MAX_DECRYPT)  # plaintext whose GCM encryption is the keystream
_FIRST_FRAMES = frozenset((_FRAME_PADDING, _FRAME_PING, _FRAME_ACK, _FRAME_ACK_ECN, _FRAME_CRYPTO))  # `_crypto_chunks`


def _label_info(label: bytes, length: int) -> bytes:
    """The HKDF-Expand-Label info (RFC 8446 7.1, empty context) plus the counter byte of the one
    HMAC block that covers `length` <= 32."""
    full = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00\x01"


_IPAD, _OPAD = bytes(b ^ 0x36 for b in range(256)), bytes(b ^ 0x5C for b in range(256))  # RFC 2104 key pads


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 blocks of a key of at most 64 bytes (RFC 2104)."""
    block = key + bytes(64 - len(key))
    return block.translate(_IPAD), block.translate(_OPAD)


def _hmac(pads: tuple[bytes, bytes], message: bytes) -> bytes:
    """HMAC-SHA256 as two one-shot hashes of a pad and its message: cheaper here than `cryptography`'s
    HMAC objects (4.4 against 5.2 µs for a new DCID's key and iv), or than copying keyed hash states."""
    return sha256(pads[1] + sha256(pads[0] + message).digest()).digest()


# version -> (salt pads, infos of the client secret and of key, iv and hp)
_DERIVATION = {version: (_pads(salt), _label_info(b"client in", 32), _label_info(prefix + b"key", 16),
                         _label_info(prefix + b"iv", 12), _label_info(prefix + b"hp", 16))
               for version, (salt, prefix, _) in _VERSIONS.items()}


def _client_pads(dcid: bytes, version: int) -> tuple[bytes, bytes]:
    """The HMAC pads of a DCID's client Initial secret: key, iv and hp are each one HMAC under them
    (RFC 9001 5.2), so the hp key, which most packets never need, is left for later."""
    salt, client_info = _DERIVATION[version][:2]
    return _pads(_hmac(_pads(_hmac(salt, dcid)), client_info))  # HKDF-Extract, then the client secret


def initial_keys(dcid: bytes, version: int = QUIC_V1) -> tuple[bytes, bytes, bytes]:
    """Client Initial (key, iv, hp) for a DCID; `version` must be QUIC_V1 or QUIC_V2."""
    key_info, iv_info, hp_info = _DERIVATION[version][2:]
    client = _client_pads(dcid, version)
    return _hmac(client, key_info)[:16], _hmac(client, iv_info)[:12], _hmac(client, hp_info)[:16]


@cache
def _ciphers() -> ModuleType:
    """`cryptography`'s cipher module, imported at the first Initial: a sensor start (its fork
    server imports what the workers use) paid 12 ms for it, and most short captures hold no QUIC."""
    from cryptography.hazmat.primitives import ciphers  # noqa: PLC0415 - deferred: see the docstring

    return ciphers


@cache
def _aead() -> tuple[type[AESGCM], type[Exception], type[Exception]]:
    """AES-GCM, its tag error and the unsupported-algorithm error, deferred with `_ciphers`."""
    from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    return AESGCM, InvalidTag, UnsupportedAlgorithm


def warm() -> None:
    """Import the cipher modules now (a worker does before it reports ready), not at the first
    Initial of a capture."""
    _ecb_maker()
    _aead()


@cache
def _ecb_maker() -> Callable[[bytes], CipherContext]:
    """What makes an AES-ECB encryptor for a key: `cryptography`'s binding straight, a third of the
    cost of the public `Cipher(...).encryptor()` (which checks and wraps its arguments in Python
    first), when this version has it and it encrypts as the public path does; else the public path.
    The binding gets an AES object made without its Python key check (the binding checks the size
    itself; the keys given are the derivation's 16 bytes)."""
    c = _ciphers()

    def public(key: bytes) -> CipherContext:
        return c.Cipher(c.algorithms.AES(key), c.modes.ECB()).encryptor()

    try:
        from cryptography.hazmat.bindings._rust import openssl  # noqa: PLC0415 - private: checked below

        create, ecb, aes = openssl.ciphers.create_encryption_ctx, c.modes.ECB(), c.algorithms.AES
        new = aes.__new__

        def direct(key: bytes) -> CipherContext:
            algorithm = new(aes)
            algorithm.key = key
            return create(algorithm, ecb)

        probe = bytes(range(16))
        if direct(probe).update(probe) == public(probe).update(probe):
            return direct
    except (ImportError, AttributeError, TypeError, ValueError, _aead()[2]):  # another binding layout or API
        pass
    return public


class _Protection:
    """A DCID's client Initial protection: the AES-GCM of its packet key, its IV as an integer, and
    what its header-protection key comes from: that key and its AES-ECB context (together a third of
    a new Initial's key setup) are made only when a packet's number must be unmasked, and most
    packets open under a guessed number instead.

    The guess for the next packet of the DCID is the one after its last opened; a new DCID's is the
    numbering the last new connection's first packet had (`_FIRST`), clients being consistent."""

    __slots__ = ("gcm", "iv", "_client", "_hp_info", "_ecb", "pn_len", "pn", "fresh")

    def __init__(self, dcid: bytes, version: int) -> None:
        key_info, iv_info, self._hp_info = _DERIVATION[version][2:]
        client = self._client = _client_pads(dcid, version)
        self.gcm = _aead()[0](_hmac(client, key_info)[:16])
        self.iv, self._ecb = int.from_bytes(_hmac(client, iv_info)[:12], "big"), None
        self.pn_len, self.pn = _FIRST
        self.fresh = True

    def mask(self, sample: bytes) -> bytes:
        """The header-protection mask of a sample (RFC 9001 5.4.3); ECB keeps no state between blocks,
        so one context serves all the DCID's packets."""
        if self._ecb is None:
            self._ecb = _ecb_maker()(_hmac(self._client, self._hp_info)[:16])
        return self._ecb.update(sample)

    def opened(self, pn_len: int, pn: int) -> None:
        """A packet opened (its tag verified) with this number: guess the next one after it."""
        global _FIRST  # noqa: PLW0603 - the guess for new connections, learned from their first packets
        if self.fresh:
            _FIRST, self.fresh = (pn_len, pn), False
        self.pn_len, self.pn = pn_len, (pn + 1) & ((1 << (8 * pn_len)) - 1)


_FIRST = (1, 0)  # (number length, number) of a new connection's first Initial: RFC 9000 starts at 0


@lru_cache(maxsize=512)  # a client repeats its DCID over retransmitted and follow-up Initials
def _protection(dcid: bytes, version: int) -> _Protection:
    """The protection of a DCID's client Initials, kept so a connection's later Initials skip the key
    derivation and the cipher contexts."""
    return _Protection(dcid, version)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of a QUIC variable-length integer; next position -1 when cut. The one-
    and two-byte forms (lengths, offsets and frame fields of an Initial) skip the generic decode."""
    if not 0 <= pos < len(data):
        return 0, -1
    first = data[pos]
    if first < 0x40:
        return first, pos + 1
    if first < 0x80:
        return ((first & 0x3F) << 8 | data[pos + 1], pos + 2) if pos + 2 <= len(data) else (0, -1)
    end = pos + (1 << (first >> 6))
    if end > len(data):
        return 0, -1
    return int.from_bytes(data[pos:end], "big") & ((1 << (8 * (end - pos) - 2)) - 1), end


def _crypto_chunks(plain: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of the CRYPTO frames of a decrypted Initial, in packet order."""
    if plain[:1] == b"\x06":  # the usual Initial: one CRYPTO frame, then PADDING to the end
        if len(plain) > 3 and plain[1] < 0x40 and 0x40 <= plain[2] < 0x80:  # a small offset, a two-byte size
            offset, size, pos = plain[1], (plain[2] & 0x3F) << 8 | plain[3], 4
        else:
            offset, pos = _varint(plain, 1)
            size, pos = _varint(plain, pos)
        rest = min(pos + size, len(plain))
        if pos >= 0 and plain.endswith(_ZEROS[: len(plain) - rest]):  # a memcmp, not a count or a copy
            return [(offset, plain[pos:rest])] if size else []
    chunks: list[tuple[int, bytes]] = []
    pos, end = 0, len(plain)
    for _ in range(MAX_FRAMES):
        if not 0 <= pos < end:
            break
        frame = plain[pos]
        if frame == _FRAME_PADDING:
            pos = end - len(plain[pos:].lstrip(b"\x00"))
        elif frame == _FRAME_PING:
            pos += 1
        elif frame in (_FRAME_ACK, _FRAME_ACK_ECN):
            _, pos = _varint(plain, pos + 1)  # largest acknowledged
            _, pos = _varint(plain, pos)  # ack delay
            ranges, pos = _varint(plain, pos)
            _, pos = _varint(plain, pos)  # first range
            if ranges > MAX_ACK_RANGES:
                break
            for _ in range(2 * ranges + (3 if frame == _FRAME_ACK_ECN else 0)):  # gap, length; ECN counts
                _, pos = _varint(plain, pos)
        elif frame == _FRAME_CRYPTO:
            offset, pos = _varint(plain, pos + 1)
            size, pos = _varint(plain, pos)
            if pos < 0:
                break
            if size:
                chunks.append((offset, plain[pos : pos + size]))  # a cut last frame keeps what it has
            pos += size
        else:
            break
    return chunks


def crypto_stream(chunks: list[tuple[int, bytes]]) -> bytes:
    """Contiguous CRYPTO data from offset 0, frames taken in any order (clients split and shuffle)."""
    if len(chunks) == 1 and not chunks[0][0]:  # the usual Initial: the whole hello, or its start, in one frame
        return chunks[0][1]
    stream = b""
    for offset, data in sorted(chunks, key=lambda chunk: chunk[0]):
        if offset > len(stream):
            break
        stream += data[len(stream) - offset :]
    return stream


def _initial_packet(data: bytes, pos: int, dcid: bytes | None) -> tuple[bytes, bytes, list[tuple[int, bytes]], int]:
    """(DCID, SCID, CRYPTO chunks, end) of the client Initial at data[pos:]; end -1 when there is none
    (or its DCID is not `dcid`: RFC 9000 12.2, coalesced packets share it). A client's empty token
    and its two-byte Length are read inline, other forms by `_varint`."""
    n = len(data)
    none: tuple[bytes, bytes, list[tuple[int, bytes]], int] = (b"", b"", [], -1)
    if n < pos + 7 or not data[pos] & 0x80:
        return none
    first = data[pos]
    params = _WIRE_VERSIONS.get(data[pos + 1 : pos + 5])
    if params is None or (first >> 4) & 3 != params[1]:
        return none
    dcid_len = data[pos + 5]
    cid_end = pos + 6 + dcid_len
    if dcid_len > MAX_CID or cid_end >= n or data[cid_end] > MAX_CID:
        return none
    packet_dcid = data[pos + 6 : cid_end]
    if dcid is not None and packet_dcid != dcid:
        return none
    at = cid_end + 1 + data[cid_end]
    scid = data[cid_end + 1 : at]
    if at < n and data[at] < 0x40:  # token length, one byte (a client's Initial carries none or a short one)
        at += 1 + data[at]
    else:
        token_len, at = _varint(data, at)
        if at < 0:
            return none
        at += token_len
    if at + 2 <= n and 0x40 <= data[at] < 0x80:  # Length, two bytes (a padded Initial's)
        length, pn_offset = (data[at] & 0x3F) << 8 | data[at + 1], at + 2
    else:
        length, pn_offset = _varint(data, at)
    if pn_offset < 0 or length < 4 + SAMPLE or pn_offset + 4 + SAMPLE > n:
        return none
    plain = _open(data, pos, pn_offset, pn_offset + length, _protection(packet_dcid, params[0]))
    if not plain or plain[0] not in _FIRST_FRAMES:
        return none  # the frames would stop at once: wrong keys (a server's Initial) or junk
    return packet_dcid, scid, _crypto_chunks(plain), pn_offset + length


def _open(data: bytes, pos: int, pn_offset: int, packet_end: int, protection: _Protection) -> bytes:
    """The plaintext of the Initial at data[pos:], b"" when there is none to read.

    A whole packet is first opened under the guessed packet number: its tag verifies only when the
    guess is right, and then GCM returns what unmasking the number would have led to. Otherwise the
    number is unmasked and the whole packet opened with one AES-GCM call; one whose tag does not
    verify, or that the capture cut, is read with GCM's keystream alone (counters 2 on; 1 masks the
    tag) once its first byte shows a frame."""
    n, first, gcm, iv = len(data), data[pos], protection.gcm, protection.iv
    guess_len, guess = protection.pn_len, protection.pn
    guessed = (first & 0xF0) | (guess_len - 1)  # the first byte unmasked, reserved bits 0 (RFC 9000 17.2)
    start = pn_offset + guess_len
    if packet_end <= n and start < packet_end - TAG <= start + MAX_DECRYPT:  # whole: opened so below as well
        header = bytes((guessed,)) + data[pos + 1 : pn_offset] + guess.to_bytes(guess_len, "big")
        try:
            plain = gcm.decrypt((iv ^ guess).to_bytes(12, "big"), data[start:packet_end], header)
        except _aead()[1]:
            pass
        else:
            protection.opened(guess_len, guess)
            return plain
    else:
        guessed = -1
    mask = protection.mask(data[pn_offset + 4 : pn_offset + 4 + SAMPLE])
    unmasked, pn_len = first ^ (mask[0] & 0x0F), ((first ^ mask[0]) & 0x03) + 1
    start = pn_offset + pn_len
    packet_number = int.from_bytes(data[pn_offset:start], "big") ^ int.from_bytes(mask[1 : 1 + pn_len], "big")
    end = packet_end - TAG if packet_end <= n else n  # a whole packet ends with the tag; a cut one keeps all
    if end > start + MAX_DECRYPT:
        end = start + MAX_DECRYPT
    if end <= start:
        return b""
    nonce = (iv ^ packet_number).to_bytes(12, "big")
    if packet_end <= n and end == packet_end - TAG and (unmasked, packet_number) != (guessed, guess):  # not tried
        header = bytes((unmasked,)) + data[pos + 1 : pn_offset] + packet_number.to_bytes(pn_len, "big")
        try:
            plain = gcm.decrypt(nonce, data[start:packet_end], header)
        except _aead()[1]:  # not the client keys (a server's Initial) or corrupted: read below
            pass
        else:
            protection.opened(pn_len, packet_number)
            return plain
    if (data[start] ^ gcm.encrypt(nonce, b"\x00", None)[0]) not in _FIRST_FRAMES:
        return b""  # its first byte ends the frames at once: a server's Initial or junk, read no further
    stream = gcm.encrypt(nonce, _ZEROS[: end - start], None)
    return (int.from_bytes(data[start:end], "little") ^ int.from_bytes(stream[: end - start], "little")
            ).to_bytes(end - start, "little")


def initial_crypto(payload: bytes | memoryview) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(client SCID, CRYPTO chunks) of the client Initials coalesced in a UDP payload (at most
    MAX_COALESCED, sharing the first one's DCID); no chunks when it holds none."""
    data = bytes(payload)
    dcid, scid, chunks, pos = _initial_packet(data, 0, None)
    for _ in range(MAX_COALESCED - 1):
        if not 0 < pos < len(data):
            break
        _, _, more, pos = _initial_packet(data, pos, dcid)
        chunks += more
    return scid, chunks


def hello_complete(stream: bytes) -> bool:
    """Whether a CRYPTO stream from offset 0 holds a whole handshake message (nothing more to wait for)."""
    return len(stream) >= 4 and len(stream) >= 4 + int.from_bytes(stream[1:4], "big")


def initial_sni(payload: bytes | memoryview) -> str | None:
    """SNI of the ClientHello in a UDP payload holding QUIC v1/v2 client Initial packets."""
    stream = crypto_stream(initial_crypto(payload)[1])
    return handshake_sni(stream) if stream else None
