"""A run directory belongs to one run, one writer at a time: refused runs, locks, double signals, NaN, full
disks, and grid reruns that touch nothing they need not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner import assert_complete_summary, attnbench, run_dirs, summary, wait_for

from attnbench.errors import UserError
from attnbench.track.lock import LOCK_NAME, DirectoryLock

GRID = ["train", "-m", "seed=0,1", "trainer.epochs=3", "logger=none", "model=se"]


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "attnbench", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)



# ---------------------------------------------------------------------------------------- locks


def test_a_lock_is_refused_while_its_holder_lives_and_taken_over_when_it_is_dead(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from attnbench.track.lock import DirectoryLock; "
        f"DirectoryLock(Path({str(tmp_path)!r}), 'sweep').acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"attnbench pid {holder.pid} is writing its sweep now"):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # SIGKILL left its lock file
    with DirectoryLock(tmp_path):  # its process is dead: taken over
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()  # released: the folder is as it was


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).symlink_to(target)
    result = attnbench("train", f"hydra.run.dir={run_dir}", "logger=none", "trainer.epochs=1", cwd=tmp_path)
    assert result.returncode == 2 and "is a symbolic link" in _one_line(result)
    assert target.read_text() == "keep me\n" and (run_dir / LOCK_NAME).is_symlink()
    with pytest.raises(UserError, match="hard link"):
        os.unlink(run_dir / LOCK_NAME)
        os.link(target, run_dir / LOCK_NAME)
        DirectoryLock(run_dir).acquire()
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("how", ["fork", "inherited"])
def test_a_lock_is_released_when_its_owner_dies_though_its_children_live(tmp_path: Path, how: str) -> None:
    """A decode worker forked by the owner closes its copy of the lock; a process that inherited the lock file
    some other way does not keep a dead owner's lock either."""
    if how == "fork":
        spawn = ("import multiprocessing as mp; "
                 "mp.get_context('fork').Process(target=time.sleep, args=(60,), daemon=False).start()")
    else:
        spawn = ("import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
                 "pass_fds=[lock.fd])")
    owner = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time; from pathlib import Path; from attnbench.track.lock import DirectoryLock; "
        f"lock = DirectoryLock(Path({str(tmp_path)!r})).acquire(); {spawn}; print('locked', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {owner.pid}"):
            DirectoryLock(tmp_path).acquire()
        owner.kill()  # SIGKILL: its child lives on
        owner.wait()
        with DirectoryLock(tmp_path):
            assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        os.killpg(owner.pid, signal.SIGKILL)


def test_a_grid_job_folder_outside_its_sweep_or_holding_another_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    attnbench("train", f"hydra.run.dir={run}", "logger=none", "trainer.epochs=1", cwd=tmp_path, check=True)
    interrupted = {**summary(run), "status": "interrupted"}
    (run / "summary.json").write_text(json.dumps(interrupted))
    before = _files(run)
    sweep = tmp_path / "sweep"
    result = attnbench("train", "-m", "model=se", "logger=none", "trainer.epochs=1", f"hydra.sweep.dir={sweep}",
                       "hydra.sweep.subdir=../run", cwd=tmp_path)
    assert result.returncode == 2 and "not inside the sweep folder" in _one_line(result)
    assert _files(run) == before
    # the same run copied into the grid's job folder: another configuration (model=cbam), left as it is
    (sweep / "job").mkdir(parents=True)
    for name, (content, _) in before.items():
        (sweep / "job" / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep / "job" / name).write_bytes(content)
    result = attnbench("train", "-m", "model=se", "logger=none", "trainer.epochs=1", f"hydra.sweep.dir={sweep}",
                       "hydra.sweep.subdir=job", cwd=tmp_path)
    assert result.returncode == 2 and "holds a run of another configuration" in _one_line(result)
    assert {k: v[0] for k, v in _files(sweep / "job").items()} == {k: v[0] for k, v in before.items()}


