"""Trail sources: Maltrail's static/custom/trails.csv reading, normalisation and precedence (spec 1.1-1.5).

Fixtures are small folders generated in tmp_path; one slow test loads the full shared static set.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pytest
from fullscale import static_set

from engine.trails.sources import (
    TrailSourceError,
    _csv_rows,
    _needs_review,
    _read_trails_csv,
    _review_mask,
    _Source,
    load_sources,
    read_custom_dir,
    read_static_dir,
    read_trails_csv,
    wildcard_trails,
)
from engine.trails.whitelist import Whitelist


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _static(root: Path, files: dict[str, str]) -> Path:
    """A static trail folder with the given relative paths and contents."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        _write(root / relative, text)
    return root


def _custom(root: Path, files: dict[str, str]) -> str:
    """A custom trail folder, as a ``custom:DIR`` spec."""
    _static(root, files)
    return f"custom:{root}"


def _trails_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _load(*specs: str | Path, whitelist: Whitelist | None = None) -> dict[str, tuple[str, str]]:
    return load_sources([str(spec) for spec in specs], whitelist)


# --- static folders: info, reference, file and directory order ---------------------------------


def test_static_info_and_reference(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {
            "malware/asyncrat.txt": "# header\nevil-rat.example\n",
            "malware/apt_kimsuky.txt": "kimsuky.example\n",
            "mass_scanner.txt": "198.51.100.7\n",
            "suspicious/dynamic_domain.txt": "dyn.example\n",
        },
    )
    assert _load(root) == {
        "dyn.example": ("dynamic domain (suspicious)", "(static)"),
        "198.51.100.7": ("mass scanner", "(static)"),
        "kimsuky.example": ("apt kimsuky (malware)", "(static)"),
        "evil-rat.example": ("asyncrat (malware)", "(static)"),
    }


def test_static_csv_files(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {
            "malware/feodo.csv": (
                '# value,info\nc2.example,"emotet c2"\nhttp://c2.example/gate/,emotet\n'
                "no comma here\n.lead.example,lead\n1.2.3.4,ip\n"
            ),
            "botnets.csv": "bot.example,bot\n",
        },
    )
    assert _load(root) == {
        "bot.example": ("bot", "botnets (static)"),
        "c2.example": ("emotet c2 (malware)", "feodo (static)"),
        "c2.example/gate": ("emotet (malware)", "feodo (static)"),  # '://' cut, trailing '/' stripped
        "lead.example": ("lead (malware)", "feodo (static)"),
        "1.2.3.4": ("ip (malware)", "feodo (static)"),
    }


def test_static_directory_order_decides_equal_keys(tmp_path: Path) -> None:
    # suspicious/malicious first, then the root and other folders (by name), then "custom" folders;
    # within one source the last file read wins
    root = _static(
        tmp_path / "static",
        {
            "zz_custom/late.txt": "all.example\n",
            "malware/m.txt": "all.example\nnot-custom.example\nmal-root.example\n",
            "misc/x.txt": "all.example\nnot-custom.example\n",
            "root.txt": "all.example\nnot-custom.example\nsusp-root.example\nmal-root.example\n",
            "suspicious/s.txt": "all.example\nsusp-root.example\n",
            "malicious/b.txt": "all.example\n",
        },
    )
    trails = _load(root)
    assert trails["all.example"] == ("late (zz_custom)", "(static)")
    assert trails["not-custom.example"] == ("x (misc)", "(static)")
    assert trails["susp-root.example"] == ("root", "(static)")
    assert trails["mal-root.example"] == ("m (malware)", "(static)")
    # first occurrence fixes the position: malicious/ is read first
    assert list(trails)[0] == "all.example"


def test_static_history_files_are_read_last(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {"suspicious/a_history.txt": "old.example\n", "suspicious/zeta.txt": "old.example\n"},
    )
    assert _load(root)["old.example"] == ("a history (suspicious)", "(static)")


def test_static_ignores_hidden_other_and_nested_files(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {
            "kept.txt": "kept.example\n",
            ".hidden.txt": "hidden-file.example\n",
            ".git/x.txt": "hidden-dir.example\n",
            "notes.md": "markdown.example\n",
            "malware/deeper/nested.txt": "nested.example\n",
            "malware/README": "readme.example\n",
        },
    )
    assert _load(root) == {"kept.example": ("kept", "(static)")}


