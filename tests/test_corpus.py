"""Maltrail's conformance corpus (../shared/corpus): each case replayed with the corpus trails
and the bundled whitelist; every expected substring must appear, and cases expecting nothing
must produce no event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.sensor import run_sensor

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
# The cases that IP and IP:port matching alone must satisfy.
CASES = ["ip_trails", "icmp", "dlt_raw", "duplicate_syn", "clean_tcp", "ack_sweep_no_fp", "truncated"]


def _manifest() -> dict[str, dict]:
    if not (CORPUS / "manifest.json").is_file():
        return {}
    return {case["name"]: case for case in json.loads((CORPUS / "manifest.json").read_text())}


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus not present: conformance corpus tests skipped")
    out = tmp_path_factory.mktemp("corpus") / "trails.mtidx"
    build_index_file([str(CORPUS / "trails.csv")], out)
    return out


@pytest.mark.parametrize("name", CASES)
def test_corpus_case(name: str, corpus_index: Path, tmp_path: Path) -> None:
    case = _manifest()[name]
    cfg = SensorConfig(name="parity", trails=str(corpus_index), log_dir=str(tmp_path))
    summary = run_sensor(cfg, [CORPUS / case["pcap"]])
    assert summary.packets == case["packets"]
    text = "".join(f.read_text() for f in sorted(tmp_path.glob("*.log")))
    if not case["expect"]:
        assert text == "", f"{name} must produce no event"
    for expected in case["expect"]:
        assert expected in text, f"{name}: {expected!r} missing from:\n{text}"