def test_two_grids_on_one_sweep_folder_the_second_is_refused(tmp_path: Path) -> None:
    # three jobs: the first process holds the folder long enough for the second to start
    grid = ["train", "-m", "seed=0,1,2", "trainer.epochs=3", "logger=none", "model=se", "hydra.sweep.dir=grid"]
    first = _start(grid, tmp_path)
    wait_for(tmp_path / "grid" / LOCK_NAME, first, timeout=240, interval=0.005)
    second = attnbench(*grid, cwd=tmp_path)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    line = _one_line(second)
    assert f"grid is in use: attnbench pid {first.pid} is writing its sweep now" in line, line
    jobs = run_dirs(tmp_path / "grid")
    assert len(jobs) == 3
    for job in jobs:
        assert_complete_summary(job)
        records = [(r["epoch"], r["split"]) for r in map(json.loads, (job / "metrics.jsonl").read_text().splitlines())]
        assert sorted(records) == sorted((e, s) for e in (1, 2, 3) for s in ("train", "val")), records  # once each
    assert not list((tmp_path / "grid").rglob(LOCK_NAME))


def test_resume_while_another_process_writes_the_run_is_refused(tmp_path: Path) -> None:
    attnbench("train", "trainer.epochs=1", "logger=none", "hydra.run.dir=run", cwd=tmp_path, check=True)
    (tmp_path / "run" / "summary.json").unlink()  # as SIGKILL leaves it
    before = _files(tmp_path / "run")
    with DirectoryLock(tmp_path / "run"):
        result = attnbench("train", "resume=run", cwd=tmp_path)
    assert result.returncode == 2
    assert f"run is in use: attnbench pid {os.getpid()} is writing its run now" in _one_line(result)
    assert _files(tmp_path / "run") == before


# ---------------------------------------------------------------------------------------- refused runs


