"""`engine.proctree.pid_alive`: a zombie (exited, not reaped) counts as gone, so workers and the
aggregator stop when their sensor was killed even if nobody reaped it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from engine.proctree import pid_alive


def test_running_zombie_and_gone() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while b") Z " not in Path(f"/proc/{child.pid}/stat").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.kill(child.pid, 0) is None  # kill() still succeeds on the zombie ...
        assert not pid_alive(child.pid)  # ... but it is not alive
    finally:
        child.wait()
    assert not pid_alive(child.pid)
