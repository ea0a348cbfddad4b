"""Running the CLI as a user types it, and reading what it wrote (the run-directory contract)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def attnbench(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run ``attnbench ARGS`` in a subprocess, in ``cwd`` (where outputs/ is written)."""
    result = subprocess.run([sys.executable, "-m", "attnbench", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"attnbench {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding .hydra/config.yaml) under ``root``, sorted."""
    return sorted(p.parent.parent for p in root.rglob(".hydra/config.yaml") if p.parent.parent != root)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


SUMMARY_KEYS = {"status", "task", "data", "backbone", "model", "seed", "overrides", "primary", "metrics", "params",
                "attention_params", "flops_per_sample", "train_samples_per_s", "eval_samples_per_s",
                "peak_memory_mb", "wall_time_s", "device", "versions"}


def assert_complete_summary(run_dir: Path) -> dict:
    """summary.json exists, is completed and holds every key of the run-directory contract."""
    s = summary(run_dir)
    assert s["status"] == "completed", s
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert s["primary"]["value"] is not None and s["primary"]["name"] in s["metrics"]
    assert all("/" in name for name in s["metrics"])
    assert set(s["versions"]) >= {"torch", "attnbench"}
    return s


def wandb_records(run_dir: Path) -> list:
    """The records of a run's one offline ``.wandb`` file (or of the ``.wandb`` file given), parsed with
    W&B's own protobuf messages.

    The file is a LevelDB-style log (W&B's writer): a 7-byte header (``:W&B``, magic, version), then 32 KiB
    blocks of chunks, each a 7-byte header (CRC, little-endian length, kind: 1 full, 2 first, 3 middle, 4 last).
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    [path] = [run_dir] if run_dir.suffix == ".wandb" else run_dir.glob("wandb/offline-run-*/*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, chunk, records = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_summary(run_dir: Path) -> dict:
    """The run's final W&B summary: every summary update of the file applied in order."""
    out: dict = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
            for item in record.summary.remove:
                out.pop("/".join(item.nested_key) or item.key, None)
    return out


def wandb_run(run_dir: Path):
    """The run record (name, project, group, job type, tags, config) of a run's offline W&B file."""
    return next(r.run for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "run")


COST_KEYS = ("params", "attention_params", "flops_per_sample", "train_samples_per_s", "eval_samples_per_s",
             "peak_memory_mb", "wall_time_s", "best_epoch")


def assert_wandb_agrees(run_dir: Path) -> dict:
    """W&B's final summary holds summary.json's metrics, primary and cost figures, key by key."""
    s, w = summary(run_dir), wandb_summary(run_dir)
    for key in [*s["metrics"], *COST_KEYS]:
        expected = s["metrics"][key] if key in s["metrics"] else s[key]
        assert w.get(key) == expected, (run_dir, key, w.get(key), expected)
    assert w["primary"] == s["primary"] and w["status"] == s["status"]
    return w


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120, interval: float = 0.02) -> None:
    """Until ``path`` exists (a checkpoint, a lock a run holds), checking every ``interval`` seconds; fails if
    ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(interval)


@contextlib.contextmanager
def fails_if_it_hangs(what: str, seconds: int = 30) -> Iterator[None]:
    """Within the block, a call that blocks (a FIFO opened for reading) fails the test after ``seconds``
    instead of hanging the suite: SIGALRM raises TimeoutError naming ``what``."""
    def hung(*_: object) -> None:
        raise TimeoutError(what)

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
