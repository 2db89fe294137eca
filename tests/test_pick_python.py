"""scripts/pick-python.sh, the interpreter `scripts/setup.sh` makes `.venv` with: MALTRAIL_PYTHON
when set, else the system's python3 when it is 3.11 or newer, else python3 on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pick(tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALTRAIL_PYTHON", "MALTRAIL_SYSTEM_PYTHON")}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "pick-python.sh")], env={**clean, **env}, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _fake(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_explicit_interpreter_wins(tmp_path: Path) -> None:
    assert _pick(tmp_path, MALTRAIL_PYTHON="/opt/py/bin/python3.12", MALTRAIL_SYSTEM_PYTHON=sys.executable) == (
        "/opt/py/bin/python3.12")


def test_system_python_when_new_enough(tmp_path: Path) -> None:
    new = _fake(tmp_path, "python-new", f'exec "{sys.executable}" "$@"')  # this interpreter: 3.11 or newer
    assert _pick(tmp_path, MALTRAIL_SYSTEM_PYTHON=str(new)) == str(new)


def test_path_python_when_system_one_is_old_or_missing(tmp_path: Path) -> None:
    old = _fake(tmp_path, "python-old", 'exec "' + sys.executable + '" -c "import sys; sys.exit(1)"')  # fails the check
    assert _pick(tmp_path, MALTRAIL_SYSTEM_PYTHON=str(old)) == "python3"
    assert _pick(tmp_path, MALTRAIL_SYSTEM_PYTHON=str(tmp_path / "absent")) == "python3"
