"""A lone trails.csv read as columns (the index build's path) equals load_sources' trail set,
key order included, whether the plain-file route or the general one reads it; and the index built
from it equals the index compiled from load_sources' dict."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import xxhash

from engine.index.build import IndexBuildError, build_index_file, compile_index
from engine.index.fileformat import map_arrays
from engine.trails.built import _plain_csv_columns, load_built_csv
from engine.trails.sources import load_sources, wildcard_trails
from engine.trails.whitelist import Whitelist

WHITELIST = Whitelist({"8.8.8.8", "whitelisted.example", "10.0.0.7:53"}, [(0x0A000000, 0x0A0000FF)])
PLAIN_KEYS = [
    "a.example", "b.example/path", "www.c.example", "www.d.example/x", "c.example", "8.8.8.8", "10.0.0.5",
    "10.0.0.7:53", "10.0.1.5", "1.2.3.4", "1.2.3.4:80", "whitelisted.example", "dead::beef", "10.0.0.0/24",
    "1example.net", "www.", "www.www", "ua:bot/1.0", "dga[0-9]+\\.x\\.example", "999.1.1.1", "010.0.0.9",
    "10.0.0.256", "10.0.0.0010", "www.10.0.0.3",
]
OTHER_KEYS = ["A.Example", "www.www.e.example", "www.a.example", "Ünïcode.example", ""]
VALUES = ["malware,(static)", "ransomware,(static)", "ransomware (malware),(static)", "bad history,feed",
          "mass scanner,(custom)", "sinkhole,abuse.ch", "Upper Info,Feed"]


def _rows(rng: random.Random, keys: list[str], n: int) -> list[str]:
    return [f"{rng.choice(keys) if rng.random() < 0.5 else f'gen{i}.example'},{rng.choice(VALUES)}" for i in range(n)]


def _write(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("whitelist", [WHITELIST, None], ids=["whitelist", "none"])
def test_columns_equal_load_sources(tmp_path: Path, seed: int, whitelist: Whitelist | None) -> None:
    rng = random.Random(seed)
    keys = PLAIN_KEYS + (OTHER_KEYS if seed % 3 == 0 else [])
    path = _write(tmp_path / "trails.csv", _rows(rng, keys, rng.randint(1, 60)))
    columns = load_built_csv(path, whitelist)
    expected = load_sources([path], whitelist)
    assert list(columns.to_trails().items()) == list(expected.items())
    assert columns.pairs == list(dict.fromkeys(expected.values()))
    if columns.hashes is not None:
        assert columns.hashes.tolist() == [xxhash.xxh64_intdigest(key) for key in columns.keys]


def test_plain_route_takes_repeated_keys_and_www_keys() -> None:
    """The plain route is the one tested above for most seeds: repeats of non-www keys and www keys
    listed once are its; a www key listed with its bare form, upper case and quotes are not."""
    assert _plain_csv_columns("a.example,x,r\nwww.b.example,y,r\na.example,z,r\n") is not None
    assert _plain_csv_columns("a.example,x,r\nwww.a.example,y,r\n") is None
    assert _plain_csv_columns("www.a.example,x,r\nwww.a.example,y,r\n") is None
    assert _plain_csv_columns("A.example,x,r\n") is None
    assert _plain_csv_columns('a.example,"x",r\n') is None
    assert _plain_csv_columns("a.example,x\n") is None
    assert _plain_csv_columns("a.example,Ünïcode Info,r\n") is not None


def test_repeated_key_keeps_its_first_place_and_last_value(tmp_path: Path) -> None:
    rows = ["a.example,one,r", "b.example,two,r", "a.example,three,r", "c.example,four,r", "a.example,five,r"]
    columns = load_built_csv(_write(tmp_path / "trails.csv", rows), None)
    assert columns.hashes is not None  # read by the plain route
    assert list(columns.to_trails().items()) == [
        ("a.example", ("five", "r")), ("b.example", ("two", "r")), ("c.example", ("four", "r"))]
    assert columns.pairs == [("five", "r"), ("two", "r"), ("four", "r")]


@pytest.mark.parametrize("seed", range(4))
def test_index_from_columns_equals_index_from_the_dict(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = _write(tmp_path / "trails.csv", _rows(rng, [key for key in PLAIN_KEYS if key != "www."], 400))
    out = tmp_path / "built.mtidx"
    build_index_file([path], out, default_whitelist=False)
    built, meta, _ = map_arrays(out)
    trails = load_sources([path], Whitelist())
    expected, expected_meta = compile_index(trails, (), (), wildcard_trails(trails))
    assert built.keys() == expected.keys()
    for name, array in expected.items():
        assert built[name].dtype == array.dtype and np.array_equal(built[name], array), name
    assert meta["counts"] == expected_meta["counts"] and meta["wildcards"] == expected_meta["wildcards"]


def test_a_set_left_empty_by_the_whitelist_is_an_index_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "trails.csv", ["8.8.8.8,dns,(static)", "10.0.0.1,x,(static)"])
    assert load_built_csv(path, WHITELIST).keys == []
    with pytest.raises(IndexBuildError, match="no trails"):
        compile_index(load_built_csv(path, WHITELIST))