# --- line normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("evil.example", "evil.example"),
        ("  evil.example \t", "evil.example"),
        ("evil.example # note", "evil.example"),
        ("evil.example#note", "evil.example"),
        ("http://evil.example", "evil.example/"),  # a bare host from a URL is the host trail x/
        ("https://evil.example/", "evil.example/"),
        ("http://evil.example/a/b/", "evil.example/a/b"),  # trailing '/' stripped with >= 2 slashes
        ("evil.example/", "evil.example/"),  # ... and kept with one
        ("evil.example/a/", "evil.example/a"),
        ("evil.example/gate.php", "evil.example/gate.php"),
        ("/gate.php", "/gate.php"),
        ("1.2.3.4", "1.2.3.4"),
        ("evil.example.", "evil.example"),
        ("..evil.example", "evil.example"),
        (".su", "su"),  # alphabetic keys from static/custom sources are kept
        ("a.example/x.php # c", "a.example/x.php"),
    ],
)
def test_static_line_normalisation(tmp_path: Path, line: str, key: str) -> None:
    root = _static(tmp_path / "static", {"t.txt": f"# comment\n\n   # indented comment\n{line}\n"})
    assert _load(root) == {key: ("t", "(static)")}


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("evil.example", "evil.example"),
        ("evil.example/", "evil.example"),  # custom: trailing '/' always stripped first
        ("http://evil.example", "evil.example"),
        ("https://evil.example/a/b/", "evil.example/a/b"),
        ("evil.example/a/", "evil.example/a"),
        ("evil.example # mine", "evil.example"),
        (".evil.example.", "evil.example"),
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_custom_line_normalisation(tmp_path: Path, line: str, key: str) -> None:
    spec = _custom(tmp_path / "custom", {"my_list.txt": f"# mine\n{line}\n"})
    assert _load(spec) == {key: ("my list", "(custom)")}


def test_custom_folder_reads_txt_files_only(tmp_path: Path) -> None:
    spec = _custom(
        tmp_path / "custom",
        {"b_list.txt": "b.example\n", "a.txt": "a.example\n", "skip.csv": "c.example,x\n", ".h.txt": "h.example\n"},
    )
    trails = _load(spec)
    assert trails == {"a.example": ("a", "(custom)"), "b.example": ("b list", "(custom)")}
    assert list(trails) == ["a.example", "b.example"]


# --- key extensions: ua:, CIDR, IPv6, ports ----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("ua:Mozilla/5.0 (X11; Linux) x//y?q=1 #tag", "ua:mozilla/5.0 (x11; linux) x//y?q=1 #tag"),
        ("UA:SqlMap/1.0", "ua:sqlmap/1.0"),
        ("ua:www.Example", "ua:www.example"),
        ("Ua:http://x/", "ua:http://x/"),
        ("5.63.151.0/24", "5.63.151.0/24"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("DEAD::BEEF", "dead::beef"),
        ("[dead::beef]:443", "[dead::beef]:443"),
        ("1.2.3.4:8443", "1.2.3.4:8443"),
        ("203.0.113.0/24 # scanner range", "203.0.113.0/24"),
    ],
)
@pytest.mark.parametrize("kind", ["static", "custom"])
def test_extension_keys_survive_normalisation(tmp_path: Path, kind: str, line: str, key: str) -> None:
    if kind == "static":
        spec: str | Path = _static(tmp_path / "static", {"t.txt": line + "\n"})
    else:
        spec = _custom(tmp_path / "custom", {"t.txt": line + "\n"})
    assert list(_load(spec)) == [key]


def test_extension_keys_from_trails_csv(tmp_path: Path) -> None:
    path = _trails_csv(
        tmp_path / "trails.csv",
        [["UA:Evil/1.0 (x//y?z)", "bad ua", "(custom)"], ["2001:db8::/32", "net", "(static)"]],
    )
    assert _load(path) == {
        "ua:evil/1.0 (x//y?z)": ("bad ua", "(custom)"),
        "2001:db8::/32": ("net", "(static)"),
    }


