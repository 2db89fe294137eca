"""The workers' bounded caches: what they hold after any sequence of puts, and their bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.fifo import SAMPLE, FifoCache, GenerationCache

BATCHES = st.lists(st.lists(st.integers(0, 60), max_size=12), max_size=30)


@settings(max_examples=300, deadline=None)
@given(BATCHES, st.integers(1, 40))
def test_generation_cache_answers_what_was_put_last_and_stays_bounded(batches: list[list[int]], size: int) -> None:
    cache: GenerationCache[int, int] = GenerationCache(size)
    latest: dict[int, int] = {}
    largest = 0
    for n, batch in enumerate(batches):
        entries = {k: n * 100 + k for k in batch}
        cache.put_many(entries)
        latest.update(entries)
        largest = max(largest, len(entries))
        assert len(cache) <= size + largest
        asked = list(latest) + list(latest)
        got, new = cache.lookup(asked)
        if got:
            assert sorted(new) == sorted(set(latest) - set(got))  # each key either held or new, new ones once
        else:
            assert new is asked  # none of the sample held: the keys asked, repeats kept
            assert all(cache.lookup([k]) == ({}, [k]) for k in asked[:: len(asked) // SAMPLE or 1])
        assert all(v == latest[k] for k, v in got.items())  # forgotten or current, never stale
        held, _ = cache.lookup(list(entries))  # no more keys than the sample: each probed
        assert all(held.get(k) == v for k, v in entries.items()) or size < 2 * len(entries)  # a batch is kept whole
    assert cache.lookup([1000]) == ({}, [1000])


def test_generation_cache_drops_the_older_half_at_once() -> None:
    cache: GenerationCache[int, str] = GenerationCache(4)
    cache.put(1, "a")
    cache.put(2, "b")  # the young half is full: it becomes the old one
    cache.put(3, "c")
    assert cache.lookup([1, 2, 3]) == ({1: "a", 2: "b", 3: "c"}, [])
    cache.put(4, "d")  # ages again: 1 and 2 go together
    assert cache.lookup([1, 2, 3, 4]) == ({3: "c", 4: "d"}, [1, 2])


def test_generation_cache_probes_a_sample_of_a_long_list() -> None:
    """A long list whose sampled keys are all new is new as a whole, held keys among the others
    included (their values are worked out again); one held key in the sample answers in full."""
    cache: GenerationCache[int, int] = GenerationCache(1000)
    keys = list(range(10 * SAMPLE))
    step = len(keys) // SAMPLE
    cache.put_many((k, -k) for k in keys if k % step)  # every key but the sampled ones
    got, new = cache.lookup(keys)
    assert got == {} and new is keys
    cache.put(0, 0)  # a sampled key
    got, new = cache.lookup(keys)
    assert got == {k: -k for k in keys if k % step or k == 0}
    assert sorted(new) == [k for k in keys if k and not k % step]
    short = [step, *(k for k in keys if k % step)][:SAMPLE]  # a new key first, then held ones: each probed
    assert cache.lookup(short) == ({k: -k for k in short[1:]}, [step])


def test_fifo_cache_forgets_its_oldest_entry() -> None:
    cache: FifoCache[int, int] = FifoCache(2)
    for k in (1, 2, 3):
        cache.put(k, k)
    assert list(cache) == [2, 3]
