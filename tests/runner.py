"""Running the CLI as a user types it, and reading what it wrote (the run-directory contract)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
