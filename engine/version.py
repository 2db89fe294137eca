"""The installed package's version, looked up on first use: `importlib.metadata` walks every
distribution on the import path (10-20 ms), which the sensor's fork server would otherwise pay on
every start for a string that only event formats, heartbeats and the updater's User-Agent show."""

from __future__ import annotations

from functools import cache


@cache
def package_version() -> str:
    from importlib import metadata  # noqa: PLC0415 - deferred: see the module docstring

    try:
        return metadata.version("maltrail-ng")
    except metadata.PackageNotFoundError:
        return "unknown"
