"""Maltrail's conformance corpus, vendored in tests/data/corpus (MIT, LICENSE-maltrail there), so
every clone runs it: each case replayed with the corpus trails, the bundled whitelist and the
oracle's switches (missing-Host and Host-domain checks on); every expected substring must appear,
cases expecting nothing produce no event (mixed_soup, which replays packets of other cases, must
simply not fail). One test per case, named after it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from pcapng_support import epb, idb, not_libpcap, resolution, shb

from engine import capture as capture_module
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import read_batches
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


def _as_pcapng(pcap: Path, out: Path) -> Path:
    """The packets libpcap reads from `pcap` in a pcapng file as dumpcap writes one: nanosecond
    timestamps, original lengths kept."""
    blocks, linktype = [], 1
    for batch in read_batches(pcap):
        linktype = batch.linktype
        for (sec, usec, off, cap), wire in zip(batch.meta.tolist(), batch.wirelen.tolist(), strict=True):
            blocks.append(epb((sec * 10**6 + usec) * 1000, batch.data[off : off + cap], wire=wire))
    out.write_bytes(shb() + idb(linktype, 262144, resolution(9)) + b"".join(blocks))
    return out


def test_the_corpus_as_pcapng_reports_what_it_does_as_pcap(corpus_index: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case in one replay, as classic pcap and as pcapng, mapped by the workers and (held
    open for writing: no lease) read into the rings, libpcap reading none of it: the same events."""
    classic = [CORPUS / CASES[name]["pcap"] for name in sorted(CASES)]
    pcapng = [_as_pcapng(path, tmp_path / f"{path.stem}.pcapng") for path in classic]
    logs = {}
    for mode, files in (("classic", classic), ("mapped", pcapng), ("read", pcapng)):
        log_dir = tmp_path / mode
        cfg = SensorConfig(name="parity", trails=str(corpus_index), log_dir=str(log_dir), workers=2,
                           check_missing_host=True, check_host_domains=True)
        with contextlib.ExitStack() as held:
            if mode == "read":
                for path in files:
                    held.enter_context(open(path, "ab"))
                monkeypatch.setattr(capture_module, "read_batches", not_libpcap)
            summary = run_sensor(cfg, files)
        events = sorted(line for f in log_dir.glob("*.log") for line in f.read_text().splitlines())
        logs[mode] = (summary.packets, events)
    assert logs["classic"][1] and logs["mapped"] == logs["classic"] == logs["read"]
