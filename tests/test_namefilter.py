"""The name filter (`engine.index.namefilter`): a name none of whose label-boundary suffixes is a
key must be the usual answer, and a name one of whose suffixes is a key must never be missed,
whatever the keys' lengths and however the builder slices its arenas."""

from __future__ import annotations

from random import Random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import traffic as t
from engine.index import namefilter
from engine.index.build import _arena

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=0, max_size=70)
NAME = st.lists(LABEL, min_size=1, max_size=6).map(".".join)


def _maybe(bloom: np.ndarray, names: list[str]) -> list[bool]:
    return namefilter.suffixes_maybe_listed(bloom, namefilter.NameBytes.of("\n".join(names), len(names))).tolist()


def _suffixes(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[k:]) for k in range(len(labels))]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(NAME, min_size=1, max_size=30), others=st.lists(NAME, max_size=30),
       chunk=st.sampled_from([1, 7, 64, 1 << 22]))
def test_no_listed_suffix_is_missed(keys: list[str], others: list[str], chunk: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(namefilter, "_BUILD_CHUNK", chunk)
        bloom = namefilter.build_name_filter([_arena([k.encode() for k in keys])])
    names = others + keys + [f"{other}.{key}" for other, key in zip(others, keys, strict=False)]
    listed = set(keys)
    for name, maybe in zip(names, _maybe(bloom, names), strict=True):
        if any(suffix in listed for suffix in _suffixes(name)):
            assert maybe, name


def test_misses_are_rare_and_keys_from_several_arenas_count() -> None:
    rng = Random(4)
    keys = [t.unique_name(n, rng).encode() for n in range(50_000)]
    bloom = namefilter.build_name_filter([_arena(keys[:100]), _arena(keys[100:])])
    assert all(_maybe(bloom, [f"www.{k.decode()}" for k in keys[::50]]))
    assert all(_maybe(bloom, [k.decode() for k in keys[:100]]))
    fresh = [t.unique_name(n, rng) for n in range(100_000, 110_000)]
    assert sum(_maybe(bloom, fresh)) < 50  # about 0.2 % of suffixes of a full set's misses pass


def test_long_names_grow_the_power_tables() -> None:
    key = ("k" * 5000).encode()
    bloom = namefilter.build_name_filter([_arena([key])])
    assert _maybe(bloom, ["a." + "k" * 5000, "k" * 5000, "", "k" * 4999]) == [True, True, False, False]
