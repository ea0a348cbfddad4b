"""The run directory: the contract that ``compare``, W&B and the tests rely on.

    <run dir>/
      .hydra/config.yaml      resolved configuration (with hydra.yaml and overrides.yaml), written once the
                              directory is known to be this job's (``write_hydra_files``)
      metrics.jsonl           one JSON object per evaluation
      summary.json            written atomically at the end, on failure and on interruption
      checkpoints/last.pt     everything needed to resume
      checkpoints/best.pt     the weights of the best validation epoch
      figures/                attention pictures
      .attnbench.lock         while a process writes here: its pid (``lock.py``); removed when it ends

A directory belongs to one run: a new run refuses a directory that holds one (``holds_run``), and a process
that gives up before training removes exactly what it added (``Claim``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import UserError
from ..signals import writing
from .lock import LOCK_NAME, DirectoryLock


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
        os.fchmod(fd, 0o666 & ~_umask())  # as an ordinary file would be, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


# what a run writes into its directory; a directory holding any of them belongs to that run
RUN_FILES = (".hydra", "train.log", "metrics.jsonl", "summary.json", "checkpoints")


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
        line = json.dumps(json_ready(record)) + "\n"
        with writing(), self.metrics_path.open("a") as f:
            f.write(line)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run replays them from its checkpoint)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        with writing():
            atomic_write(self.metrics_path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(json_ready(summary), indent=2, sort_keys=False) + "\n"
        with writing():
            atomic_write(self.summary_path, lambda f: f.write(text.encode()))

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, or None when there is none to read: missing, unreadable, not a JSON object, or no
        regular file (a FIFO under its name would block the read for ever)."""
        try:
            fd = os.open(self.summary_path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                summary = json.loads(f.read())
            except (OSError, ValueError, RecursionError):
                return None
        return summary if isinstance(summary, dict) else None  # a list or a number is no summary either

    # torch is imported where checkpoints are handled, so reading summaries (compare, the CLI) stays light

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        import torch

        with writing():
            atomic_write(path, lambda f: torch.save(state, f))

    def check_layout(self) -> None:
        """Refuse, before a resume writes anything, a run directory whose own entries are of the wrong kind (a
        folder where a file goes, a FIFO that would block the write for ever, a file where a folder goes)."""
        for name, folder in (("summary.json", False), ("metrics.jsonl", False), ("train.log", False),
                             ("checkpoints", True), ("figures", True), (".hydra", True)):
            entry = self.path / name
            if not os.path.lexists(entry):
                continue
            if entry.is_dir() if folder else entry.is_file():  # a link to the right kind is the user's choice
                continue
            kind = "a folder" if folder else "a regular file"
            raise UserError(f"{entry} is not {kind}, which a run keeps there: the run directory is damaged; move "
                            f"it away or start the run again in a fresh directory")

    def holds_run(self) -> bool:
        """Something a run writes is here already: its config, log, metrics, checkpoints or summary."""
        return any((self.path / name).exists() for name in RUN_FILES)

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


def write_hydra_files(run_dir: Path, config: Any, hydra_config: Any, overrides: list[str]) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them (``hydra.output_subdir``
    is null in conf/config.yaml: attnbench writes them itself, once it knows the job runs in this directory,
    so a refused run or a completed job a sweep skips keeps its files as they were)."""
    from omegaconf import OmegaConf

    folder = Path(run_dir) / ".hydra"
    for name, node in (("config.yaml", config), ("hydra.yaml", OmegaConf.create({"hydra": hydra_config})),
                       ("overrides.yaml", OmegaConf.create(list(overrides)))):
        text = OmegaConf.to_yaml(node)
        with writing():
            atomic_write(folder / name, lambda f, text=text: f.write(text.encode()))


WHERE_ELSE = "choose another place with hydra.run.dir=... (hydra.sweep.dir=... with -m)"


def _os_error(e: OSError, path: Path, action: str, advice: str = WHERE_ELSE) -> UserError:
    """A file-system refusal as one line that says what to do."""
    import errno

    if e.errno in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot {action} {path}: permission denied; make it writable or {advice}")
    if e.errno == errno.EROFS:
        return UserError(f"cannot {action} {path}: the file system is read-only; {advice}")
    if e.errno == errno.ENOSPC:
        return UserError(f"cannot {action} {path}: the disk is full; free some space or {advice}")
    return UserError(f"cannot {action} {path}: {e.strerror or e}; {advice}")


class Claim:
    """A directory this process is about to write in, locked (``DirectoryLock``), with what was there before.

    ``undo`` removes exactly what the process added since: the directory itself and the parents it created
    when it made them, else only the entries that were not there; ``release`` only unlocks."""

    def __init__(self, path: str | Path, what: str = "run", advice: str = WHERE_ELSE) -> None:
        self.path, self.what, self.advice = Path(path), what, advice
        self.created: list[Path] = []  # folders this process made, outermost first
        self.before: set[str] = set()
        self.lock: DirectoryLock | None = None

    def take(self) -> Claim:
        missing, folder = [], _key(self.path)
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            for folder in reversed(missing):
                try:
                    folder.mkdir()
                except FileExistsError:  # made by someone else meanwhile: not ours to remove
                    continue
                self.created.append(folder)
            self.before = set(os.listdir(self.path)) - {LOCK_NAME}
            self.lock = DirectoryLock(self.path, self.what).acquire()
        except OSError as e:
            self._remove_created()
            raise _os_error(e, self.path, "write in", self.advice) from None
        except BaseException:
            self._remove_created()
            raise
        _claims[_key(self.path)] = self
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        _claims.pop(_key(self.path), None)

    def undo(self) -> None:
        """Remove what this process added, then unlock."""
        self.release()
        if _key(self.path) in self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for name in set(os.listdir(self.path)) - self.before - {LOCK_NAME}:
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            if not folder.exists():
                continue
            try:
                folder.rmdir()  # only if empty: something another process put there stays
            except OSError:
                break
        self.created = [f for f in self.created if f.exists()]


_claims: dict[Path, Claim] = {}


def _key(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


def claimed(path: str | Path) -> Claim | None:
    """The claim this process holds on ``path`` (taken by the CLI before Hydra started), if any."""
    return _claims.get(_key(path))


def release_claims() -> None:
    """Unlock every directory this process claimed (the CLI, when Hydra is done)."""
    for claim in list(_claims.values()):
        claim.release()
