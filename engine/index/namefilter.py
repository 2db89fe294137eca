"""A Bloom filter over the string keys and whitelisted names a plain name can equal, with a hash
numpy computes for every label-boundary suffix of a batch of names at once.

The parent walk of a new name (is `a.b.example.com`, `b.example.com`, `example.com` or `com` a
trail or whitelisted?) cost one xxhash call per suffix from Python. Here the suffixes of a whole
batch are hashed by a dozen numpy calls over the names' bytes: a polynomial hash, whose value for
any substring follows from prefix sums, then a 32-bit finaliser. Three bits per key in a 2^25-bit
filter hold the keys a plain name can equal (only `[a-z0-9._-]`: no URL, `ua:` or `IP:port` key;
1.2 million of the full static set's 1.63 million) in 4 MiB and let about 0.1 % of its misses
through; those, and every real listing, take the exact per-name walk. Builder and readers share
this module so their hashes agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME_FILTER_BITS = 25
_U = np.uint32  # 32-bit arithmetic: half the memory traffic of 64, and ample for a 2^25-bit filter
_P = 0x9E3779B1  # odd, so it has an inverse modulo 2^32
_P_INV = pow(_P, -1, 1 << 32)
_SHIFT = _U(32 - NAME_FILTER_BITS)
_REMIX = (_U(0x27D4EB2F), _U(0x165667B1))  # odd multipliers: the second and third bits from one hash
# the finaliser's and the bit reads' constants made once (a numpy scalar costs about an array operation)
_U1, _U5, _U13, _U16, _U31 = _U(1), _U(5), _U(13), _U(16), _U(31)
_MIX1, _MIX2 = _U(0x85EBCA6B), _U(0xC2B2AE35)
_U8_A, _U8_0 = np.uint8(ord("a")), np.uint8(ord("0"))
_BUILD_CHUNK = 1 << 22  # arena bytes hashed per pass by the builder: bounds its temporary arrays


class _Powers:
    """P^k and P^-k modulo 2^32 for k below a length that grows to the longest word seen."""

    def __init__(self) -> None:
        self.up = self.down = np.ones(0, _U)
        self._grow(256)

    def _grow(self, n: int) -> None:
        self.up, self.down = np.ones(n, _U), np.ones(n, _U)
        np.cumprod(np.full(n - 1, _P, _U), out=self.up[1:])
        np.cumprod(np.full(n - 1, _P_INV, _U), out=self.down[1:])

    def ensure(self, n: int) -> None:
        if n > len(self.up):
            self._grow(max(n, 2 * len(self.up)))


_POWERS = _Powers()


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: every output bit depends on every input bit, which the
    polynomial's low bits alone do not."""
    h ^= h >> _U16
    h *= _MIX1
    h ^= h >> _U13
    h *= _MIX2
    h ^= h >> _U16
    return h


def _not_plain(buf: np.ndarray) -> np.ndarray:
    """Bytes outside ``[a-z0-9._-]`` (comparisons: a table lookup casts every byte to an index)."""
    letter = (buf - _U8_A) < 26
    digit = (buf - _U8_0) < 10
    return ~(letter | digit | (buf == ord(".")) | (buf == ord("_")) | (buf == ord("-")))


def _chunk_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The finalised hash of each segment ``buf[starts[i]:ends[i]]``: with G[j] the sum of
    buf[t] * P^t for t < j (one pass over the chunk, no per-byte offsets), a segment's sum of
    byte * P^(t - start) is P^-start * (G[end] - G[start]), modulo 2^32."""
    _POWERS.ensure(len(buf) + 1)
    sums = np.zeros(len(buf) + 1, _U)
    (_POWERS.up[: len(buf)] * buf).cumsum(out=sums[1:], dtype=_U)
    return _fmix(_POWERS.down[starts] * (sums[ends] - sums[starts]))


def _bit(h: np.ndarray, k: int) -> np.ndarray:
    """Filter bit `k` (0, 1 or 2) of each finalised segment hash."""
    return (h * _REMIX[k - 1] if k else h) >> _SHIFT


def build_name_filter(arenas: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The packed filter (little bit order) holding the strings of the (bytes, n+1 offsets) arenas
    that a plain name can equal, hashed a bounded slice of each arena at a time."""
    bits = np.zeros(1 << NAME_FILTER_BITS, dtype=bool)
    for buf, offsets in arenas:
        offsets = offsets.astype(np.int64)
        first = 0
        while first < len(offsets) - 1:
            last = max(int(offsets.searchsorted(offsets[first] + _BUILD_CHUNK, side="right")) - 1, first + 1)
            chunk = buf[offsets[first] : offsets[last]]
            starts = offsets[first:last] - offsets[first]
            lengths = np.diff(offsets[first : last + 1])
            plain = np.ones(len(lengths), bool)
            odd = np.flatnonzero(_not_plain(chunk))  # few: a byte's segment is the last to start at or before it
            plain[starts.searchsorted(odd, side="right") - 1] = False
            h = _chunk_hashes(chunk, starts[plain], (starts + lengths)[plain])
            for k in range(3):
                bits[_bit(h, k)] = True
            first = last
    return np.packbits(bits, bitorder="little")


