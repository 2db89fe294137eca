"""Where the opt-in full-scale tests find Maltrail's static trail set (1.6 M trails): the folder named
by MALTRAIL_STATIC_TRAILS (e.g. Maltrail's `trails/static`, or the static folder of the archive
`maltrail update` fetched), else ../shared/trails/static beside the checkout when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STATIC_ENV = "MALTRAIL_STATIC_TRAILS"
_SHARED_STATIC = Path(__file__).resolve().parents[2] / "shared" / "trails" / "static"


def static_set() -> Path:
    """The static set's folder, or a skip saying how to opt in."""
    chosen = os.environ.get(STATIC_ENV)
    path = Path(chosen).expanduser() if chosen else _SHARED_STATIC
    if not path.is_dir():
        pytest.skip(f"full-scale trail test: no static trail folder at {path} "
                    f"(set {STATIC_ENV} to Maltrail's trails/static to run it)")
    return path