def test_a_refused_run_leaves_a_folder_it_did_not_make_as_it_found_it(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / "images" / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8)).save(tmp_path / "images" / split / label / f"{i}.png")
    # a grayscale image where the first one was RGB is fine; a truncated PNG is found only while decoding
    (tmp_path / "images" / "test" / "dog" / "2.png").write_bytes((tmp_path / "images" / "test" / "dog" /
                                                                   "0.png").read_bytes()[:40])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    before = _files(tmp_path)
    for run_dir in ("mine", "new/deep/run"):
        result = attnbench("train", "logger=none", "data=image_folder", "data.path=images",
                           f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert result.returncode == 2
        assert "cannot decode images/test/dog/2.png" in _one_line(result)
        assert _files(tmp_path) == before
        assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
        assert not (tmp_path / "new").exists()  # every folder it made itself is gone


def test_a_single_run_whose_loss_goes_nan_at_step_two_keeps_a_failed_summary(tmp_path: Path) -> None:
    result = attnbench("train", "logger=none", "trainer.epochs=1", "trainer.lr=1e38", "hydra.run.dir=nan",
                       cwd=tmp_path)
    assert result.returncode == 2
    line = _one_line(result)
    assert "the loss became nan at step 2" in line and "run directory:" in line, line
    failed = summary(tmp_path / "nan")
    assert failed["status"] == "failed" and failed["step"] == 2, failed
    assert "trainer.lr" in failed["hint"] and "step 2" in failed["error"]
    assert (tmp_path / "nan" / ".hydra" / "config.yaml").exists() and (tmp_path / "nan" / "train.log").exists()


# ---------------------------------------------------------------------------------------- grids and signals


def test_double_ctrl_c_in_a_grid_job_records_interrupted_and_the_rerun_resumes_it(tmp_path: Path) -> None:
    attnbench(*GRID, "hydra.sweep.dir=straight", cwd=tmp_path, check=True)

    process = _start([*GRID, "hydra.sweep.dir=grid"], tmp_path)
    job = tmp_path / "grid" / "logger=none,model=se,seed=0,trainer.epochs=3"
    # job 1 has finished its first epoch
    wait_for(job / "checkpoints" / "last.pt", process, timeout=240, interval=0.005)
    process.send_signal(signal.SIGINT)
    time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped" in lines[0] and "run the same command again" in lines[0], err
    stopped = summary(job)
    assert stopped["status"] == "interrupted", stopped
    assert (job / "checkpoints" / "last.pt").exists()

    rerun = attnbench(*GRID, "hydra.sweep.dir=grid", cwd=tmp_path, check=True)
    assert f"resuming {job}" in rerun.stdout
    assert f"resuming {job}" in (job / "train.log").read_text()  # train.log shows the resume
    for resumed, straight in zip(run_dirs(tmp_path / "grid"), run_dirs(tmp_path / "straight")):
        assert assert_complete_summary(resumed)["metrics"] == summary(straight)["metrics"]


def test_a_grid_rerun_touches_no_completed_job_and_resumes_a_failed_one_from_its_checkpoint(tmp_path: Path) -> None:
    attnbench("train", "-m", "seed=0,1", "trainer.epochs=1", "logger=none", "hydra.sweep.dir=grid", cwd=tmp_path,
              check=True)
    done, failed = run_dirs(tmp_path / "grid")
    marked = {**summary(failed), "status": "failed", "error": "RuntimeError: out of memory"}  # after its checkpoint
    (failed / "summary.json").write_text(json.dumps(marked))
    before = _files(done)
    checkpoint = (failed / "checkpoints" / "last.pt").read_bytes()

    # an extra override the folder names leave out (trainer.device) must not be recorded in the skipped job
    rerun = attnbench("train", "-m", "seed=0,1", "trainer.epochs=1", "logger=none", "hydra.sweep.dir=grid",
                      "trainer.device=cpu", cwd=tmp_path, check=True)
    assert f"{done}: already completed, skipped" in rerun.stdout
    assert _files(done) == before  # .hydra/, train.log, everything: bytes and times
    assert f"resuming {failed}" in rerun.stdout  # a valid last.pt is never thrown away
    assert (failed / "checkpoints" / "last.pt").read_bytes() == checkpoint  # nothing left to train
    assert_complete_summary(failed)


# ---------------------------------------------------------------------------------------- errors inside a run

DRIVER = """
import errno, sys
from attnbench.cli import main
from attnbench.track.run import RunDirectory

def broken(self, path, state):
    if {fault!r} == "disk":
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    if {fault!r} == "permission":
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    raise ZeroDivisionError("a bug in a plugin")

RunDirectory.save_checkpoint = broken
sys.exit(main(["train", "logger=none", "trainer.epochs=1", "hydra.run.dir=run"]))
"""


@pytest.mark.parametrize("fault,expected", [
    ("disk", "the disk is full (no space left while writing"),
    ("permission", "checkpoints/best.pt (Permission denied); it had no checkpoint yet: make the run directory "
                   "writable"),
    ("bug", "failed: ZeroDivisionError: a bug in a plugin"),
])
def test_a_failure_inside_a_run_ends_in_one_line_and_a_failed_summary(tmp_path: Path, fault: str,
                                                                      expected: str) -> None:
    command = [sys.executable, "-c", DRIVER.format(fault=fault)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    line = _one_line(result)
    assert expected in line and str(tmp_path / "run") in line, line
    failed = summary(tmp_path / "run")
    assert failed["status"] == "failed" and failed["error"], failed
    if fault == "bug":
        assert "train.log" in line and "HYDRA_FULL_ERROR=1" in line
        assert "Traceback" in (tmp_path / "run" / "train.log").read_text()
        full = subprocess.run([*command[:2], command[2].replace('"hydra.run.dir=run"', '"hydra.run.dir=again"')],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HYDRA_FULL_ERROR": "1"})
        assert "Traceback" in full.stderr and "ZeroDivisionError" in full.stderr
