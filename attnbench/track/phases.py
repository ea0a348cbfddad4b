"""Where a run's wall time goes: seconds per named phase, and when the process started.

summary.json's ``phases_s`` holds them (start-up, data, model, probe, setup, training steps, validation,
epoch records, test, figures, cost) and ``timeline`` the Unix times that place the job in its process, so
``attnbench bench --runs`` can split a process's wall time, a grid's included, without guessing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Stopwatch:
    """Seconds spent in each named phase, summed over every time the phase is entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)


def process_started_at() -> float | None:
    """Unix time this process started (Linux: its start tick in /proc/self/stat against /proc/uptime, both
    to 10 ms), None where /proc is not there. Start-up (imports, Hydra) runs before any code of ours."""
    try:
        # the fields after the command name, which is in parentheses and may hold spaces; starttime is field 22
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(after_name[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - age