# --- post-processing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.txt": "Evil.Example\n", "b.txt": "evil.example\n"}, ("a", "(static)")),
        ({"a.txt": "evil.example\n", "b.txt": "EVIL.example\n"}, ("b", "(static)")),
    ],
)
def test_keys_are_lower_cased_and_the_upper_case_spelling_wins(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, str]
) -> None:
    # Maltrail moves the upper-case key's value onto the lower-case key, whichever came first
    assert _load(_static(tmp_path / "static", files)) == {"evil.example": expected}


def test_urls_are_lower_cased_too(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"t.txt": "Evil.Example/Gate.PHP\n/Panel/Login\n"})
    assert set(_load(root)) == {"evil.example/gate.php", "/panel/login"}


def test_non_ascii_keys_are_idna_encoded(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"t.txt": "bücher.example\nПРИМЕР.рф\n"})
    assert set(_load(root)) == {"xn--bcher-kva.example", "xn--e1afmkfd.xn--p1ai"}


def test_alphabetic_keys_need_a_custom_or_static_reference(tmp_path: Path) -> None:
    other = _trails_csv(tmp_path / "other.csv", [["x.example", "bot", "feed.example"]])
    path = _trails_csv(
        tmp_path / "trails.csv",
        [
            ["su", "bad tld", "feed.example"],
            [".cc", "bad tld", "feed.example"],
            ["tk", "bad tld", "(static)"],
            ["ws", "bad tld", "mine (custom)"],
            ["xyz", "bad tld", "static list"],
        ],
    )
    assert set(_load(other, path)) == {"x.example", "tk", "ws", "xyz"}


def test_ipv4_rules(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {"malware.txt": "192.0.2.1\nmal.example\n1.2.3.256\n999.1.1.1\n", "misc/ransomware.txt": "r.example\n"},
    )
    assert _load(root) == {
        "192.0.2.1": ("potential malware site", "(static)"),  # only IPv4 keys are renamed
        "mal.example": ("malware", "(static)"),
        "r.example": ("ransomware (misc)", "(static)"),
    }


def test_ransomware_info_gets_its_class(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"ransomware.txt": "locker.example\n"})
    spec = _custom(tmp_path / "custom", {"ransomware.txt": "mine.example\n"})
    assert _load(root) == {"locker.example": ("ransomware (malware)", "(static)")}
    assert _load(spec) == {"mine.example": ("ransomware (malware)", "(custom)")}


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("evil.example/gate.php?id=1", "evil.example/gate.php"),
        ("evil.example?x=1", "evil.example"),
        ("/gate.php?id=1", "/gate.php?id=1"),  # path-only keys keep their query
        ("evil.example/a//b", "evil.example/a/b"),
        ("evil.example/a///b", "evil.example/a//b"),  # one replace pass, as in Maltrail
        ("//x.php", "/x.php"),
        ("www.evil.example", "evil.example"),
        ("www.evil.example/path", "www.evil.example/path"),  # URL keys keep www.
        ("WWW.Evil.example", "evil.example"),
        ("www.www.evil.example", "evil.example"),  # once when merging, once in post-processing
    ],
)
def test_key_rewrites(tmp_path: Path, line: str, key: str) -> None:
    root = _static(tmp_path / "static", {"t.txt": line + "\n"})
    assert _load(root) == {key: ("t", "(static)")}


def test_empty_keys_are_dropped(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"t.txt": ".\n...\nok.example\n?x\n"})
    assert _load(root) == {"ok.example": ("t", "(static)")}


def test_other_references_are_appended_once_sorted(tmp_path: Path) -> None:
    feeds_b = _trails_csv(tmp_path / "b.csv", [["evil.example", "bot", "zeta.example"], ["solo.example", "x", "f"]])
    feeds_a = _trails_csv(tmp_path / "a.csv", [["evil.example", "bot", "alpha.example"]])
    root = _static(tmp_path / "static", {"t.txt": "evil.example\n"})
    trails = _load(feeds_b, feeds_a, root)
    assert trails["evil.example"] == ("t", "(static) (+alpha.example,zeta.example)")
    assert trails["solo.example"] == ("x", "f")


def test_same_reference_twice_adds_no_suffix(tmp_path: Path) -> None:
    first = _static(tmp_path / "one", {"a.txt": "evil.example\n"})
    second = _static(tmp_path / "two", {"b.txt": "evil.example\n"})
    assert _load(first, second) == {"evil.example": ("b", "(static)")}


