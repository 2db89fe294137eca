"""Data files shipped inside the package (whitelist, ignore rules, demo trails)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path


def data_file(name: str) -> Path:
    return Path(str(resources.files("engine") / "data" / name))


def read_texts(paths: Iterable[str | Path], what: str, error: type[Exception]) -> list[str]:
    """Contents of several user files; a missing or unreadable one raises `error` naming it."""
    texts = []
    for path in paths:
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise error(f"{what} {path}: not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise error(f"{what} {path}: unreadable ({exc})") from None
    return texts
