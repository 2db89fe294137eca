"""A Bloom filter over the string keys and whitelisted names a plain name can equal, with a hash
numpy computes for every label-boundary suffix of a batch of names at once.

The parent walk of a new name (is `a.b.example.com`, `b.example.com`, `example.com` or `com` a
trail or whitelisted?) cost one xxhash call per suffix from Python. Here the suffixes of a whole
batch are hashed by a dozen numpy calls over the names' bytes: a polynomial hash, whose value for
any substring follows from prefix sums, then a 64-bit finaliser. Three bits per key in a 2^25-bit
filter hold the keys a plain name can equal (only `[a-z0-9._-]`: no URL, `ua:` or `IP:port` key;
1.2 million of the full static set's 1.63 million) in 4 MiB and let about 0.1 % of its misses
through; those, and every real listing, take the exact per-name walk. Builder and readers share
this module so their hashes agree.
"""

from __future__ import annotations

import numpy as np

NAME_FILTER_BITS = 25
_P = 0x9E3779B97F4A7C15  # odd, so it has an inverse modulo 2^64
_P_INV = pow(_P, -1, 1 << 64)
_SHIFT = np.uint64(64 - NAME_FILTER_BITS)
_MASK = np.uint64((1 << NAME_FILTER_BITS) - 1)
_REMIX = np.uint64(0xD6E8FEB86659FD93)  # an odd multiplier: the third bit from the same hash
_NOT_PLAIN = np.ones(256, np.int64)  # byte -> 1 if a plain name (the bulk walk's) cannot hold it
_NOT_PLAIN[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789._-", np.uint8)] = 0
_BUILD_CHUNK = 1 << 22  # arena bytes hashed per pass by the builder: bounds its temporary arrays


class _Powers:
    """P^k and P^-k modulo 2^64 for k below a length that grows to the longest word seen."""

    def __init__(self) -> None:
        self.up = self.down = np.ones(0, np.uint64)
        self._grow(256)

    def _grow(self, n: int) -> None:
        self.up, self.down = np.ones(n, np.uint64), np.ones(n, np.uint64)
        np.cumprod(np.full(n - 1, _P, np.uint64), out=self.up[1:])
        np.cumprod(np.full(n - 1, _P_INV, np.uint64), out=self.down[1:])

    def ensure(self, n: int) -> None:
        if n > len(self.up):
            self._grow(max(n, 2 * len(self.up)))


_POWERS = _Powers()


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every output bit depends on every input bit, which the
    polynomial's low bits alone do not."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _prefix_sums(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """G[j] = sum of buf[t] * P^(t - start of t's word) for t < j, modulo 2^64."""
    offsets = np.arange(len(buf), dtype=np.int64) - np.repeat(starts, lengths)
    _POWERS.ensure(int(lengths.max(initial=0)) + 1)
    sums = np.zeros(len(buf) + 1, np.uint64)
    np.cumsum(buf.astype(np.uint64) * _POWERS.up[offsets], out=sums[1:])
    return sums


def _segment_bits(sums: np.ndarray, word_start: np.ndarray, seg_start: np.ndarray,
                  seg_end: np.ndarray) -> tuple[np.ndarray, ...]:
    """The three filter bits of each byte segment [seg_start, seg_end) of a word starting at word_start."""
    h = _fmix(_POWERS.down[seg_start - word_start] * (sums[seg_end] - sums[seg_start]))
    return (h >> _SHIFT).astype(np.int64), (h & _MASK).astype(np.int64), ((h * _REMIX) >> _SHIFT).astype(np.int64)


def build_name_filter(arenas: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The packed filter (little bit order) holding the strings of the (bytes, n+1 offsets) arenas
    that a plain name can equal, hashed a bounded slice of each arena at a time."""
    bits = np.zeros(1 << NAME_FILTER_BITS, dtype=bool)
    for buf, offsets in arenas:
        offsets = offsets.astype(np.int64)
        first = 0
        while first < len(offsets) - 1:
            last = max(int(np.searchsorted(offsets, offsets[first] + _BUILD_CHUNK, side="right")) - 1, first + 1)
            chunk = buf[offsets[first] : offsets[last]]
            starts = offsets[first:last] - offsets[first]
            lengths = np.diff(offsets[first : last + 1])
            bad = np.zeros(len(chunk) + 1, np.int64)
            np.cumsum(_NOT_PLAIN[chunk], out=bad[1:])
            plain = bad[starts + lengths] == bad[starts]
            sums = _prefix_sums(chunk, starts, lengths)
            for bit in _segment_bits(sums, starts[plain], starts[plain], (starts + lengths)[plain]):
                bits[bit] = True
            first = last
    return np.packbits(bits, bitorder="little")


def suffixes_maybe_listed(bloom: np.ndarray, raw: bytes, lengths: np.ndarray) -> np.ndarray:
    """Per name (the names' bytes concatenated in `raw`, `lengths` each): whether the name or a
    suffix after one of its dots may be in the filter. False is certain."""
    n = len(lengths)
    if not n:
        return np.zeros(0, bool)
    buf = np.frombuffer(raw, np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    sums = _prefix_sums(buf, starts, lengths)
    dots = np.flatnonzero(buf == 46)
    seg_start = np.concatenate((starts, dots + 1))
    owner = np.concatenate((np.arange(n), np.searchsorted(ends, dots, side="right")))
    out = np.zeros(n, bool)
    first, second, third = _segment_bits(sums, starts[owner], seg_start, ends[owner])
    out[owner[_has_bit(bloom, first) & _has_bit(bloom, second) & _has_bit(bloom, third)]] = True
    return out


def _has_bit(bloom: np.ndarray, bit: np.ndarray) -> np.ndarray:
    return (bloom[bit >> 3] >> (bit & 7).astype(np.uint8) & 1).astype(bool)