def test_parking_and_sinkhole_ips_get_no_other_references(tmp_path: Path) -> None:
    feed = _trails_csv(tmp_path / "feed.csv", [["192.0.2.9", "bot", "feed.example"], ["192.0.2.8", "bot", "f"]])
    root = _static(tmp_path / "static", {"malware/sinkhole_x.txt": "192.0.2.9\n", "malware/bot.txt": "192.0.2.8\n"})
    trails = _load(feed, root)
    assert trails["192.0.2.9"] == ("sinkhole x (malware)", "(static)")
    assert trails["192.0.2.8"] == ("bot (malware)", "(static) (+f)")


# --- whitelist and bad prefixes -------------------------------------------------------------------


def test_whitelisted_and_local_keys_are_dropped(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static",
        {
            "t.txt": (
                "8.8.8.8\nakamai.net\nsub.akamai.net\n10.1.2.3\n10.1.2.3:80\n10.0.0.1.evil.example\n"
                "127.0.0.1\n127.9.9.9:80\n192.168.1.1\n192.168.evil.example\nlocalhost.example\n"
                "LOCALHOST\nkept.example\n"
            )
        },
    )
    whitelist = Whitelist.from_texts(["8.8.8.8\nakamai.net\n10.0.0.0/8\n"])
    assert set(_load(root, whitelist=whitelist)) == {
        "sub.akamai.net",  # the IP/exact test, no parent walk
        "10.1.2.3:80",  # only bare dotted quads are range-tested
        "10.0.0.1.evil.example",
        "kept.example",
    }
    # the 127./192.168./localhost prefixes go even without a whitelist
    assert set(_load(root)) == {
        "8.8.8.8",
        "akamai.net",
        "sub.akamai.net",
        "10.1.2.3",
        "10.1.2.3:80",
        "10.0.0.1.evil.example",
        "kept.example",
    }


def test_default_whitelist_applies_to_trails_csv(tmp_path: Path) -> None:
    path = _trails_csv(
        tmp_path / "trails.csv",
        [["1.1.1.1", "x", "(static)"], ["::1", "x", "(static)"], ["203.0.113.5", "x", "(static)"]],
    )
    assert _load(path, whitelist=Whitelist.default()) == {"203.0.113.5": ("x", "(static)")}


# --- trails.csv ------------------------------------------------------------------------------------


def test_trails_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "trails.csv"
    path.write_text(
        "evil.example,malware (test),(static)\n"
        "two,fields\n"
        "four,fields,are,skipped\n"
        "\n"
        '"[0-9]{2,3}\\.ru","dga, numbers",(static)\n'
        "evil.example,later (test),(static)\n"
        '"/44285,5327891204.dat",x,(static)\n',
        encoding="utf-8",
    )
    expected = {
        "evil.example": ("later (test)", "(static)"),  # later duplicates overwrite
        "[0-9]{2,3}\\.ru": ("dga, numbers", "(static)"),
        "/44285,5327891204.dat": ("x", "(static)"),
    }
    assert read_trails_csv(path) == expected
    assert _load(path) == expected
    assert list(_load(path)) == list(expected)


def test_trails_csv_merged_with_others_is_normalised_like_every_source(tmp_path: Path) -> None:
    other = _trails_csv(tmp_path / "other.csv", [["x.example", "bot", "feed.example"]])
    path = _trails_csv(
        tmp_path / "trails.csv",
        [["Evil.Example", "x", "(static)"], ["www.w.example", "x", "(static)"], ["q.example?a", "x", "f"]],
    )
    assert _load(other, path) == {"x.example": ("bot", "feed.example"), "evil.example": ("x", "(static)"),
                                  "w.example": ("x", "(static)"), "q.example": ("x", "f")}


def test_lone_trails_csv_is_a_built_set_kept_as_written(tmp_path: Path) -> None:
    path = _trails_csv(
        tmp_path / "trails.csv",
        [["Evil.Example", "x", "(static)"], ["www.w.example", "x", "(static)"], ["127.0.0.66", "x", "f"],
         ["192.168.1.50", "compromised host", "soc"], ["su", "bad tld", "feed"], ["8.8.8.8", "x", "f"],
         ["evil.example", "later wins", "(static)"]],
    )
    assert _load(path, whitelist=Whitelist.default()) == {
        "evil.example": ("later wins", "(static)"), "w.example": ("x", "(static)"),
                           "127.0.0.66": ("x", "f"), "192.168.1.50": ("compromised host", "soc"),
                           "su": ("bad tld", "feed")}  # 8.8.8.8 is whitelisted


