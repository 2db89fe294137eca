"""A bounded cache that forgets its oldest entry first.

Evicting from the front of a plain dict (`d.pop(next(iter(d)))`) walks over every slot emptied by
earlier evictions until the dict next compacts: about 8 µs an eviction at 20,000 entries, paid by
every new DNS name and request on traffic where everything is new. An OrderedDict pops its
oldest entry in constant time."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class FifoCache(OrderedDict[K, V], Generic[K, V]):
    """`put` adds an entry and drops the oldest past `size`; reads are plain dict reads."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> V:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value

    def put_many(self, entries: dict[K, V]) -> None:
        """`put` of each entry, in order; one call for a batch of new keys."""
        self.update(entries)
        for _ in range(len(self) - self.size):
            self.popitem(last=False)
