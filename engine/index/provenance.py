"""Which whitelist and custom trails an index was built with, so a sensor never uses it silently
with others.

The index records them in its metadata (``provenance``). A sensor or server configured with a
prebuilt index compares its own ``[sensor] whitelist`` / ``default_whitelist`` / ``custom_trails``
with that record: the whitelist must be the same (the index carries the whitelist the workers
apply), and every configured custom folder must be in the index with the same content.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from engine.resources import data_file


def file_digest(path: Path) -> str:
    """sha256 of a file's content (a missing file is reported by the caller's own reader)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(path: Path, content: bool = True) -> str:
    """Digest of a trail folder's ``*.txt`` / ``*.csv`` files: names and content (or size and mtime,
    for large folders read often)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith((".txt", ".csv")):
                continue
            full = Path(root) / name
            digest.update(str(full.relative_to(path)).encode() + b"\0")
            if content:
                digest.update(bytes.fromhex(file_digest(full)))
            else:
                st = full.stat()
                digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def describe(whitelist_files: list[Path], default_whitelist: bool, custom_dirs: list[Path]) -> dict[str, Any]:
    """The provenance record of an index built with these settings."""
    files = ([data_file("whitelist.txt")] if default_whitelist else []) + list(whitelist_files)
    return {
        "default_whitelist": default_whitelist,
        "whitelist": sorted({file_digest(Path(f)) for f in files}),
        "whitelist_files": [str(Path(f).resolve()) for f in whitelist_files],
        "custom": {str(Path(d).resolve()): folder_digest(Path(d)) for d in custom_dirs},
    }


def differences(recorded: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """What differs between an index's record and a configuration's (empty: the index applies)."""
    if recorded is None:
        if wanted["whitelist"] == describe([], True, [])["whitelist"] and not wanted["custom"]:
            return []  # an index from before provenance was recorded, used with the defaults
        return ["the index does not record which whitelist and custom trails built it"]
    out = []
    if recorded.get("whitelist") != wanted["whitelist"]:
        built = "the bundled one" if recorded.get("default_whitelist") else "no bundled one"
        files = ", ".join(recorded.get("whitelist_files", [])) or "no extra file"
        out.append(f"whitelist: the index was built with {built} and {files}; the configuration differs")
    for folder, digest in wanted["custom"].items():
        if folder not in recorded.get("custom", {}):
            out.append(f"custom_trails: {folder} is not in the index")
        elif recorded["custom"][folder] != digest:
            out.append(f"custom_trails: {folder} changed since the index was built")
    return out
