"""Maltrail's conformance corpus, vendored in tests/data/corpus (MIT, LICENSE-maltrail there), so
every clone runs it: each case replayed with the corpus trails, the bundled whitelist and the
oracle's switches (missing-Host and Host-domain checks on); every expected substring must appear,
cases expecting nothing produce no event (mixed_soup, which replays packets of other cases, must
simply not fail). One test per case, named after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.sensor import run_sensor

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
MANIFEST = CORPUS / "manifest.json"
CASES = {c["name"]: c for c in json.loads(MANIFEST.read_text())}


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "trails.mtidx"
    build_index_file([str(CORPUS / "trails.csv")], out)
    return out


def _replay(name: str, index: Path, log_dir: Path, workers: int = 1) -> str:
    case = CASES[name]
    cfg = SensorConfig(name="parity", trails=str(index), log_dir=str(log_dir), workers=workers,
                       check_missing_host=True, check_host_domains=True)
    summary = run_sensor(cfg, [CORPUS / case["pcap"]])
    assert summary.packets == case["packets"]
    return "".join(f.read_text() for f in sorted(log_dir.glob("*.log")))


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name: str, corpus_index: Path, tmp_path: Path) -> None:
    text = _replay(name, corpus_index, tmp_path)
    case = CASES[name]
    if not case["expect"] and name != "mixed_soup":
        assert text == "", f"{name} must produce no event"
    for expected in case["expect"]:
        assert expected in text, f"{name}: {expected!r} missing from:\n{text}"
