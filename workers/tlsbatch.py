"""The SNI of many TLS ClientHellos at once with numpy: `client_hello_sni` for a whole batch.

A ClientHello is a chain of length-prefixed fields: record header, handshake header, session id,
cipher suites, compression methods, then the extension list. The walk below reads them for every
row together (one step per extension, for all rows still walking), checks every length exactly as
`workers.protocols.tls` does, and validates the host names of all rows in one pass over their
bytes, so a hello costs a few list operations in Python. What it does not decide (more extensions
before the SNI than it walks, a server_name list whose first entry is not a host name) is left
to `client_hello_sni`, which has the last word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.batch import Gather
from workers.protocols.tls import CLIENT_HELLO, EXT_SERVER_NAME, HANDSHAKE, MAX_HOSTNAME, MAX_RECORD

MAX_STEPS = 24  # extensions walked before the SNI; a browser sends about 16, a row with more goes slow
MIN_FOUND = 16  # SNIs a step must find for the next to pay (a step costs what the parser takes for about 16)
_SEP = 10  # line break: after each name in the joined text; never valid inside one
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32
_CHAR, _DOT, _END = 1, 2, 3  # byte classes of a lowered host name (0: a byte no host name holds)
_CLASS = np.zeros(256, np.uint8)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789_-":
    _CLASS[_c] = _CHAR
_CLASS[ord(".")] = _DOT


@dataclass(slots=True)
class SniBatch:
    """Positions (into the rows given to `snis`) of the hellos with an SNI, their names, and the
    positions left to `client_hello_sni`; every other position has no SNI."""

    named: np.ndarray
    names: list[str]
    slow: np.ndarray


def snis(data: np.ndarray, off: np.ndarray, length: np.ndarray, min_found: int = MIN_FOUND) -> SniBatch:
    """`client_hello_sni` of the TCP payloads at `off`/`length` (int64 arrays) of the batch buffer;
    extension steps go on while each finds `min_found` SNIs."""
    g = Gather(data)
    msg = off + 5  # the handshake message: the first record's body
    size = g.be16(off + 3)
    avail = np.minimum(length - 5, size)  # what was captured of it
    ok = ((length >= 9) & (g.u8(off) == HANDSHAKE) & (g.u8(off + 1) == 3) & (size <= MAX_RECORD)
          & (avail >= 39) & (g.u8(msg) == CLIENT_HELLO))
    session = g.u8(msg + 38)
    ok &= session <= 32
    end = 4 + (g.u8(msg + 1) << 16 | g.be16(msg + 2))  # declared end of the message
    pos = 39 + session
    ok &= pos + 2 <= avail
    pos += 2 + g.be16(msg + pos)  # cipher suites
    ok &= pos + 1 <= avail
    pos += 1 + g.u8(msg + pos)  # compression methods
    ok &= pos + 2 <= np.minimum(avail, end)
    ext_end = pos + 2 + g.be16(msg + pos)
    ok &= ext_end <= end
    pos += 2
    at, sni_end, slow = _server_name_extension(g, msg, pos, np.minimum(avail, ext_end), ext_end, ok.nonzero()[0],
                                               min_found)
    found = (sni_end <= avail[at]).nonzero()[0]  # an SNI cut short has no name
    at, start, stop = at[found], pos[at][found], sni_end[found]
    first, start, size = _first_entry(g, msg[at] + start, msg[at] + stop)
    slow = np.concatenate((slow, at[first == 1]))  # a first entry of another type: a rare walk for the parser
    host = (first == 0) & (size > 0) & (size <= MAX_HOSTNAME)
    at, start, size = at[host], start[host], size[host]
    names, valid = _host_names(data, start, size)
    if not valid.all():
        keep = valid.tolist()
        names = [name for name, k in zip(names, keep, strict=True) if k]
        at = at[valid]
    return SniBatch(at, names, np.sort(slow))


def _server_name_extension(g: Gather, msg: np.ndarray, pos: np.ndarray, stop: np.ndarray, ext_end: np.ndarray,
                           active: np.ndarray, min_found: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk the extension lists of the `active` rows, one extension per step, to the server_name
    one: (rows that have it, the end of its body, rows left walking). `pos` is left at each found
    body's start. Steps go on while each finds `min_found` SNIs: where a few browsers shuffle
    their extensions, the parser reads the rest for less."""
    rows: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    at = msg[active] + pos[active]  # absolute, as are the ends below
    stop, ext_end = msg[active] + stop[active], msg[active] + ext_end[active]
    for _ in range(MAX_STEPS):
        inside = at + 4 <= stop  # else the list ends: no SNI
        body = at + 4
        body_end = body + g.be16(at + 2)
        go = inside & (body_end <= ext_end)  # an extension longer than its list: no SNI
        hit = go & (g.be16(at) == EXT_SERVER_NAME)
        found = hit.nonzero()[0]
        if found.size:
            rows.append(active[found])
            ends.append(body_end[found])
            pos[active[found]] = body[found] - msg[active[found]]
            go[found] = False
        active, at, stop, ext_end = active[go], body_end[go], stop[go], ext_end[go]
        if found.size < min_found or not active.size:
            break
    none = np.zeros(0, np.int64)
    return (np.concatenate(rows) if rows else none, np.concatenate(ends) - msg[np.concatenate(rows)] if rows
            else none, active)


def _first_entry(g: Gather, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first entry of each server_name list at start..stop (absolute): (0 for a host name,
    1 for another type, -1 for none or a cut one; where its name starts; its size)."""
    list_end = start + 2 + g.be16(start)
    whole = (start + 2 <= stop) & (list_end <= stop) & (start + 5 <= list_end)
    size = g.be16(start + 3)
    whole &= start + 5 + size <= list_end
    kind = np.where(whole, np.minimum(g.u8(start + 2), 1), -1)
    return kind, start + 5, size


def _host_names(data: np.ndarray, start: np.ndarray, size: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The names at `start`/`size` lowered (ASCII letters) from one gather and one decode, and
    whether each is a plain host name (labels of letters, digits, `_` and `-`, joined by dots)."""
    if not start.size:
        return [], np.zeros(0, bool)
    spans = size + 1  # each name, then a line break
    bounds = np.zeros(start.size + 1, np.int64)
    spans.cumsum(out=bounds[1:])
    flat = (start - bounds[:-1]).repeat(spans) + np.arange(bounds[-1])
    buf = _LOWER[data.take(flat, mode="clip")]
    cls = np.empty(bounds[-1] + 1, np.uint8)
    cls[0] = _END  # before the first name: as after a name
    cls[1:] = _CLASS[buf]
    ends = bounds[1:]
    cls[ends] = _END
    buf[ends - 1] = _SEP
    dot = cls[1:] == _DOT
    bad = cls[1:] == 0
    bad |= dot & ((cls[:-1] >= _DOT) | np.append(cls[2:] >= _DOT, True))  # a dot first, last or doubled
    valid = ~np.logical_or.reduceat(bad, bounds[:-1])
    if not valid.all():
        buf[bad] = ord("?")  # bytes of names not kept: never a line break, and ASCII
    return buf.tobytes().decode("ascii").split("\n")[:-1], valid
