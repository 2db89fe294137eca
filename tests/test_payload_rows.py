"""`payload_rows` (the batch's selection of rows for the payload parsers, read with one record
gather per row) against the selection rules applied to one packet at a time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.batch import parse_batch
from workers.payload import payload_rows
from workers.protocols.quic import QUIC_V1, QUIC_V2

_STARTS = (b"GET /", b"POST", b"HTTP/1.1", b"GEX", b"\x16\x03\x01\x00\x20\x01", b"\x16\x03\x03\x00\x20\x02",
           b"\x16\x03", b"\xc3" + QUIC_V1.to_bytes(4, "big"), b"\xd1" + QUIC_V2.to_bytes(4, "big"),
           b"\xc3" + QUIC_V2.to_bytes(4, "big"), b"")
_REQUESTS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"CONN", b"PATC", b"TRAC", b"PROP", b"HTTP")


def _frame(tcp: bool, sport: int, dport: int, payload: bytes, cut: int) -> bytes:
    """Ethernet, IPv4, then TCP (20-byte header) or UDP; `cut` bytes dropped from the end."""
    l4 = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
          + (bytes(8) + b"\x50\x18" + bytes(6) if tcp else (8 + len(payload)).to_bytes(2, "big") + bytes(2)))
    total = 20 + len(l4) + len(payload)
    ip = b"\x45\x00" + total.to_bytes(2, "big") + bytes(5) + (b"\x06" if tcp else b"\x11") + bytes(2)
    frame = bytes(12) + b"\x08\x00" + ip + bytes((10, 0, 0, 1, 10, 0, 0, 2)) + l4 + payload
    return frame[:len(frame) - cut]


def _wanted(tcp: bool, sport: int, dport: int, payload: bytes, certificates: bool) -> bool:
    n, port53 = len(payload), 53 in (sport, dport)
    if not n:
        return False
    if not tcp:
        quic = n >= 64 and ((payload[0] & 0xF0 == 0xC0 and payload[1:5] == QUIC_V1.to_bytes(4, "big"))
                            or (payload[0] & 0xF0 == 0xD0 and payload[1:5] == QUIC_V2.to_bytes(4, "big")))
        return port53 or quic
    tls = n >= 6 and payload[0] == 0x16 and (payload[5] == 1 or (payload[5] == 2 and certificates))
    return (port53 and n >= 14) or (n >= 4 and payload[:4] in _REQUESTS) or tls


_packet = st.tuples(st.booleans(), st.sampled_from((53, 443, 80, 40000)), st.sampled_from((53, 443, 80, 40001)),
                    st.builds(lambda start, tail: start + tail, st.sampled_from(_STARTS),
                              st.sampled_from((*range(12), *range(52, 66))).map(lambda k: bytes(range(k)))),
                    st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_packet, min_size=1, max_size=12), st.booleans())
def test_selection_matches_per_packet_rules(packets: list, certificates: bool) -> None:
    frames = [_frame(*packet) for packet in packets]
    caplen = np.array([len(f) for f in frames], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
    meta = np.stack([np.zeros(len(frames), np.uint32), np.zeros(len(frames), np.uint32), offsets, caplen], axis=1)
    data = np.frombuffer(b"".join(frames), np.uint8)
    got = payload_rows(parse_batch(meta, data, 1), certificates).tolist()
    # a cut frame keeps the length its IP header claims: what is missing of the payload is not there
    want = [i for i, (tcp, sport, dport, payload, cut) in enumerate(packets)
            if _wanted(tcp, sport, dport, payload[:max(len(payload) - cut, 0)], certificates)]
    assert got == want
