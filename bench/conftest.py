"""Shared fixtures for the benchmarks: the full static trail set (or a generated stand-in), smaller
sets for the size scaling, and the generated captures of every traffic mix, built once per session.

The full set is `../shared/trails/static` when present (1.6 M rows) and a generated 1.5 M-row set
with the same composition otherwise (`engine.benchmark.generate_trails`). The 10 k and 100 k sets
are uniform samples of the same source, so only the size changes between them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import targets

from engine.benchmark import DEFAULT_TRAIL_ROWS, generate_trails
from engine.index.build import build_index_file, compile_index
from engine.index.fileformat import write_arrays
from engine.index.mapped import TrailIndex
from engine.ipaddr import ip4_text
from engine.traffic import mixed_capture
from engine.trails.sources import load_sources, wildcard_trails
from engine.trails.whitelist import Whitelist

SHARED = Path(__file__).resolve().parents[2] / "shared"
STATIC = SHARED / "trails" / "static"
MIXED_PACKETS = 300_000
UNIQUE_PACKETS = 900_000  # replayed once: a capture given twice would repeat every item


def pytest_sessionstart(session: pytest.Session) -> None:
    targets.REFERENCE_MS.append(targets.reference_ms())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Issue 12's targets as one table, when the run measured any of them (`-k unique`)."""
    if targets.FIGURES:
        targets.REFERENCE_MS.append(targets.reference_ms())
        terminalreporter.write_sep("-", "issue 12 targets (traffic where everything is new)")
        for line in targets.table():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def trail_set_name() -> str:
    return f"static set {STATIC}" if STATIC.is_dir() else f"generated {DEFAULT_TRAIL_ROWS:,}-row set"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def full_index(workdir: Path) -> Path:
    out = workdir / "full.mtidx"
    if STATIC.is_dir():
        build_index_file([str(STATIC)], out)
    else:
        csv = generate_trails(workdir / "generated.csv", DEFAULT_TRAIL_ROWS)
        build_index_file([str(csv)], out)
    return out


@pytest.fixture(scope="session")
def sized_index(workdir: Path, full_index: Path) -> Callable[[int | None], Path]:
    """`sized_index(rows)`: an index of `rows` trails sampled from the full source (None: the full)."""
    built: dict[int, Path] = {}
    trails: dict[str, tuple[str, str]] = {}

    def make(rows: int | None) -> Path:
        if rows is None:
            return full_index
        if rows not in built:
            out = workdir / f"sized-{rows}.mtidx"
            if STATIC.is_dir():
                whitelist = Whitelist.default()
                if not trails:
                    trails.update(load_sources([str(STATIC)], whitelist))
                picks = sorted(random.Random(rows).sample(range(len(trails)), rows))
                keys = list(trails)
                subset = {keys[i]: trails[keys[i]] for i in picks}
                arrays, meta = compile_index(subset, whitelist.exact, whitelist.ranges4, wildcard_trails(subset), 64,
                                             [f"sample of {STATIC}"])
                write_arrays(out, arrays, meta)
            else:
                build_index_file([str(generate_trails(workdir / f"generated-{rows}.csv", rows))], out)
            built[rows] = out
        return built[rows]

    return make


def _trail_ips(index: Path) -> list[str]:
    keys = TrailIndex(index).ip4_keys
    return [ip4_text(int(keys[i])) for i in np.linspace(0, len(keys) - 1, 5).astype(int)]


@pytest.fixture(scope="session")
def mix_pcap(workdir: Path, full_index: Path) -> Callable[[str], Path]:
    """`mix_pcap(name)`: a MIXED_PACKETS capture of that traffic mix, with a few flows to IPv4
    trails that really are in the full index (so replays produce real events)."""
    made: dict[str, Path] = {}

    def make(mix: str) -> Path:
        if mix not in made:
            path = workdir / f"{mix}.pcap"
            mixed_capture(path, MIXED_PACKETS, seed=1, trail_ips=_trail_ips(full_index), mix=mix)
            made[mix] = path
        return made[mix]

    return make


@pytest.fixture(scope="session")
def mixed_pcap(mix_pcap: Callable[[str], Path]) -> Path:
    return mix_pcap("mixed")


@pytest.fixture(scope="session")
def unique_pcap(workdir: Path, full_index: Path) -> Path:
    """A UNIQUE_PACKETS capture of the `unique` mix (about a minute to generate: no packet is replayed)."""
    path = workdir / "unique-large.pcap"
    mixed_capture(path, UNIQUE_PACKETS, seed=1, trail_ips=_trail_ips(full_index), mix="unique")
    return path
