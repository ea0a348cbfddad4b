"""What the user sees in the terminal: a rich progress bar while training, a closing table, one-line notes.

Messages also go to the Python logger, which Hydra writes to ``train.log`` in the run directory.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=False, highlight=False)
log = logging.getLogger("attnbench")
log.addHandler(logging.NullHandler())  # outside a Hydra job (no handlers yet) records go nowhere, not to stderr


def info(message: str) -> None:
    console.print(message, soft_wrap=True)
    log.info(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)
    log.warning(message)


def deprecated(message: str) -> None:
    """A renamed key or value still in use: one line on stderr, so `--cfg job` output stays clean YAML."""
    if not console.quiet:
        print(f"warning: deprecated: {message}", file=sys.stderr, flush=True)
    log.warning("deprecated: %s", message)


def error(message: str) -> None:
    """The one line a user error ends with (stderr, no traceback); DDP ranks other than 0 (quiet) leave it
    to rank 0, which meets the same error."""
    if not console.quiet:
        print(f"error: {message}", file=sys.stderr, flush=True)
    log.error(message)


def interrupted(message: str) -> None:
    """The line a run stopped by SIGINT or SIGTERM ends with: the user asked for it, so it is no error."""
    if not console.quiet:
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
    log.warning("interrupted: %s", message)


@contextmanager
def phase(message: str) -> Iterator[None]:
    """A step of a run that prints nothing of its own (testing, timing, figures): a line saying what it does
    and, on a terminal, a spinner while it lasts, so the run never looks stuck."""
    info(f"{message}…")
    if not console.is_terminal or console.quiet:
        yield
        return
    with console.status(message):
        yield


class TrainingProgress:
    """Epoch, step, loss, lr, samples/s and ETA; redrawn live on a terminal, silent otherwise. The trainer
    updates it every ``trainer.log_every`` steps or every second, whichever comes first."""

    def __init__(self, total_steps: int, epochs: int) -> None:
        self.epochs = epochs
        self.progress = Progress(
            # 80 columns at most: a narrow bar, the step count without a label, no elapsed time
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}{task.fields[doing]}"),
            BarColumn(bar_width=8),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]}/s"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task: TaskID = self.progress.add_task("train", total=total_steps, epoch=0, epochs=epochs,
                                                   doing="", loss="-", lr="-", speed="-")

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def doing(self, what: str) -> None:
        """Say on the bar what the run does between training steps (``validating``); empty to clear."""
        self.progress.update(self.task, doing=f" {what}" if what else "")

    def update(self, step: int, epoch: int, loss: float, lr: float, samples_per_s: float) -> None:
        self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.1e}",
                             speed=f"{samples_per_s:,.0f}")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['task']} · data={summary['data']} · backbone={summary['backbone']} · "
                        f"model={summary['model']} · seed={summary['seed']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(name, format_value(value))
    for key in ("params", "attention_params", "flops_per_sample", "train_samples_per_s", "eval_samples_per_s",
                "peak_memory_mb", "wall_time_s"):
        table.add_row(key, format_value(summary.get(key)))
    return table
