"""Named u64 counters in one small shared-memory segment: one writer per field, any number of readers.

The capture process publishes what only it knows (packets read, libpcap's kernel statistics)
here, and the aggregator copies them into the status file; every process reports the trail index
generation it maps in a segment of its own kind, read by the supervisor. Each field is an aligned 64-bit word,
so a reader never sees a torn value; fields are not updated together (statistics, not state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shm.segments import SegmentOwner, attach, close_quietly


@dataclass(frozen=True)
class CountersSpec:
    """Picklable description: segment name and field names (in segment order)."""

    name: str
    fields: tuple[str, ...]


def create_counters(owner: SegmentOwner, role: str, fields: tuple[str, ...]) -> CountersSpec:
    seg = owner.create(role, 8 * len(fields))
    np.ndarray((len(fields),), dtype=np.uint64, buffer=seg.buf)[:] = 0
    return CountersSpec(seg.name, fields)


class SharedCounters:
    """One attachment to a counters segment."""

    def __init__(self, spec: CountersSpec) -> None:
        self.spec = spec
        self._seg = attach(spec.name)
        self._words = np.ndarray((len(spec.fields),), dtype=np.uint64, buffer=self._seg.buf)
        self._at = {name: i for i, name in enumerate(spec.fields)}

    def set(self, **values: int) -> None:
        words, at = self._words, self._at
        for name, value in values.items():
            words[at[name]] = value

    def get(self, name: str) -> int:
        return int(self._words[self._at[name]])

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.spec.fields, self._words.tolist(), strict=True))

    def close(self) -> None:
        self._words = None  # type: ignore[assignment]
        close_quietly(self._seg)
