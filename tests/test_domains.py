"""`DomainChecker.check_many` (the bulk path of DNS queries and TLS SNIs) answers exactly what
`check` answers name by name: trails and their parents, whitelisted names, dynamic-DNS and
infrastructure exclusions, long domains, wildcard trails, `.onion` gateways, `ip-adress.com`,
IP literals and names that are not plain ASCII. Small hash widths force collisions, so the
exact confirmation behind the bulk prefilter is exercised too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fullscale import static_set
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.index.build import build_index_file
from engine.index.fileformat import map_arrays, write_arrays
from engine.index.mapped import TrailIndex
from engine.index.namefilter import NameBytes
from workers.domains import DomainChecker
from workers.protocols.dns import is_valid_dns_name

TRAILS = """\
evil.com,malware,static
bad.evil.org,malware,static
dyn-host.net,dynamic domain,static
mx1.sink.net,sinkhole,static
sink.net,sinkholed by someone (malware),static
hidden.onion,tor (malware),static
lookup.example-host.com,suspicious,static
byethost[0-9]+\\.com,free hosting (suspicious),(static)
shop-[a-z]{3}\\.top,phishing (malware),(static)
"""
WHITELIST = "good.evil.com\nsafe.org\n"
PIECES = ["evil", "com", "bad", "org", "www", "dyn-host", "net", "mx1", "sink", "hidden", "onion", "gw", "to",
          "lookup", "example-host", "ip-adress", "byethost42", "shop-abc", "top", "good", "safe", "a" * 30, "1",
          "2", "x-y", "ns1", "ÄÖ", "Evil", "", "80", "a_b", "b" * 26 + "-c", "c" * 25 + "_d", "com:443", "x\ny",
          "e" * 4100]


@pytest.fixture(scope="module", params=[64, 12, "without name filter"])
def index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrailIndex:
    """Full and 12-bit hashes (collisions everywhere), and an index from before the name filter."""
    folder = tmp_path_factory.mktemp("domains")
    (folder / "trails.csv").write_text(TRAILS)
    (folder / "whitelist.txt").write_text(WHITELIST)
    out = folder / "index.mtidx"
    build_index_file([str(folder / "trails.csv")], out, [folder / "whitelist.txt"], default_whitelist=False,
                     hash_bits=request.param if isinstance(request.param, int) else 64)
    if not isinstance(request.param, int):
        arrays, meta, mm = map_arrays(out)
        kept = {name: np.array(a) for name, a in arrays.items() if name != "name_filter"}
        del arrays
        mm.close()
        write_arrays(out, kept, meta)
    return TrailIndex(out)


def _one_by_one(index: TrailIndex, names: list[str]) -> list[object]:
    return [DomainChecker(index).check(name) for name in names]


NAMES = ["evil.com", "www.evil.com", "x.bad.evil.org", "good.evil.com", "a.good.evil.com", "safe.org",
         "dyn-host.net", "www.dyn-host.net", "a.dyn-host.net", "mx1.sink.net", "ns2.sink.net", "sink.net",
         "abc.hidden.onion.to", "hidden.onion", "lookup.example-host.com.ip-adress.com", "www.byethost42.com",
         "shop-abc.top", "m.shop-abcd.top", "a" * 30 + ".example.org", "1.2.3.4", "EVIL.com", "evil.com:443",
         "ÄÖ.evil.com", "", "clean.example.org", "evil.com.", "a..evil.com"]


def test_known_names(index: TrailIndex) -> None:
    expected = _one_by_one(index, NAMES)
    assert DomainChecker(index).check_many(NAMES) == expected
    assert sum(hit is not None for hit in expected) >= 10


def test_repeats_and_the_negative_cache(index: TrailIndex) -> None:
    checker = DomainChecker(index)
    names = NAMES * 3
    assert checker.check_many(names) == _one_by_one(index, names)
    assert [checker.check(n) for n in names] == _one_by_one(index, names)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map(".".join), max_size=12))
def test_generated_names(index: TrailIndex, names: list[str]) -> None:
    assert DomainChecker(index).check_many(names) == _one_by_one(index, names)
    valid = [n for n in map(str.lower, names) if is_valid_dns_name(n)]  # query names, as the caller passes them
    assert DomainChecker(index).check_many(valid, valid=True) == _one_by_one(index, valid)


def test_empty(index: TrailIndex) -> None:
    assert DomainChecker(index).check_many([]) == []


def test_static_trail_set(tmp_path: Path) -> None:
    """The full static set, where the string prefilter bitmap is in use."""
    folder = static_set()
    out = tmp_path / "static.mtidx"
    build_index_file([str(folder)], out)
    index = TrailIndex(out)
    keys = [index.key(e) for e in range(0, len(index), max(1, len(index) // 3000))]
    names = [k for k in keys if "/" not in k and ":" not in k][:2000]
    names += [f"www.{n}" for n in names[:500]] + [f"new-{i}.{n}" for i, n in enumerate(names[:500])]
    assert DomainChecker(index).check_many(names) == _one_by_one(index, names)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES + ["zen", "spamhaus", "4", "200"]), min_size=1, max_size=6)
                .map(".".join), max_size=12))
def test_nxdomain_counting_in_bulk(index: TrailIndex, names: list[str]) -> None:
    """Which NXDOMAIN names count towards floods: the bulk walk agrees with the name-by-name one."""
    from workers.payload import DetectionSettings, PayloadInspector

    names = list(dict.fromkeys(names))
    bulk = PayloadInspector(index, DetectionSettings())._nx_counted_many(names)
    one = PayloadInspector(index, DetectionSettings())
    assert bulk == {q: one._nx_counted(q) for q in names}
    laid = [q for q in names if q.isascii() and "\n" not in q]  # as the DNS decoder lays them out, with
    # the filter's answers it computed for them (right for the plain names only)
    maybe = index.suffixes_maybe_listed(laid, NameBytes.of("\n".join(laid), len(laid)))
    assert PayloadInspector(index, DetectionSettings())._nx_counted_many(laid, maybe) == {q: bulk[q] for q in laid}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES + ["co", "uk", "local"]), min_size=1, max_size=6).map(".".join),
                max_size=12))
def test_query_name_facts_in_bulk(index: TrailIndex, names: list[str]) -> None:
    """Ignored or not, the exhaustion domain unless whitelisted, trail or not: the bulk path of a
    batch's new query names agrees with the rules applied one name at a time."""
    from workers.heuristics.dns_rules import exhaustion_domain
    from workers.payload import FACT_CUT, FACT_IGNORED, FACT_TRAIL, DetectionSettings, PayloadInspector
    from workers.protocols.dns import is_ignored_query

    names = list(dict.fromkeys(map(str.lower, names)))  # as the batch decoder gives them
    inspector = PayloadInspector(index, DetectionSettings())
    in_order, trails = inspector._names_facts(names)
    facts = dict(zip(names, in_order.tolist(), strict=True))
    assert inspector._names.lookup(names) == (facts, [])  # all kept
    bulk = {}  # each fact read back: ignored, or (exhaustion (domain, prefix), trail)
    for q, f in facts.items():
        cut = f & FACT_CUT
        bulk[q] = "ignored" if f & FACT_IGNORED else ((q[cut:], q[:cut - 1]) if cut else None, bool(f & FACT_TRAIL))
    expected = {}
    for q in names:
        if not q or not is_valid_dns_name(q) or is_ignored_query(q):
            expected[q] = "ignored"
            continue
        exh = exhaustion_domain(q)
        exh = None if exh is None or index.is_whitelisted_domain(exh[0]) else exh
        expected[q] = (exh, DomainChecker(index).check(q) is not None)
    assert bulk == expected
    assert sorted(trails) == sorted(q for q, f in expected.items() if f != "ignored" and f[1])
