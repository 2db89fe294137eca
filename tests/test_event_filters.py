"""Maltrail's filters: ignore_events_regex drops events whose line matches (counted), and
disabled_trails_info_regex leaves trails out of the index by their info."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import traffic as t
from engine.config import ConfigError, sensor_config_from
from engine.index.build import build_index_file
from engine.index.fileformat import read_meta
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

TRAILS = "66.66.66.66,malware (test),(static)\n77.77.77.77,known attacker,(static)\n88.88.88.88,botnet c2,(static)\n"


def _capture(path: Path) -> Path:
    with PcapWriter(path) as w:
        w.write(t.ethernet(t.tcp4("10.0.0.5", "66.66.66.66", 40000, 443, t.SYN)), 1.7e9)
        w.write(t.ethernet(t.tcp4("77.77.77.77", "10.0.0.5", 40001, 22, t.SYN)), 1.7e9 + 1)  # attacker as source
        w.write(t.ethernet(t.tcp4("10.0.0.5", "88.88.88.88", 40002, 443, t.SYN)), 1.7e9 + 2)
    return path


def _run(tmp_path: Path, trails: Path, **sensor: object):
    cfg = sensor_config_from({"sensor": {"name": "s", "trails": str(trails), "log_dir": str(tmp_path / "logs"),
                                         **sensor}})
    summary = run_sensor(cfg, [_capture(tmp_path / "c.pcap")])
    lines = [line for f in sorted((tmp_path / "logs").glob("*.log")) for line in f.read_text().splitlines()]
    return summary, lines


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "trails.csv"
    path.write_text(TRAILS)
    return path


def test_ignore_events_regex_drops_matching_lines_and_counts_them(tmp_path: Path) -> None:
    summary, lines = _run(tmp_path, _csv(tmp_path), ignore_events_regex="KNOWN ATTACKER|88\\.88\\.88\\.88 443")
    assert len(lines) == 1 and "66.66.66.66" in lines[0]
    assert summary.status["events_ignored_regex"] == 2


def test_disabled_trails_info_regex_leaves_trails_out(tmp_path: Path) -> None:
    summary, lines = _run(tmp_path, _csv(tmp_path), disabled_trails_info_regex="ATTACKER|botnet")
    assert len(lines) == 1 and "malware (test)" in lines[0]
    assert summary.status["index"]["trails"] == 1


def test_a_prebuilt_index_with_another_regex_is_rebuilt_from_its_sources(tmp_path: Path, capsys) -> None:
    index = tmp_path / "trails.mtidx"
    build_index_file([str(_csv(tmp_path))], index)
    assert read_meta(index)["disabled_trails_info_regex"] == ""
    summary, lines = _run(tmp_path, index, disabled_trails_info_regex="attacker")
    assert sorted(line.split()[9] for line in lines) == ["66.66.66.66", "88.88.88.88"]
    assert "disabled_trails_info_regex '' in the index, 'attacker' configured" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["ignore_events_regex", "disabled_trails_info_regex"])
def test_a_bad_regex_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[sensor\] {key}: not a regular expression"):
        sensor_config_from({"sensor": {key: "(unclosed"}})


def test_update_applies_disabled_trails_info_regex_and_the_sensor_then_takes_its_index(tmp_path: Path,
                                                                                        capsys) -> None:
    from update_support import STATIC_FILES

    from engine.cli import main
    from engine.index.mapped import TrailIndex

    static = tmp_path / "static"
    for name, text in STATIC_FILES.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_text(text)
    index = tmp_path / "trails.mtidx"
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\ntrails = "{index}"\ndisabled_trails_info_regex = "ZEUS"\n'
                      f'[update]\nstatic_url = "{static}"\nfeeds = ["blocklist"]\ndisabled_feeds = ["blocklist"]\n')
    assert main(["update", "-c", str(config), "--offline"]) == 0, capsys.readouterr().err
    trails = TrailIndex(index)
    assert not trails.check("zeus-gate.example/gate.php").found and trails.check("evilbot-c2.example").found
    assert read_meta(index)["disabled_trails_info_regex"] == "ZEUS"
    cfg = sensor_config_from({"sensor": {"trails": str(index), "disabled_trails_info_regex": "ZEUS"}})
    from engine.sensor import prepare_index

    assert prepare_index(cfg, tmp_path) == index  # recorded the same: used as it is