@dataclass(frozen=True, slots=True)
class NameBytes:
    """Names laid out for numpy, once per batch for all the bulk tests of their text (the shape
    tests and this filter): their bytes joined by line breaks, where each starts and ends, and
    every dot with the name it belongs to."""

    buf: np.ndarray  # uint8
    starts: np.ndarray  # int64, one per name
    ends: np.ndarray
    dots: np.ndarray  # int64 offsets of the dots in buf
    owner: np.ndarray  # the name of each dot

    @classmethod
    def of(cls, text: str, n: int) -> NameBytes:
        """`n` one-line ASCII names joined by line breaks into `text`."""
        buf = np.frombuffer(text.encode(), np.uint8)
        ends = np.append((buf == 10).nonzero()[0], len(buf)) if n else np.zeros(0, np.int64)
        starts = np.zeros(n, np.int64)
        starts[1:] = ends[:-1] + 1
        return cls.at(buf, starts, ends)

    @classmethod
    def at(cls, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> NameBytes:
        """Names whose bytes (ASCII, no line break) are `buf[starts[i]:ends[i]]`, each but the last
        followed by a line break."""
        dots = (buf == 46).nonzero()[0]
        return cls(buf, starts, ends, dots, ends.searchsorted(dots))

    def head(self, k: int) -> NameBytes:
        """The first `k` names (a view of the same bytes)."""
        j = int(self.owner.searchsorted(k))
        return NameBytes(self.buf[: self.ends[k - 1]] if k else self.buf[:0], self.starts[:k], self.ends[:k],
                         self.dots[:j], self.owner[:j])


def suffixes_maybe_listed(bloom: np.ndarray, names: NameBytes) -> np.ndarray:
    """Per name: whether the name or a suffix after one of its dots may be in the filter. False is
    certain. The hash of a segment is that of the builder, computed from positions in the whole
    buffer instead of the name's: P^-s * (G[e] - G[s]) is the same sum of byte * P^(t - s)."""
    n = len(names.starts)
    buf = names.buf
    _POWERS.ensure(len(buf) + 1)
    sums = np.zeros(len(buf) + 1, _U)
    (_POWERS.up[: len(buf)] * buf).cumsum(out=sums[1:], dtype=_U)
    seg_start = np.concatenate((names.starts, names.dots + 1))
    owner = np.concatenate((np.arange(n), names.owner))
    seg_end = names.ends.take(owner)
    h = _fmix(_POWERS.down.take(seg_start) * (sums.take(seg_end) - sums.take(seg_start)))
    words = bloom.view("<u4")
    hit = _has_bit(words, _bit(h, 0)).nonzero()[0]  # a tenth of the misses pass the first bit: only those go on
    h = h.take(hit)
    hit = hit[_has_bit(words, _bit(h, 1)) & _has_bit(words, _bit(h, 2))]
    out = np.zeros(n, bool)
    out[owner.take(hit)] = True
    return out


def _has_bit(words: np.ndarray, bit: np.ndarray) -> np.ndarray:
    """Bit `bit` of the filter, read as little-endian 32-bit words (its little bit order makes bit
    i the (i & 31)th of word i >> 5)."""
    return (words.take(bit >> _U5) >> (bit & _U31) & _U1).astype(bool)
