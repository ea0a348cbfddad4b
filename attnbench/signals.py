"""SIGINT and SIGTERM during a job: stop with the run directory whole, whatever the timing of the signals.

* During training the first signal is a request: the loop stops at the end of the step it is in, saves a
  checkpoint and raises ``Interrupted``; the job records ``interrupted``.
* A second signal, or the first one elsewhere in the job's work (data loading, testing, figures), stops at
  once with ``Interrupted`` as well: the job still records ``interrupted``, and the last checkpoint saved
  stays where it is, so the run resumes from it.
* Neither ever cuts a write to the run directory in half, nor the recording of how the job ended: a signal
  that arrives while a checkpoint, a metric record or the summary is written (``writing``), or outside the
  job's interruptible work, takes effect once that is done.

A job enters ``stop_signals()`` once and runs its work inside ``guard.interruptible()``; the training loop
enters ``stop_signals(polling=True)`` again and reads ``signum`` between steps. Outside any job
(``attnbench bench``, tests) nothing is installed and ``writing`` does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the job. ``signum`` says which; ``saved`` is true when the training loop
    saved a checkpoint at the step it stopped, ``second`` when a second signal stopped it at once.

    A ``BaseException``, like ``KeyboardInterrupt``: code that catches ``Exception`` to carry on (a FLOP
    counter, a W&B fallback) must not swallow a stop."""

    def __init__(self, signum: int, *, saved: bool = False, second: bool = False) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped at once by a second {name}" if second else f"stopped by {name}")
        self.signum, self.saved, self.second = signum, saved, second


class StopSignals:
    """The state of the stop signals of one job. Constructed bare (``attnbench bench``) it is only a flag
    that is never set."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal
        self.count = 0  # stop signals received
        self.polling = 0  # > 0 while a training loop reads ``signum`` between steps
        self.writing = 0  # > 0 while a file of the run directory is being written
        self.open = 0  # > 0 inside work a signal may stop at once (``interruptible``)
        self.deferred: int | None = None  # a signal that arrived during a write, acted on after it
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.polling and self.count == 1:
            return  # the loop stops at the end of this step, with a checkpoint
        if self.open and not self.writing:
            raise Interrupted(signum, second=self.count > 1)
        self.deferred = signum  # acted on when the write, or the recording of the job's end, is done

    def raise_deferred(self) -> None:
        if self.deferred is not None:
            signum, self.deferred = self.deferred, None
            raise Interrupted(signum, second=self.count > 1)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Work a signal may stop at once (outside a write); one that arrived just before acts now."""
        self.raise_deferred()
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1

    def install(self) -> None:
        preemption = preemption_signal()
        for s in (signal.SIGINT, signal.SIGTERM, *([preemption] if preemption else [])):
            self._previous[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def preemption_signal() -> int | None:
    """The signal submitit sends before a SLURM time limit or a preemption (USR2 unless
    SUBMITIT_PREEMPT_SIGNAL names another); None outside a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return int(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))


_active: StopSignals | None = None


def current() -> StopSignals | None:
    return _active


@contextmanager
def stop_signals(polling: bool = False) -> Iterator[StopSignals]:
    """The job's stop signals, installed by the outermost entry (signal handlers live in the main thread
    only: elsewhere nothing is installed). ``polling=True``: a training loop reads ``signum`` meanwhile."""
    global _active
    import threading

    outer = _active is None
    if outer:
        guard = StopSignals()
        if threading.current_thread() is threading.main_thread():
            guard.install()
        _active = guard
    guard = _active
    guard.polling += polling
    guard.open += polling  # a training loop is interruptible work
    try:
        yield guard
    finally:
        guard.polling -= polling
        guard.open -= polling
        if outer:
            guard.restore()
            _active = None


@contextmanager
def writing() -> Iterator[None]:
    """A write to the run directory: a stop signal arriving meanwhile acts when the write is done."""
    guard = _active
    if guard is None:
        yield
        return
    guard.writing += 1
    try:
        yield
    finally:
        guard.writing -= 1
    if guard.open and not guard.writing:
        guard.raise_deferred()


def leave_signals_to_parent() -> None:
    """In a worker process forked by a job (decoding, streaming): SIGINT and SIGTERM are the job's to act on.
    The worker inherited the job's handler, which would raise ``Interrupted`` there and print the worker's
    traceback; it ignores them instead, and ends when the job stops it or goes away."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def die_with_parent() -> None:
    """In a worker process: be killed when the process that started it dies (Linux), even by SIGKILL, rather
    than wait on its task queue forever. A no-op where the kernel has no such request."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)
