"""The sensor's own update timer (`[update] sensor_updates = true`): `maltrail update` every period.

The update runs as a child process (`maltrail update -c CONFIG --out INDEX`), so its CPU and memory
never touch the capture loop and a crash in it cannot take the sensor down; its one-line result
goes to the sensor's own output. The new index is renamed over the sensor's `--trails` file, which
the reloader adopts; the timer also asks it to look at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.config import ConfigError, SensorConfig, UpdateConfig
from engine.index.fileformat import is_index_file
from engine.reload import Reloader
from engine.update.runner import cache_dir
from engine.update.state import load_state


def update_command(config: Path | None, index: Path) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "update", "--out", str(index)] + (
        ["-c", str(config)] if config is not None else [])


def check_owner(cfg: SensorConfig, ucfg: UpdateConfig) -> Path:
    """The index the sensor updates itself; refused when the configuration cannot work."""
    if ucfg.period_seconds <= 0:
        raise ConfigError("[update] sensor_updates: needs a period > 0 ([update] period)")
    path = Path(cfg.trails).expanduser() if cfg.trails else None
    if path is None or (path.exists() and not is_index_file(path)):
        raise ConfigError("[update] sensor_updates: [sensor] trails must name the index file that the "
                          "update writes (not a trails.csv or a folder)")
    return path


class UpdateTimer:
    """A daemon thread: sleeps until the next update is due, runs it, asks the reloader to look."""

    def __init__(self, config: Path | None, index: Path, ucfg: UpdateConfig) -> None:
        self.command = update_command(config, index)
        self.period = ucfg.period_seconds
        self.state_file = cache_dir(ucfg, index) / "state.json"
        self.reloader: Reloader | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="update-timer", daemon=True)

    def start(self, reloader: Reloader) -> None:
        self.reloader = reloader
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def due_in(self, now: float | None = None) -> float:
        """Seconds until the next update: a period after the last attempt (at once if none ran)."""
        attempts = [r.last_attempt for r in load_state(self.state_file).sources.values() if r.last_attempt]
        last = max(attempts, default=0.0)
        return max(0.0, last + self.period - (time.time() if now is None else now))

    def run_once(self) -> int:
        """One update now; its exit status (its output goes where the sensor's goes)."""
        self.runs += 1
        code = subprocess.run(self.command, stdin=subprocess.DEVNULL, check=False).returncode
        if code == 0 and self.reloader is not None:
            self.reloader.request("update timer")
        return code

    def _loop(self) -> None:
        while not self._stop.wait(self.due_in()):
            self.run_once()
            self._stop.wait(1.0)  # the state file says when the next one is due
