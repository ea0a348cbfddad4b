"""Sweeps that survive SIGKILL and NaN, checkpoints that cannot be abused, W&B that cannot stop training."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from runner import assert_complete_summary, attnbench, run_dirs, summary

SWEEP = ["train", "-m", "seed=0,1,2,3", "trainer.epochs=3", "logger=none", "model=se"]


def _jobs(sweep: Path) -> list[Path]:
    return sorted(run_dirs(sweep), key=lambda d: d.name)


def test_sweep_killed_in_job_three_finishes_with_one_rerun(tmp_path: Path) -> None:
    attnbench(*SWEEP, "hydra.sweep.dir=straight", cwd=tmp_path, check=True)

    command = [sys.executable, "-m", "attnbench", *SWEEP, "hydra.sweep.dir=killed"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third = tmp_path / "killed" / "logger=none,model=se,seed=2,trainer.epochs=3"
    deadline = time.monotonic() + 240
    while not (third / "checkpoints" / "last.pt").exists():  # job 3 has finished its first epoch
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {d.name: (d / "summary.json").read_bytes() for d in _jobs(tmp_path / "killed")[:2]}
    stamps = {d.name: (d / "summary.json").stat().st_mtime_ns for d in _jobs(tmp_path / "killed")[:2]}
    assert not (third / "summary.json").exists()  # SIGKILL: no chance to write one

    rerun = attnbench(*SWEEP, "hydra.sweep.dir=killed", cwd=tmp_path, check=True)
    jobs = _jobs(tmp_path / "killed")
    assert len(jobs) == 4
    for d in jobs[:2]:  # not retrained: summary untouched
        assert (d / "summary.json").read_bytes() == done[d.name]
        assert (d / "summary.json").stat().st_mtime_ns == stamps[d.name]
    assert rerun.stdout.count("already completed, skipped") == 2
    resumed = [line for line in rerun.stdout.splitlines() if line.startswith("resuming")]
    assert len(resumed) == 1 and third.name in resumed[0]
    for killed, straight in zip(jobs, _jobs(tmp_path / "straight")):
        assert assert_complete_summary(killed)["metrics"] == summary(straight)["metrics"]


def test_nan_job_fails_alone_and_the_sweep_reports_it(tmp_path: Path) -> None:
    result = attnbench("train", "-m", "trainer.lr=0.05,1e12", "trainer.epochs=1", "logger=none",
                       "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 1  # the exit status counts the failed jobs
    assert "2 jobs, 1 completed, 1 failed" in result.stdout
    good, bad = sorted(run_dirs(tmp_path / "sweep"), key=lambda d: "1000000" in d.name)
    assert_complete_summary(good)
    failed = summary(bad)
    assert failed["status"] == "failed" and "nan" in failed["error"] and failed["step"] >= 1
    assert "trainer.lr" in failed["hint"]


def test_no_secret_is_written_and_unreachable_wandb_falls_back_offline(tmp_path: Path) -> None:
    secret = "local-" + "7" * 40
    result = attnbench("train", "trainer.epochs=1", "logger.mode=online", "hydra.run.dir=run", cwd=tmp_path,
                       env={"WANDB_API_KEY": secret, "WANDB_BASE_URL": "http://127.0.0.1:9"}, check=True)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1 and "offline" in warnings[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written beside the run


def test_unwritable_output_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    result = attnbench("train", "hydra.run.dir=a_file/run", cwd=tmp_path)
    assert result.returncode == 2 and "a_file is a file, not a folder" in result.stderr
