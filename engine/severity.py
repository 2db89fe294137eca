"""Severity: decided once, on the server, from ordered rules (first match wins).

Every event gets its severity when it is indexed; the API, the UI and every export read that
stored value, so they can never disagree (Maltrail's UI and alerter use two different rule sets).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

LOW, MEDIUM, HIGH = 1, 2, 3
NAMES = {LOW: "low", MEDIUM: "medium", HIGH: "high"}
LEVELS = {v: k for k, v in NAMES.items()}
RULE_FIELDS = ("type", "trail", "info", "reference")

# Maltrail's keyword classes, in the order that makes the specific phrases win.
DEFAULT_RULES: tuple[dict[str, str], ...] = (
    {"severity": "high", "reference": r"\(custom\)"},
    {"severity": "medium", "info": r"potential malware site|malware distribution|malware hosting"},
    {"severity": "high", "info": r"malware|ransomware|adversary|c&c|\bc2\b|botnet|trojan|backdoor|stealer|"
                                 r"\brat\b|sinkhole|\bapt\b|exploit kit|cryptominer|keylogger"},
    {"severity": "high", "reference": r"malwaredomainlist"},
    {"severity": "low", "info": r"mass scanner|reputation|attacker|spammer|compromised|crawler|scanning|"
                                r"scanner|tor exit"},
    {"severity": "medium", "info": r"suspicious|phishing|dynamic domain|domain \(suspicious\)|web shell"},
)


@dataclass(frozen=True)
class Rule:
    level: int
    patterns: tuple[tuple[int, re.Pattern[str]], ...]  # (field position, regex)


class Severity:
    """Compiled rules; `of(type, trail, info, reference)` is cached per distinct tuple."""

    def __init__(self, rules: list[dict[str, str]]) -> None:
        self.source = [dict(r) for r in rules] + [dict(r) for r in DEFAULT_RULES]
        self.rules = [compile_rule(r) for r in self.source]
        self._cache: dict[tuple[str, str, str, str], int] = {}

    @property
    def fingerprint(self) -> str:
        """Changes whenever the rules do (the index is then rebuilt with the new values)."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True).encode()).hexdigest()[:16]

    def of(self, type_: str, trail: str, info: str, reference: str) -> int:
        key = (type_, trail, info, reference)
        level = self._cache.get(key)
        if level is None:
            level = MEDIUM
            for rule in self.rules:
                if all(p.search(key[i]) for i, p in rule.patterns):
                    level = rule.level
                    break
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = level
        return level


def compile_rule(rule: dict[str, str], where: str = "severity rule") -> Rule:
    """Raises ValueError naming the field for anything malformed."""
    if not isinstance(rule, dict):
        raise ValueError(f"{where}: expected a table")
    level = LEVELS.get(rule.get("severity", ""))  # type: ignore[arg-type]
    if level is None:
        raise ValueError(f"{where}: severity must be one of high, medium, low")
    unknown = set(rule) - {"severity", *RULE_FIELDS}
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r} (known: severity, {', '.join(RULE_FIELDS)})")
    patterns = []
    for i, name in enumerate(RULE_FIELDS):
        if name in rule:
            value = rule[name]
            if not isinstance(value, str):
                raise ValueError(f"{where}.{name}: expected a string")
            try:
                patterns.append((i, re.compile(value, re.IGNORECASE)))
            except re.error as exc:
                raise ValueError(f"{where}.{name}: invalid regex: {exc}") from None
    if not patterns:
        raise ValueError(f"{where}: give at least one of {', '.join(RULE_FIELDS)}")
    return Rule(level, tuple(patterns))
