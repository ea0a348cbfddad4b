"""What a run costs, measured without costing much: peak memory of a phase, and the batch the FLOP count and
the inference timing run on.

Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` after a reset at the start of the phase. On the CPU
it is the process's resident set: ``ru_maxrss`` is exact but can never be reset, so a phase that stays below
an earlier peak (data decoding, say) is measured by sampling the resident set in a background thread instead.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

SAMPLE_INTERVAL_S = 0.05  # resident-set sampling period on the CPU: one small file read, 20 times a second
STATM = Path("/proc/self/statm")


def resident_mb() -> float | None:
    """The process's resident set now (Linux), None where /proc is not there."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def max_resident_mb() -> float:
    """The process's peak resident set since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemoryPeak:
    """Peak memory while the block runs: ``with MemoryPeak(device) as peak: ...``, then ``peak.mb``; entered
    again (every epoch's training steps), the highest of its blocks.

    On the CPU, if the process's all-time peak (``ru_maxrss``) rose inside a block, that rise is the block's
    peak exactly; otherwise the block stayed below an earlier peak and the highest resident set sampled
    every ``SAMPLE_INTERVAL_S`` is the figure (a spike shorter than the interval can be missed)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None
        self.windows: list[tuple[float, float]] = []  # Unix times each block started and ended
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryPeak:
        self._started = time.time()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._before = max_resident_mb()
        self._sampled = 0.0
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="attnbench-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        now = resident_mb()
        if now is not None:
            self._sampled = max(self._sampled, now)

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._sample()
            after = max_resident_mb()
            peak = after if after > self._before or not self._sampled else self._sampled
        self.mb = peak if self.mb is None else max(self.mb, peak)
        self.windows.append((self._started, time.time()))


def leading(batch: Any, size: int, n: int) -> tuple[Any, int]:
    """The first ``n`` samples of a batch whose samples are its first dimension (a tensor of images or of
    padded token rows keeps its width), with their count; other batches (a few-shot episode, whose support
    set every query needs) whole."""
    if isinstance(batch, Tensor) and 0 < n < size:
        return batch[:n], n
    return batch, size