# --- precedence between sources -------------------------------------------------------------------


def test_static_overrides_custom_when_merged_after_it(tmp_path: Path) -> None:
    custom = _custom(tmp_path / "custom", {"mine.txt": "both.example\nonly-custom.example\n"})
    root = _static(tmp_path / "static", {"malware/rat.txt": "both.example\n"})
    trails = _load(custom, root)
    assert trails["both.example"] == ("rat (malware)", "(static) (+(custom))")
    assert trails["only-custom.example"] == ("mine", "(custom)")
    assert list(trails) == ["both.example", "only-custom.example"]  # positions from the first source


def test_a_later_custom_or_static_source_wins(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"malware/rat.txt": "both.example\n"})
    custom = _custom(tmp_path / "custom", {"mine.txt": "both.example\n"})
    assert _load(root, custom)["both.example"] == ("mine", "(custom) (+(static))")


def test_history_never_overrides_an_existing_key(tmp_path: Path) -> None:
    custom = _custom(tmp_path / "custom", {"mine.txt": "old.example\n"})
    root = _static(tmp_path / "static", {"suspicious/bad_history.txt": "old.example\nnew.example\n"})
    trails = _load(custom, root)
    assert trails["old.example"] == ("mine", "(custom) (+(static))")
    assert trails["new.example"] == ("bad history (suspicious)", "(static)")


def test_low_priority_info_does_not_replace(tmp_path: Path) -> None:
    first = _trails_csv(tmp_path / "a.csv", [[f"k{i}.example", "bot", "feed-a"] for i in range(3)])
    second = _trails_csv(
        tmp_path / "b.csv",
        [
            ["k0.example", "known attacker", "feed-b"],  # low priority keyword: refused
            ["k1.example", "other bot", "feed-b"],  # replaces
            ["k2.example", "mass scanner (attacker)", "feed-b"],  # high priority keyword wins anyway
        ],
    )
    trails = _load(first, second)
    assert trails["k0.example"] == ("bot", "feed-a (+feed-b)")
    assert trails["k1.example"] == ("other bot", "feed-b (+feed-a)")
    assert trails["k2.example"] == ("mass scanner (attacker)", "feed-b (+feed-a)")


def test_existing_static_or_custom_key_is_kept_against_feeds(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"malware/rat.txt": "rat.example\nip.example\n"})
    feed = _trails_csv(
        tmp_path / "feed.csv",
        [["rat.example", "bot", "feed.example"], ["ip.example", "ipinfo lookup", "feed.example"]],
    )
    trails = _load(root, feed)
    assert trails["rat.example"] == ("rat (malware)", "(static) (+feed.example)")
    assert trails["ip.example"] == ("ipinfo lookup", "feed.example (+(static))")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # bare form first: it is the existing value, www. the newcomer (accepted: static, no history)
        ({"a.txt": "evil.example\n", "b.txt": "www.evil.example\n"}, ("b", "(static)")),
        ({"a.txt": "www.evil.example\n", "b.txt": "evil.example\n"}, ("b", "(static)")),
        # a history newcomer is refused, whichever spelling it uses
        ({"a.txt": "evil.example\n", "bad_history.txt": "www.evil.example\n"}, ("a", "(static)")),
        ({"a.txt": "www.evil.example\n", "bad_history.txt": "evil.example\n"}, ("a", "(static)")),
        # one spelling only: the last line of that spelling
        ({"a.txt": "www.evil.example\n", "b.txt": "www.evil.example\n"}, ("b", "(static)")),
    ],
)
def test_www_spellings_merge_with_the_priority_rule(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, str]
) -> None:
    root = _static(tmp_path / "static", files)
    assert _load(root) == {"evil.example": expected}


def test_www_spelling_in_a_later_source(tmp_path: Path) -> None:
    feed = _trails_csv(tmp_path / "feed.csv", [["evil.example", "bot", "feed.example"]])
    root = _static(tmp_path / "static", {"a.txt": "www.evil.example\n", "bad_history.txt": "evil.example\n"})
    # static www. form replaces the feed value; the history bare form is then refused
    assert _load(feed, root) == {"evil.example": ("a", "(static) (+feed.example)")}


