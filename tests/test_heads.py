"""`Heads` (every row's first bytes gathered once, records read through views at the usual
offset) reads what `Gather` reads at the same offsets: for rows at the usual offset, rows at
another offset inside the gathered bytes, rows whose record runs past them or past the batch's
end, subsets of rows and masks of the rows that count; and `WordSet` is `np.isin`."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.batch import HEAD_BYTES, Gather, Heads, WordSet

_LAYOUT = np.dtype({"names": ["a", "b", "c"], "formats": ["u1", ">u2", ">u4"], "offsets": [0, 3, 9], "itemsize": 14})
_TYPES = (np.int32, np.int32, np.uint32)


def _case(seed: int, n: int, size: int, spread: int) -> tuple[Gather, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    start = np.sort(rng.integers(0, size, n))
    usual = int(rng.integers(0, HEAD_BYTES))  # some records fit the gathered bytes there, some do not
    rel = np.where(rng.random(n) < 0.7, usual, rng.integers(0, HEAD_BYTES + spread, n))
    return Gather(data), start, start + rel


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 300), st.integers(1, 3000), st.integers(1, 60))
def test_fields_are_the_gathered_records(seed: int, n: int, size: int, spread: int) -> None:
    g, start, idx = _case(seed, n, size, spread)
    heads = Heads(g, start)
    want = g.fields(idx, _LAYOUT, _TYPES)
    for got, expected in zip(heads.fields(idx, _LAYOUT, _TYPES), want, strict=True):
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist()
    for share in (0.5, 0.05):  # most rows (converted whole, then taken) and a few (picked out)
        rows = np.flatnonzero(np.random.default_rng(seed).random(n) < share)
        for got, expected in zip(heads.fields(idx[rows], _LAYOUT, _TYPES, rows), want, strict=True):
            assert got.tolist() == expected[rows].tolist()
    needed = np.random.default_rng(seed + 1).random(n) < 0.5
    for got, expected in zip(heads.fields(idx, _LAYOUT, _TYPES, needed=needed), want, strict=True):
        assert got[needed].tolist() == expected[needed].tolist()


def test_rows_elsewhere_read_from_the_gathered_bytes_or_the_batch() -> None:
    """Rows at another offset inside the gathered bytes are read from them, not from the batch:
    change the batch after the gather and only rows whose record is not inside see it."""
    data = np.arange(4000, dtype=np.uint32).astype(np.uint8)
    start = np.arange(0, 3000, 200, dtype=np.int64)
    rel = np.full(len(start), 10)
    rel[3], rel[7] = 40, HEAD_BYTES - 5  # another offset inside; past the gathered bytes
    g = Gather(data)
    heads = Heads(g, start)
    data[start + rel + 3] ^= 0xFF  # field "b" of every record
    b = heads.fields(start + rel, _LAYOUT, _TYPES)[1]
    fresh = g.fields(start + rel, _LAYOUT, _TYPES)[1]
    assert (b != fresh).sum() == len(start) - 1 and b[7] == fresh[7]


def test_no_rows_and_views_at_a_fixed_offset() -> None:
    data = np.arange(300).astype(np.uint8)
    g = Gather(data)
    empty = Heads(g, np.zeros(0, np.int64))
    assert [f.size for f in empty.fields(np.zeros(0, np.int64), _LAYOUT, _TYPES)] == [0, 0, 0]
    heads = Heads(g, np.array([0, 100, 250]))
    assert heads.at(2, ">u2").tolist() == [0x0203, 0x6667, 0xFCFD]
    assert heads.at(60, np.uint8).tolist() == [60, 160, data[-1]]  # past the end: the last byte, as `Gather` reads


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
       st.lists(st.integers(0, 2**32 - 1), max_size=50), st.data())
def test_word_set_is_isin(keys: set[int], values: list[int], data: st.DataObject) -> None:
    values += [data.draw(st.sampled_from(sorted(keys))) for _ in range(5)] + [0, 2**32 - 1]
    words = WordSet(tuple(keys))
    v = np.array(values, np.uint32)
    assert words.has(v).tolist() == np.isin(v, list(keys)).tolist()
