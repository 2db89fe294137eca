"""Small file helpers shared by the shipper and the collector: the day files of a log folder, and
JSON state written atomically (and durably when it records what was committed)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}\.log\Z")
SENSORS_DIR = "sensors"  # under the server's log folder: one folder of day files per collected sensor


def day_files(folder: Path) -> list[str]:
    """Names of the `YYYY-MM-DD.log` files in `folder`, oldest first."""
    try:
        return sorted(e.name for e in os.scandir(folder) if DAY_FILE.match(e.name) and e.is_file())
    except FileNotFoundError:
        return []


def write_json(path: Path, data: dict[str, Any], durable: bool = False) -> None:
    """Replace `path` in one rename; `durable`: the content and the rename reach the disk first."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it does not exist yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OSError(f"{path}: unreadable state ({exc})") from None
    return data if isinstance(data, dict) else {}