def test_www_only_key_new_in_a_later_source(tmp_path: Path) -> None:
    custom = _custom(tmp_path / "custom", {"mine.txt": "a.example\n"})
    root = _static(tmp_path / "static", {"t.txt": "www.new.example\nwww.new.example/path\nb.example\n"})
    trails = _load(custom, root)
    assert trails == {
        "a.example": ("mine", "(custom)"),
        "new.example": ("t", "(static)"),
        "www.new.example/path": ("t", "(static)"),
        "b.example": ("t", "(static)"),
    }
    assert list(trails) == ["a.example", "new.example", "www.new.example/path", "b.example"]


def test_www_key_takes_the_position_of_its_first_spelling(tmp_path: Path) -> None:
    root = _static(
        tmp_path / "static", {"a.txt": "first.example\nwww.middle.example\nlast.example\nmiddle.example\n"}
    )
    assert list(_load(root)) == ["first.example", "middle.example", "last.example"]
    assert list(read_static_dir(root)) == ["first.example", "middle.example", "last.example"]


def test_building_blocks_return_one_source_before_post_processing(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"malware/rat.txt": "Evil.Example\nwww.w.example\n127.0.0.1\n"})
    custom = _custom(tmp_path / "custom", {"mine.txt": "c.example/\n"})
    assert read_static_dir(root) == {
        "Evil.Example": ("rat (malware)", "(static)"),
        "w.example": ("rat (malware)", "(static)"),
        "127.0.0.1": ("rat (malware)", "(static)"),
    }
    assert read_custom_dir(custom.removeprefix("custom:")) == {"c.example": ("mine", "(custom)")}


# --- errors ------------------------------------------------------------------------------------------


def _error(*specs: str | Path) -> str:
    with pytest.raises(TrailSourceError) as info:
        _load(*specs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_sources(tmp_path: Path) -> None:
    for spec in (tmp_path / "nope", tmp_path / "nope.csv", f"custom:{tmp_path / 'nope'}"):
        message = _error(spec)
        assert str(tmp_path / "nope") in message
        assert "not found" in message or "not a directory" in message


def test_empty_sources(tmp_path: Path) -> None:
    empty_static = _static(tmp_path / "static", {"t.txt": "# only a comment\n\n", "malware/x.txt": ""})
    assert "empty" in _error(empty_static)
    # an empty custom folder is allowed, as in Maltrail (issue 10); a missing one is an error
    assert _load(_custom(tmp_path / "custom", {"t.txt": "# nothing\n"})) == {}
    assert _load(_custom(tmp_path / "custom2", {}), _static(tmp_path / "s", {"t.txt": "a.example\n"})) == {
        "a.example": ("t", "(static)")}
    assert "empty" in _error(_trails_csv(tmp_path / "trails.csv", [["only", "two"]]))
    (tmp_path / "void").mkdir()
    assert "empty" in _error(tmp_path / "void")


def test_unreadable_sources(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"ok.txt": "ok.example\n"})
    (root / "bad.txt").write_bytes(b"caf\xe9.example\n")
    message = _error(root)
    assert str(root / "bad.txt") in message
    assert "unreadable" in message
    other = _write(tmp_path / "list.txt", "x.example\n")
    assert "not a directory" in _error(other)
    assert "not a directory" in _error(f"custom:{other}")
    assert "no directory given" in _error("custom:")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions to apply")
def test_permission_denied(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"secret.txt": "x.example\n"})
    (root / "secret.txt").chmod(0)
    try:
        message = _error(root)
    finally:
        (root / "secret.txt").chmod(0o644)
    assert "unreadable" in message
    assert str(root / "secret.txt") in message


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "t.txt").write_bytes("\ufeffbom.example\n".encode())
    assert _load(root) == {"bom.example": ("t", "(static)")}


def test_no_specs_load_nothing() -> None:
    assert load_sources([], None) == {}


# --- wildcard trails ---------------------------------------------------------------------------------


