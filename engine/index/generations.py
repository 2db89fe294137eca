"""Trail index generations: where each one lives, and which one each process maps.

A reload publishes generation g+1 as a file of its own in the sensor's work dir, so a later
rename over the configured path never changes what a generation means. Every process reports
the generation it maps in its own word of a small shared counters segment: the supervisor reads
them to keep at most two generations mapped and to delete a file once no process uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.index.mapped import TrailIndex
from shm.counters import CountersSpec, SharedCounters


def generation_path(workdir: Path | str, generation: int) -> Path:
    return Path(workdir) / f"gen-{generation}.mtidx"


def generation_roles(workers: int) -> tuple[str, ...]:
    """The counter word of each process that maps the index."""
    return (*(f"worker{w}" for w in range(workers)), "aggregator")


@dataclass(frozen=True)
class GenerationSpec:
    """What a child needs to find and report generations (picklable)."""

    workdir: str
    counters: CountersSpec


class GenerationUser:
    """A child's side: maps a generation's file and reports the one it uses."""

    def __init__(self, spec: GenerationSpec, role: str) -> None:
        self.spec = spec
        self.role = role
        self._counters = SharedCounters(spec.counters)

    def open(self, generation: int) -> TrailIndex:
        return TrailIndex(generation_path(self.spec.workdir, generation))

    def report(self, generation: int) -> None:
        """Called once the previous generation is unmapped (or at start)."""
        self._counters.set(**{self.role: generation})

    def close(self) -> None:
        self._counters.close()
