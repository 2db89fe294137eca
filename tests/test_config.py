"""maltrail.toml: the shipped file is valid and complete, bad values name the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from engine.config import (
    DERIVED_FIELDS,
    CollectConfig,
    ConfigError,
    SensorConfig,
    ShipConfig,
    UpdateConfig,
    load_config,
    load_nats_configs,
    load_update_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("section", "cls", "load"), [("sensor", SensorConfig, load_config),
                                                      ("update", UpdateConfig, load_update_config)])
def test_shipped_file_documents_every_option_with_its_default(section: str, cls: type, load) -> None:
    data = tomllib.loads((ROOT / "maltrail.toml").read_text())[section]
    assert_documents_defaults(data, cls)
    assert load(ROOT / "maltrail.toml") == cls()


def assert_documents_defaults(data: dict, cls: type, given: tuple[str, ...] = ()) -> None:
    """Every option of `cls` is in `data` with its default (`given`: options without one)."""
    defaults = cls()
    assert set(data) == {f.name for f in dataclasses.fields(cls)} - DERIVED_FIELDS
    for key, value in data.items():
        if key not in given:
            assert getattr(defaults, key) == value, key


@pytest.mark.parametrize(("text", "message"), [
    ("[sensor]\nworkers = 0\n", r"\[sensor\] workers: 0 is out of range \(1..64\)"),
    ("[sensor]\nworkers = 'two'\n", r"\[sensor\] workers: expected int, got str 'two'"),
    ("[sensor]\npromisc = 1\n", r"\[sensor\] promisc: expected bool"),
    ("[sensor]\nwokers = 2\n", r"\[sensor\] wokers: unknown key"),
    ("[sensors]\n", r"unknown section \[sensors\]"),
    ("[sensor]\nwhitelist = 'a.txt'\n", r"\[sensor\] whitelist: expected list of strings"),
    ("[sensor\n", r"invalid TOML"),
    ("[update]\nperiod = 'soon'\n", r"\[update\] period: 'soon' is not a duration"),
    ("[update]\nmin_ratio = 2\n", r"\[update\] min_ratio: 2 is out of range"),
    ("[update]\ntimeout = 'x'\n", r"\[update\] timeout: expected int"),
    ("[update]\nfeed = []\n", r"\[update\] feed: unknown key"),
    ("[update]\ndisabled_info_regex = '('\n", r"\[update\] disabled_info_regex: not a regular expression"),
    ("[ship]\n", r"\[ship\] servers: give at least one NATS URL"),
    ("[ship]\nservers = ['nats://x:1']\nstream = 'a.b'\n", r"\[ship\] stream: 'a.b' may hold only"),
    ("[collect]\nservers = ['nats://x:1']\nreplicas = 9\n", r"\[collect\] replicas: 9 is out of range"),
    ("[collect]\nservers = ['nats://x:1']\npassword_file = 'p'\n", r"\[collect\] password_file: needs user"),
    ("[ship]\nservers = ['nats://x:1']\ntls_cert = 'c'\n", r"\[ship\] tls_cert / tls_key: give both"),
    ("[ship]\nservers = ['nats://x:1']\nfollow = true\n", r"\[ship\] follow: unknown key"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
        load_update_config(path)
        load_nats_configs(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "none.toml")


def test_update_period() -> None:
    assert UpdateConfig().period_seconds == 86400 and UpdateConfig(period="90m").period_seconds == 5400
    assert UpdateConfig(period="0").period_seconds == 0


@pytest.mark.parametrize(("section", "cls"), [("ship", ShipConfig), ("collect", CollectConfig)])
def test_shipped_file_documents_nats_sections_commented_out(section: str, cls: type, tmp_path: Path) -> None:
    """[ship] / [collect] are shown commented out (present = on); uncommented, every option is
    there with its default, and the file loads."""
    text = (ROOT / "maltrail.toml").read_text()
    assert f"\n[{section}]" not in text
    block = text.split(f"# [{section}]\n", 1)[1].split("\n\n", 1)[0]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith("# ") and not ln.startswith("# # ")]
    data = tomllib.loads(f"[{section}]\n" + "\n".join(lines))[section]
    assert_documents_defaults(data, cls, given=("servers",))
    path = tmp_path / "m.toml"
    path.write_text(f"[{section}]\n" + "\n".join(lines))
    loaded = load_nats_configs(path)[0 if section == "ship" else 1]
    assert loaded == dataclasses.replace(cls(), servers=["nats://127.0.0.1:4222"])
    assert load_nats_configs(ROOT / "maltrail.toml") == (None, None)
