"""Scaling out: DDP through torchrun, grids through Hydra's joblib and submitit launchers, SLURM preemption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnbench import cli, launch
from tests.runner import assert_complete_summary, attnbench, run_dirs

# digits, small and fast, still well above chance (~0.97 test accuracy) after 5 epochs on the CPU
FAST = ["data=digits", "model=se", "backbone.widths=[16,32]", "trainer.epochs=5", "trainer.lr=0.1",
        "trainer.warmup_epochs=0", "trainer.batch_size=32"]


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=NPROC -m attnbench ARGS`` as a user types it (gloo on the CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "attnbench", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-job grid (seed=0,1) run side by side by hydra/launcher=joblib; its seed=0 job is also the
    one-process reference of the DDP test."""
    cwd = tmp_path_factory.mktemp("joblib")
    attnbench("train", "-m", "hydra/launcher=joblib", *FAST, "seed=0,1", "logger=none", "hydra.sweep.dir=sweep",
              cwd=cwd, check=True)
    return cwd / "sweep"


def test_joblib_grid_runs_every_job_to_completion(joblib_sweep: Path) -> None:
    jobs = run_dirs(joblib_sweep)
    assert [d.name.split("seed=")[1].split(",")[0] for d in jobs] == ["0", "1"]
    for job in jobs:
        s = assert_complete_summary(job)
        assert s["world_size"] == 1 and s["metrics"]["test/acc"] > 0.9
    assert "JoblibLauncher" in (joblib_sweep / "multirun.yaml").read_text()


def test_torchrun_two_processes_match_one_process(joblib_sweep: Path, tmp_path: Path) -> None:
    torchrun("train", *FAST, "seed=0", cwd=tmp_path)  # W&B on (offline in tests): one W&B run is expected
    [run] = run_dirs(tmp_path)  # one run directory, although Hydra ran in both processes
    two = assert_complete_summary(run)
    one = assert_complete_summary(next(d for d in run_dirs(joblib_sweep) if "seed=0" in d.name))
    assert two["world_size"] == 2
    # the same global batch of 32, split 16 + 16 (each rank its own batch-norm statistics and augmentation)
    assert abs(two["metrics"]["test/acc"] - one["metrics"]["test/acc"]) <= 0.03, (two["metrics"], one["metrics"])
    assert two["metrics"]["test/acc"] > 0.9
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1 and len(list(run.glob("wandb/offline-run-*"))) == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in records] == [(e, s) for e in range(1, 6) for s in ("train", "val")]
    log = (run / "train.log").read_text()
    assert all(log.count(f"epoch {e}/5 ") == 1 for e in range(1, 6)), log  # rank 0 alone writes the log


def _task_processes(sweep: Path) -> dict[Path, int]:
    """The process of each running submitit_local job, by its job folder: the child of the controller whose
    pid names the job's .submitit folder, recognised by the job's train.log it holds open."""
    found = {}
    for controller in (sweep / ".submitit").glob("[0-9]*"):
        try:
            children = Path(f"/proc/{controller.name}/task/{controller.name}/children").read_text().split()
            for pid in children:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.endswith("/train.log"):
                        found[Path(target).parent] = int(pid)
        except OSError:  # the job ended meanwhile
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the job processes through /proc")
def test_submitit_local_grid_and_a_preempted_job_resumes(tmp_path: Path) -> None:
    """Both jobs of a submitit_local grid complete; the one that gets submitit's preemption signal (USR2, as
    SLURM sends before a time limit) saves a checkpoint, is requeued by submitit, and resumes from it."""
    command = [sys.executable, "-m", "attnbench", "train", "-m", "hydra/launcher=submitit_local", *FAST,
               "trainer.epochs=2", "model=none,se", "logger=none", "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the two jobs run side by side
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        preempted = None
        deadline = time.monotonic() + 240
        while preempted is None and proc.poll() is None and time.monotonic() < deadline:
            for job, pid in _task_processes(sweep).items():
                metrics = job / "metrics.jsonl"
                if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # epoch 1 done
                    os.kill(pid, signal.SIGUSR2)
                    preempted = job
                    break
            time.sleep(0.1)
        output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert preempted is not None, output
    jobs = run_dirs(sweep)
    assert len(jobs) == 2
    for job in jobs:
        s = assert_complete_summary(job)
        assert s["epochs"] == 2
        records = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [1, 1, 2, 2]  # nothing lost, nothing logged twice
    submitit_logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in submitit_logs
    assert "resuming" in (preempted / "train.log").read_text()  # the sweep ran once: submitit requeued the job


def test_launcher_configs_compose_and_are_checked() -> None:
    """The pre-flight check composes every job with each shipped launcher config; a misspelt launcher key
    and impossible combinations are refused before anything runs."""
    for launcher in ("submitit_slurm", "submitit_local", "joblib"):
        assert cli.preflight([f"hydra/launcher={launcher}", "model=none,se"], True) is None
    assert "partiton" in cli.preflight(["hydra/launcher=submitit_slurm", "hydra.launcher.partiton=gpu"], True)
    problem = cli.preflight(["hydra/launcher=joblib", "trainer.devices=2", "model=none,se"], True)
    assert "trainer.devices>1" in problem
    assert "trainer.devices must be at least 1" in cli.preflight(["trainer.devices=0"], False)


def test_trainer_devices_starts_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """``attnbench train trainer.devices=2`` becomes ``torchrun --nproc_per_node=2 -m attnbench train …``."""
    class Started(Exception):
        pass

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise Started(argv, env)

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(Started) as started:
        cli.main(["train", "trainer.devices=2", "logger=none"])
    argv, env = started.value.args
    assert argv[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "attnbench",
                        "train", "trainer.devices=2", "logger=none"]
    assert int(env["OMP_NUM_THREADS"]) >= 1


def test_only_rank_zero_writes_hydra_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert launch._rank_zero(".hydra") is None
    monkeypatch.setenv("RANK", "0")
    assert launch._rank_zero(".hydra") == ".hydra"
    plain = "outputs/runs/2026-01-01/12-00-00-000001"
    assert launch.override_value(plain) == plain
    assert launch.override_value("my runs/it's") == "'my runs/it\\'s'"


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_torchrun_on_two_gpus_with_nccl_and_sync_batchnorm(tmp_path: Path) -> None:
    torchrun("train", *FAST, "trainer.sync_batchnorm=true", "logger=none", cwd=tmp_path)
    [run] = run_dirs(tmp_path)
    s = assert_complete_summary(run)
    assert s["world_size"] == 2 and s["device"] == "cuda:0" and s["metrics"]["test/acc"] > 0.9


def test_missing_launcher_plugins_say_what_to_install(tmp_path: Path) -> None:
    hide = ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_joblib_launcher.config",
            "hydra_plugins.hydra_joblib_launcher.joblib_launcher")
    code = (f"import sys; sys.modules.update(dict.fromkeys({hide!r})); from attnbench.cli import main; "
            f"sys.exit(main(['train', '-m', 'hydra/launcher=joblib', 'model=none,se']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pip install 'attnbench[cluster]'" in result.stderr, result.stderr
    assert not (tmp_path / "outputs").exists()