def test_wildcard_trails_eligibility_and_order() -> None:
    trails = {
        "plain.example": ("a", "(static)"),
        "dga[0-9]+\\.x\\.example": ("dga", "(static)"),
        "^[a-z]{2}\\-[a-z]{2,3}\\.top$": ("rm", "x (static)"),
        "feed[0-9]+\\.example": ("feed", "feed.example"),  # not static
        "bad[0-9]+(\\.example": ("bad", "(static)"),  # does not compile
        "name.*\\.example": ("dotstar", "(static)"),
        "v[i,y]plata\\.ru": ("comma", "(static)"),  # ',' is outside the [a-z0-9_.-] class test
        "x.+": ("dotplus", "(static) (+f)"),
        "1.2.3.4": ("ip", "(static)"),
    }
    assert wildcard_trails(trails) == [
        ("dga[0-9]+\\.x\\.example", "dga", "(static)"),
        ("^[a-z]{2}\\-[a-z]{2,3}\\.top$", "rm", "x (static)"),
        ("name.*\\.example", "dotstar", "(static)"),
        ("x.+", "dotplus", "(static) (+f)"),
    ]


def test_wildcard_trails_keeps_the_first_hundred() -> None:
    trails = {f"dga{i}[0-9]+\\.example": (f"dga {i}", "(static)") for i in range(130)}
    found = wildcard_trails(trails)
    assert len(found) == 100
    assert [pattern for pattern, _, _ in found] == list(trails)[:100]


def test_wildcard_trails_from_a_static_folder(tmp_path: Path) -> None:
    root = _static(tmp_path / "static", {"malware/dga.txt": "DGA[0-9]+\\.Example\nplain.example\n"})
    assert wildcard_trails(_load(root)) == [("dga[0-9]+\\.example", "dga (malware)", "(static)")]


# --- full static set ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_shared_static_set() -> None:
    static = static_set()
    started = time.perf_counter()
    trails = load_sources([str(static)], Whitelist.default())
    elapsed = time.perf_counter() - started
    assert 1_550_000 < len(trails) < 1_700_000
    assert elapsed < 10  # about 2 s here; a loose bound that still catches accidental quadratic work
    expected = {
        # malware/asyncrat.txt rows that no later file lists
        "170293.ddns.net": ("asyncrat (malware)", "(static)"),
        "adobe.myactivedirectory.com": ("asyncrat (malware)", "(static)"),
        "213.152.161.99:47390": ("asyncrat (malware)", "(static)"),
        # listed in asyncrat.txt too, but malware/njrat.txt is read later
        "mikus192091.ddns.net": ("njrat (malware)", "(static)"),
        "129.82.138.12": ("mass scanner", "(static)"),  # root file, inline comment stripped
        "5.63.151.0/24": ("mass scanner cidr", "(static)"),
        "su": ("domain (suspicious)", "(static)"),
    }
    assert {key: trails.get(key) for key in expected} == expected
    assert not any(key.startswith(("127.", "192.168.", "localhost")) for key in trails)
    assert "8.8.8.8" not in trails
    assert len(wildcard_trails(trails)) > 20


# --- whole-list fast paths against the row-by-row reference ------------------------------------------

TRICKY_KEYS = [
    "evil.example", "Evil.Example", "www.evil.example", "evil.example", "www.first.example", "first.example",
    "first.example", "www.first.example", "www.only.example", "www.only.example", "www.x.example/path",
    "bücher.example", "ПРИМЕР.рф", "ua:EvilBot/1.0 (X, Y)", "ua:evilbot", "1.2.3.4", "1.2.3.4:80", "127.0.0.1",
    "192.168.1.1", "localhost", "l.example", "999.1.1.1", "noalpha", ".dot.example", "x.example/a?b", "a//b.example",
    "/path.php", "", "dead::beef", "10.0.0.0/8", "1\n2", "www.", "wwwx.example", "tab\t.example",
]


def _values(n: int) -> list[tuple[str, str]]:
    return [(f"info {i % 5}", "(static)" if i % 3 else "feed.example") for i in range(n)]


@pytest.mark.parametrize("keys", [
    TRICKY_KEYS,
    TRICKY_KEYS[::-1],
    [key for key in TRICKY_KEYS if not key.startswith("www.")],
    ["a.example", "b.example", "c.example"],
    ["www.a.example", "a.example", "www.a.example", "b.example", "a.example"],
    ["www.www.a.example", "www.a.example", "a.example", "www.www.a.example"],  # takes the row-by-row path
])
def test_source_from_rows_equals_row_by_row(keys: list[str]) -> None:
    values = _values(len(keys))
    reference = _Source()
    reference.add(keys, values)
    fast = _Source.from_rows(keys, values)
    assert list(fast.trails.items()) == list(reference.trails.items())
    assert fast.review == reference.review
    assert fast.www_values == reference.www_values
    assert fast.www_first == reference.www_first
    assert list(fast.settle({}).items()) == list(reference.settle({}).items())
    assert _Source.from_rows(keys, values, review=False).review == []


