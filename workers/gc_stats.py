"""Opt-in accounting of the garbage collector's pauses in a worker (SIGNOFF_GC_STATS=FILE).

Why: a worker holding a thousand releases in its workflow cache has hundreds of thousands of
objects for Python's collector to walk, and at 10,000 waiting releases almost every approval
rebuilds an evicted release, so full collections come often. `bench/bench_capacity.py` sets the
variable and reads the file at the start and the end of a drain: how many of the worker's CPU
milliseconds per release went to collecting, at each size. Unset, nothing is installed.

The file holds cumulative figures per generation (collections, seconds, longest pause), rewritten
every two seconds and when the process exits.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

ENV = "SIGNOFF_GC_STATS"


class GcStats:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        self._lock = threading.Lock()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        gen = int(info.get("generation", 0))
        self.collections[gen] += 1
        self.seconds[gen] += took
        self.longest[gen] = max(self.longest[gen], took)

    def snapshot(self) -> dict[str, Any]:
        return {
            "at": time.time(),
            "collections": list(self.collections),
            "seconds": [round(s, 4) for s in self.seconds],
            "longest_seconds": [round(s, 4) for s in self.longest],
        }

    def write(self) -> None:
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.path)

    def _loop(self) -> None:
        while self.write_quietly():
            time.sleep(2.0)

    def write_quietly(self) -> bool:
        """Write the figures; False (and no traceback) when the file cannot be written: the
        accounting is a diagnostic and must never stop or spoil a worker."""
        try:
            self.write()
            return True
        except OSError:
            return False


def install_from_env() -> GcStats | None:
    """Start accounting when SIGNOFF_GC_STATS names a file; None when it is unset."""
    where = os.environ.get(ENV, "").strip()
    if not where:
        return None
    stats = GcStats(Path(where))
    gc.callbacks.append(stats)
    threading.Thread(target=stats._loop, name="gc-stats", daemon=True).start()
    atexit.register(stats.write_quietly)
    return stats


def read(path: Path) -> dict[str, Any] | None:
    """The figures a worker last wrote, or None when there are none yet."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
