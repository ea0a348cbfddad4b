"""The run directory: the contract that ``compare``, W&B and the tests rely on.

    <run dir>/
      .hydra/config.yaml      resolved configuration (written by Hydra)
      metrics.jsonl           one JSON object per evaluation
      summary.json            written atomically at the end, on failure and on interruption
      checkpoints/last.pt     everything needed to resume
      checkpoints/best.pt     the weights of the best validation epoch
      figures/                attention pictures
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import UserError


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, fsync it, then rename: readers (and a resume
    after SIGKILL) see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MIN_FREE_MB = 200  # room for a few checkpoints of a mid-sized model; less is refused before training


def check_writable(path: Path) -> None:
    """Refuse, before any training, an output folder that cannot be created or written, or a nearly full disk."""
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file, not a folder" if not existing.is_dir() else "is not writable"
        raise UserError(f"cannot write run directories under {path}: {existing} {why}; "
                        f"choose another place with hydra.run.dir=... (hydra.sweep.dir=... with -m)")
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise UserError(f"only {free_mb:.0f} MB free on the disk holding {existing}; free some space or write "
                        f"elsewhere with hydra.run.dir=... (hydra.sweep.dir=... with -m)")


def json_ready(value: Any) -> Any:
    """NaN and infinities are not JSON: write them as null rather than produce an unreadable file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"
        self.figures = self.path / "figures"
        self.config_path = self.path / ".hydra" / "config.yaml"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(json_ready(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run replays them from its checkpoint)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write(self.metrics_path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(json_ready(summary), indent=2, sort_keys=False) + "\n"
        atomic_write(self.summary_path, lambda f: f.write(text.encode()))

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return None

    # torch is imported where checkpoints are handled, so reading summaries (compare, the CLI) stays light

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        import torch

        atomic_write(path, lambda f: torch.save(state, f))

    def is_unstarted(self) -> bool:
        """Nothing here but what Hydra writes before a job starts (its config and an empty log)."""
        return all(p.name == ".hydra" or (p.name == "train.log" and p.stat().st_size == 0)
                   for p in self.path.iterdir())

    def discard(self, stop: Path) -> None:
        """Remove this run directory and the parents it leaves empty, up to ``stop`` (which stays)."""
        shutil.rmtree(self.path)
        parent = self.path.parent.resolve()
        stop = stop.resolve()
        while parent != stop and stop in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def load_checkpoint(self, path: Path, map_location: str = "cpu") -> dict[str, Any]:
        """Load with ``weights_only=True``: a crafted pickle in a checkpoint cannot execute anything."""
        import torch

        if not path.exists():
            raise UserError(f"no checkpoint at {path}: the run never finished an epoch; start it again")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torch raises several types for truncated or foreign files
            # torch's own message runs to several sentences of advice; its first sentence names the fault
            first = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"checkpoint {path} cannot be loaded ({first}): it is truncated or not an "
                            f"attnbench checkpoint") from e