def test_review_mask_equals_needs_review() -> None:
    keys = [*TRICKY_KEYS, "w", "l", "ww", "localhos", "127.", "192.168.", "192.16", "A.b", "a?b.c", "1.2", ".x.y",
            "abc/", "a./", "9.9/", "Localhost", "ł.x", "\x00", "1\x00.2", "1.\n2", "/", "//", "a/", "Z.", "@.", "[.",
            "`.", "{.", "www.x", "localhost.x", "192.168.1.1:80", "127.0.0.1/8", "0", "0.", "..", "l."]
    assert _review_mask(keys).tolist() == [_needs_review(key) for key in keys]
    assert _review_mask([]).tolist() == []


def _reference_csv_source(path: Path) -> _Source:
    """The csv module and ``_Source.add`` row by row: what ``_read_trails_csv`` must equal."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if len(row) == 3]
    source = _Source()
    source.add([row[0] for row in rows], [("ransomware (malware)" if info == "ransomware" else info, reference)
                                          for _, info, reference in rows])
    return source


CSV_TEXTS = {
    "plain": "evil.example,bot,feed\nwww.evil.example,bot2,feed\n1.2.3.4,attacker,(static)\n",
    "no final newline": "a.example,x,y\nb.example,x,y",
    "two and four fields": "a.example,x\nb.example,x,y,z\nc.example,x,y\n\n,,\nd.example,ransomware,y\n",
    "upper case and non-ASCII": "Evil.Example,Bot,Feed\nbücher.example,x,y\nua:Bot/1.0 (X; Y),ua,(static)\n",
    "duplicates": "a.example,x,y\nb.example,x,y\na.example,later,y\nwww.a.example,www,y\n",
    "quoted commas": 'a.example,"info, with comma","ref, too"\nb.example,x,y\n',
    "quoted newline": 'a.example,"multi\nline",y\nb.example,x,y\n',
    "doubled quotes": 'a.example,"say ""hi""",y\nb"x.example,x,y\n',
    "crlf": "a.example,x,y\r\nwww.b.example,x,y\r\nc.example,x\r\n",
    "bare cr": "a.example,x,y\rb.example,x,y\r",
    "bom": "\ufeffa.example,x,y\nb.example,x,y\n",
    "other line breaks": "a.example,b\u2028c,d\nx\x0by.example,z\x1c,w\x0c\n",
}


@pytest.mark.parametrize("name", list(CSV_TEXTS))
def test_trails_csv_fast_path_equals_csv_module(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "trails.csv", CSV_TEXTS[name])
    fast, reference = _read_trails_csv(path), _reference_csv_source(path)
    assert list(fast.trails.items()) == list(reference.trails.items())
    assert (fast.review, fast.www_values, fast.www_first) == (reference.review, reference.www_values,
                                                              reference.www_first)


def test_trails_csv_fast_path_only_for_plain_text() -> None:
    assert _csv_rows("a,b,c\nd,e\nf,g,h,i\n\nwww.j,k,l") == (["a", "www.j"], [("b", "c"), ("k", "l")], [1])
    assert _csv_rows("www.a,b,c\nd,e\n") == (["www.a"], [("b", "c")], [0])
    assert _csv_rows("www,.b,c\nww,w.,c\nwww.ü,x,y") == (["www", "ww", "www.ü"], [(".b", "c"), ("w.", "c"), ("x", "y")],
                                                         [2])
    assert _csv_rows("a,b,c\nd,ransomware,f") == (["a", "d"], [("b", "c"), ("ransomware (malware)", "f")], [])
    assert _csv_rows("a,b\n") == ([], [], [])
    assert _csv_rows("") == _csv_rows("\n") == ([], [], [])
    for text in ('a,"b",c\n', "a,b,c\r\n", "a,b,c\rd,e,f", "a,b," + "c" * (csv.field_size_limit() + 1)):
        assert _csv_rows(text) is None
