"""One whitelist truth: a prebuilt index records the whitelist and custom trails that built it, and a
sensor configured with others rebuilds it from its recorded sources or refuses, never ignores them."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.index.fileformat import read_meta
from engine.pcapio import PcapWriter
from engine.traffic import dns_query, ethernet, udp4

TRAILS = "evil-one-test.com,malware,test\nevil-two-test.com,malware,test\n"


def _capture(path: Path) -> Path:
    with PcapWriter(path, linktype=1) as w:
        for i, name in enumerate(("evil-one-test.com", "evil-two-test.com")):
            query = udp4("10.0.0.5", "10.0.0.53", 40000 + i, 53, dns_query(name, txid=i + 1))
            w.write(ethernet(query), 1_700_000_000.0 + i)
    return path


def _events(log_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(log_dir.glob("*.log")))


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    csv = tmp_path / "trails.csv"
    csv.write_text(TRAILS)
    wl = tmp_path / "wl.txt"
    wl.write_text("evil-two-test.com\n")
    return csv, wl, _capture(tmp_path / "dns.pcap")


def _sensor(tmp_path: Path, index: Path, config: str, pcap: Path, name: str) -> tuple[int, Path]:
    cfg = tmp_path / f"{name}.toml"
    logs = tmp_path / f"logs-{name}"
    cfg.write_text(f'[sensor]\ntrails = "{index}"\nlog_dir = "{logs}"\nuse_heuristics = false\n{config}')
    return main(["sensor", "-c", str(cfg), "-r", str(pcap)]), logs


def test_index_records_its_whitelist_and_custom_trails(tmp_path: Path) -> None:
    csv, wl, _ = _setup(tmp_path)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "mine.txt").write_text("mine.example\n")
    out = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", f"custom:{custom}", str(csv), "--out", str(out),
                 "--whitelist", str(wl)]) == 0
    record = read_meta(out)["provenance"]
    assert record["default_whitelist"] is True and record["whitelist_files"] == [str(wl.resolve())]
    assert list(record["custom"]) == [str(custom.resolve())]


def test_sensor_rebuilds_an_index_built_with_another_whitelist(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    csv, wl, pcap = _setup(tmp_path)
    index = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(csv), "--out", str(index)]) == 0
    code, logs = _sensor(tmp_path, index, "", pcap, "same")
    assert code == 0
    assert "evil-one-test.com" in _events(logs) and "evil-two-test.com" in _events(logs)
    capsys.readouterr()
    code, logs = _sensor(tmp_path, index, f'whitelist = ["{wl}"]\n', pcap, "other")
    assert code == 0
    err = capsys.readouterr().err
    assert "built with other settings" in err and "rebuilt" in err
    events = _events(logs)
    assert "evil-one-test.com" in events and "evil-two-test.com" not in events


def test_sensor_adds_a_configured_custom_folder_by_rebuilding(tmp_path: Path) -> None:
    csv, _, pcap = _setup(tmp_path)
    index = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(csv), "--out", str(index)]) == 0
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "mine.txt").write_text("evil-two-test.com\n")
    code, logs = _sensor(tmp_path, index, f'custom_trails = ["{custom}"]\n', pcap, "custom")
    assert code == 0
    assert "DNS evil-two-test.com mine \"(custom) (+test)\"" in _events(logs)


def test_sensor_refuses_when_the_index_cannot_be_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, wl, pcap = _setup(tmp_path)
    index = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(csv), "--out", str(index)]) == 0
    csv.unlink()  # its source is gone: nothing to rebuild from
    capsys.readouterr()
    code, logs = _sensor(tmp_path, index, f'whitelist = ["{wl}"]\n', pcap, "refused")
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "whitelist" in err and "was built with other settings" in err
    assert not logs.exists() or not _events(logs)


def test_sensor_refuses_an_update_index_built_with_another_whitelist(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    csv, wl, pcap = _setup(tmp_path)
    static = tmp_path / "static"
    (static / "malware").mkdir(parents=True)
    (static / "malware" / "evil.txt").write_text("evil-one-test.com\nevil-two-test.com\n")
    cfg = tmp_path / "update.toml"
    cfg.write_text(f'[update]\nstatic_url = "{static}"\nfeeds = ["urlhaus"]\ndisabled_feeds = ["urlhaus"]\n')
    index = tmp_path / "u.mtidx"
    assert main(["update", "-c", str(cfg), "--out", str(index), "--offline"]) == 0
    capsys.readouterr()
    code, _ = _sensor(tmp_path, index, f'whitelist = ["{wl}"]\n', pcap, "update")
    assert code == 2
    err = capsys.readouterr().err
    assert "maltrail update" in err and "whitelist" in err
