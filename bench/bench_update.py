"""`maltrail update` at full scale: Maltrail's whole static set (as its repository archive) plus
every feed, served by a local HTTP mirror (tests/fixtures/feeds). Needs ../shared/trails/static.

Three cases: the first update (fetch, unpack, read, merge, compile, install), an update where
the static archive is unchanged but a feed changed (the static set is read and merged again), and
an update where nothing changed (304s everywhere: the index is left alone).
"""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import SensorConfig, UpdateConfig
from engine.update.runner import UpdateOptions, run_update

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from httpfixture import FixtureServer  # noqa: E402
from update_support import STATIC_PATH, Upstream, feed_bodies  # noqa: E402

STATIC = Path(__file__).resolve().parents[2] / "shared" / "trails" / "static"
pytestmark = pytest.mark.skipif(not STATIC.is_dir(), reason=f"needs Maltrail's static trails at {STATIC}")


@pytest.fixture(scope="module")
def archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        tar.add(STATIC, "maltrail-master/trails/static")
    return buf.getvalue()


@pytest.fixture()
def upstream(archive: bytes) -> Iterator[Upstream]:
    with FixtureServer() as server:
        up = Upstream(server)
        up.serve(STATIC_PATH, archive)
        yield up


def _update(up: Upstream, out: Path, force: bool = False) -> None:
    report = run_update(SensorConfig(), UpdateConfig(mirror=up.server.url, retries=0), UpdateOptions(out, force=force))
    assert report.entries > 1_500_000


def test_update_first_run(benchmark, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Target (issue 10): at most 8 s on the 2-core machine."""
    outs = iter(tmp_path_factory.mktemp(f"first{i}") / "trails.mtidx" for i in range(100))
    benchmark.pedantic(lambda: _update(upstream, next(outs)), rounds=3, iterations=1)


def test_update_feed_changed(benchmark, upstream: Upstream, tmp_path: Path) -> None:
    out = tmp_path / "trails.mtidx"
    _update(upstream, out)
    path = upstream.paths["urlhaus"][0]
    listed = feed_bodies(upstream.feeds["urlhaus"])[path]
    bodies = iter(listed + f"http://changed-{i}.example/x.exe\n".encode() for i in range(100))
    benchmark.pedantic(lambda: (upstream.serve(path, next(bodies)), _update(upstream, out)), rounds=3, iterations=1)


def test_update_nothing_changed(benchmark, upstream: Upstream, tmp_path: Path) -> None:
    out = tmp_path / "trails.mtidx"
    _update(upstream, out)
    benchmark.pedantic(lambda: _update(upstream, out), rounds=3, iterations=1)
