"""What the user sees in the terminal: a rich progress bar while training, a closing table, one-line notes.

Messages also go to the Python logger, which Hydra writes to ``train.log`` in the run directory.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from ..printable import markup, printable

console = Console(stderr=False, highlight=False)
log = logging.getLogger("attnbench")
log.addHandler(logging.NullHandler())  # outside a Hydra job (no handlers yet) records go nowhere, not to stderr


def fitted() -> bool:
    """Whether lines are wrapped to the console's width: on a terminal, or where COLUMNS says how wide the
    reader's is. Piped without COLUMNS, a line stays whole (a log, grep)."""
    return console.is_terminal or "COLUMNS" in os.environ


# Messages are plain text, whatever names and paths they hold: info, warn, error and phase print them through
# ``printable``/``markup``, so a run directory named ``…[v2]`` prints as itself and ``[/]`` cannot end the run.

def info(message: str) -> None:
    console.print(markup(message), soft_wrap=not fitted())
    log.info(printable(message))


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {markup(message)}", soft_wrap=not fitted())
    log.warning(printable(message))


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 10 s``, ``1 h 24 min``: a time as a person reads it."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def shown(path: str | os.PathLike) -> str:
    """A path as a line shows it: relative to the working directory when it is under it (outputs/runs/…),
    so that it fits the terminal's width; absolute otherwise."""
    from pathlib import Path

    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def deprecated(message: str) -> None:
    """A renamed key or value still in use: one line on stderr, so `--cfg job` output stays clean YAML."""
    if not console.quiet:
        print(f"warning: deprecated: {printable(message)}", file=sys.stderr, flush=True)
    log.warning("deprecated: %s", message)


def error(message: str) -> None:
    """The one line a user error ends with (stderr, no traceback); DDP ranks other than 0 (quiet) leave it
    to rank 0, which meets the same error."""
    if not console.quiet:
        print(f"error: {printable(message)}", file=sys.stderr, flush=True)
    log.error(printable(message))


def interrupted(message: str) -> None:
    """The line a run stopped by SIGINT or SIGTERM ends with: the user asked for it, so it is no error."""
    if not console.quiet:
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
    log.warning("interrupted: %s", message)


@contextmanager
def phase(message: str) -> Iterator[Callable[[str], None]]:
    """A step of a run that prints nothing of its own (testing, timing, figures): a line saying what it does
    and, on a terminal, a spinner while it lasts, so the run never looks stuck. It yields a function that
    puts a progress line (``decoding …: 1,024/50,000 images``) beside the spinner, where it redraws in place."""
    info(f"{message}…")
    if not console.is_terminal or console.quiet:
        yield lambda text: None
        return
    with console.status(markup(message)) as status:
        yield lambda text: status.update(markup(text))


class TrainingProgress:
    """Epoch, step, loss, samples/s and the time left (evaluation included: the trainer's ``RunClock``);
    redrawn live on a terminal, silent otherwise. The trainer updates it every ``trainer.log_every`` steps or
    every second, whichever comes first. The learning rate is in each epoch's record, not here: the bar
    fits 80 columns."""

    def __init__(self, total_steps: int, epochs: int) -> None:
        self.epochs = epochs
        self.progress = Progress(
            # 80 columns at most: a narrow bar, the step count without a label, no elapsed time
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}{task.fields[doing]}"),
            BarColumn(bar_width=8),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}/s"),
            TextColumn("{task.fields[left]} left"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task: TaskID = self.progress.add_task("train", total=total_steps, epoch=0, epochs=epochs,
                                                   doing="", loss="-", speed="-", left="-")

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def doing(self, what: str) -> None:
        """Say on the bar what the run does between training steps (``validating``); empty to clear."""
        self.progress.update(self.task, doing=f" {what}" if what else "")

    def update(self, step: int, epoch: int, loss: float, samples_per_s: float, left_s: float | None) -> None:
        self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=f"{loss:.4f}",
                             speed=f"{samples_per_s:,.0f}" if samples_per_s else "-",
                             left="-" if left_s is None else duration(left_s))


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def summary_table(summary: dict[str, Any]) -> Table:
    title = markup(f"{summary['task']} · data={summary['data']} · backbone={summary['backbone']} · "
                   f"model={summary['model']} · seed={summary['seed']}")
    # as wide as its title (up to the terminal's width), so that the title is one line above two columns
    table = Table(title=title, show_header=True, min_width=min(len(title), console.width))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["metrics"].items():
        table.add_row(markup(name), markup(format_value(value)))
    for key in ("params", "attention_params", "flops_per_sample", "train_samples_per_s", "eval_samples_per_s",
                "peak_memory_mb", "wall_time_s"):
        table.add_row(key, format_value(summary.get(key)))
    return table
