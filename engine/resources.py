"""Data files shipped inside the package (whitelist, ignore rules, demo trails)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_file(name: str) -> Path:
    return Path(str(resources.files("engine") / "data" / name))
