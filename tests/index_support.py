"""A small trail index written to a test's folder, for tests that need a mapped index of a few trails."""

from __future__ import annotations

from pathlib import Path

from engine.index.build import compile_index
from engine.index.fileformat import write_arrays


def index_file(trails: dict[str, tuple[str, str]], folder: Path) -> Path:
    """The index of `trails` (trail -> (info, reference)) written as `folder/t.mtidx`."""
    arrays, meta = compile_index(trails)
    path = folder / "t.mtidx"
    write_arrays(path, arrays, meta)
    return path
