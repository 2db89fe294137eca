"""Maltrail ignore-event rules (`data/ignore_events.txt` + `USER_IGNORELIST`), spec section 4.5.

Every whitespace character is removed from a line; blank lines and `#` lines are skipped; a line
with exactly three `;` is a rule `src_ip;src_port;dst_ip;dst_port` where `*` matches anything and
every other field must equal the event's field as a string (ports through `str()`, `-` for none).
Other lines are ignored, as in Maltrail.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.resources import data_file, read_texts

ANY = "*"

Rule = tuple[str, str, str, str]


class IgnoreRulesError(Exception):
    """An ignore-rules file that cannot be used; the message is one line naming the file."""


def _port_text(port: int | str | None) -> str:
    """Ports are compared as Maltrail's `str(port)`; protocols without ports log `-`."""
    if port is None:
        return "-"
    return port if isinstance(port, str) else str(port)


class IgnoreRules:
    """Rules that drop an event when all four of its address/port fields match."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        # Maltrail keeps the rules in a set; a dict keeps that de-duplication with a stable order.
        self.rules: list[Rule] = list(dict.fromkeys(rules))

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> IgnoreRules:
        """Merge several rule files (the bundled one and the user's); a missing file is an error."""
        return cls.from_texts(read_texts(paths, "ignore rules file", IgnoreRulesError))

    @classmethod
    def default(cls) -> IgnoreRules:
        """The bundled `engine/data/ignore_events.txt` (read as a package resource so it works installed)."""
        return cls.from_texts([data_file("ignore_events.txt").read_text(encoding="utf-8")])

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> IgnoreRules:
        """Parse rule-file contents already in memory."""
        rules: list[Rule] = []
        for text in texts:
            for raw in text.split("\n"):
                line = "".join(raw.split())
                if not line or line[0] == "#" or line.count(";") != 3:
                    continue
                src_ip, src_port, dst_ip, dst_port = line.split(";")
                rules.append((src_ip, src_port, dst_ip, dst_port))
        return cls(rules)

    def matches(
        self, src_ip: str, src_port: int | str | None, dst_ip: str, dst_port: int | str | None
    ) -> bool:
        """True when any rule matches the event's four fields (the event is then not logged)."""
        if not self.rules:
            return False
        src_port_text = _port_text(src_port)
        dst_port_text = _port_text(dst_port)
        for rule_src_ip, rule_src_port, rule_dst_ip, rule_dst_port in self.rules:
            if (
                rule_src_ip in (ANY, src_ip)
                and rule_src_port in (ANY, src_port_text)
                and rule_dst_ip in (ANY, dst_ip)
                and rule_dst_port in (ANY, dst_port_text)
            ):
                return True
        return False
