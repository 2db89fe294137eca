"""`NameShapes` (numpy over a batch of names) against the per-name rules it stands for."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.heuristics.dns_rules import exhaustion_domain
from workers.nameshapes import NameShapes, _key_table, _label_keys
from workers.protocols.dns import IGNORED_QUERY_SUFFIXES, is_ignored_query, is_valid_dns_name

PLAIN = re.compile(r"[a-z0-9._-]+")
LABEL = st.one_of(st.text(alphabet="abc019-_", max_size=30), st.sampled_from(["co", "uk", "1-2-3-4", "12-3-45-6",
                                                                             "1--2-3", "a" * 26, "Äx", "x\ny", ""]),
                  st.sampled_from(sorted(IGNORED_QUERY_SUFFIXES)).flatmap(
                      lambda s: st.sampled_from([s, s[:-1], s + "x", "x" + s, s * 2])))
NAMES = st.lists(st.lists(LABEL, min_size=1, max_size=6).map(".".join), max_size=20)


def _check(names: list[str], shapes: NameShapes) -> None:
    for i, name in enumerate(names):
        plain = bool(PLAIN.fullmatch(name)) and len(name) < 4096
        assert shapes.plain[i] == plain, name
        if not plain:
            continue
        assert shapes.ip_literal[i] == name.replace(".", "").isdigit(), name
        assert shapes.valid[i] == is_valid_dns_name(name), name
        first = name.split(".")[0]
        assert shapes.long_first_label[i] == (len(first) > 24 and "-" not in first), name
        if shapes.ignored is None:  # not made for queries: the query-only facts are not there
            assert shapes.exhaustion_cut is None
            continue
        assert shapes.ignored[i] == is_ignored_query(name), name
        cut = int(shapes.exhaustion_cut[i])
        expected = exhaustion_domain(name)
        if cut == -1:
            continue  # the rule's pattern decides; the bulk caller asks it
        assert (None if cut == 0 else (name[cut:], name[: cut - 1])) == expected, name


@settings(max_examples=400, deadline=None)
@given(NAMES)
def test_shapes_match_the_per_name_rules(names: list[str]) -> None:
    _check(names, NameShapes.of(names, lower=False, queries=True))
    _check(names, NameShapes.of(names, lower=False))


@settings(max_examples=200, deadline=None)
@given(NAMES)
def test_lowered_shapes_are_those_of_the_lowered_names(names: list[str]) -> None:
    names = [f"{n.upper()}:443" if i % 3 == 0 else n for i, n in enumerate(names)]
    shapes = NameShapes.of(names, lower=True, queries=True)
    lowered = [n.lower().split(":", 1)[0] if n.isascii() and "\n" not in n else n for n in names]
    assert [n for n, p in zip(shapes.names, shapes.plain, strict=True) if p] == [
        n for n in lowered if PLAIN.fullmatch(n)]
    _check(lowered, shapes)


def test_dashed_first_labels_are_left_to_the_rule() -> None:
    shapes = NameShapes.of(["1-2-3-4.host.example.com", "1-2-3-x.host.example.com", "a.b"], lower=False, queries=True)
    assert shapes.exhaustion_cut.tolist() == [-1, len("1-2-3-x.host."), 0]
    assert exhaustion_domain("1-2-3-4.host.example.com") is None


def test_take_keeps_order() -> None:
    shapes = NameShapes.of(["a.b.c", "x", "d.e.f.co.uk"], lower=False, queries=True)
    picked = shapes.take(np.array([2, 0]))
    assert picked.names == ["d.e.f.co.uk", "a.b.c"]
    assert picked.exhaustion_cut.tolist() == [4, 2]


def test_ignored_suffix_keys_that_collide_are_confirmed() -> None:
    """`cool`, `host` and `tech` share their key (first letters, length) with `corp`, `home` and
    `test`: the rule settles them."""
    names = ["a.cool", "b.host", "c.tech", "d.corp", "e.home", "f.test", "x.co.uk"]
    assert NameShapes.of(names, lower=False, queries=True).ignored.tolist() == [False] * 3 + [True] * 3 + [False]


@given(st.lists(st.text(alphabet="abc", max_size=4), min_size=1, max_size=6))
def test_label_keys_of_short_labels_match_the_table(labels: list[str]) -> None:
    """A label's key does not depend on the bytes after it, whatever its length (a one-letter
    suffix in the table must still be found, last in the batch or followed by another name)."""
    table = _key_table(frozenset(labels))
    text = "\n".join(labels)
    buf = np.frombuffer(text.encode(), np.uint8)
    lengths = np.array([len(label) for label in labels], np.int64)
    starts = np.concatenate(([0], (lengths + 1).cumsum()[:-1]))
    assert table.take(_label_keys(buf, starts, starts + lengths)).all()
