"""What users see outside W&B: the files' modes, the terminal table's width."""

from __future__ import annotations

import os
from pathlib import Path


def test_files_honour_the_umask(tmp_path: Path) -> None:
    """summary.json and the checkpoints as open() would make them: 0644 under umask 022, 0600 under 077."""
    from attnbench.track import RunDirectory

    run = RunDirectory(tmp_path / "run")
    previous = os.umask(0o022)
    try:
        run.write_summary({"status": "completed"})
        run.save_checkpoint(run.last, {"step": 1})
        os.umask(0o077)
        run.save_checkpoint(run.best, {"step": 1})
    finally:
        os.umask(previous)
    assert [oct(p.stat().st_mode & 0o777) for p in (run.summary_path, run.last, run.best)] == ["0o644", "0o644",
                                                                                              "0o600"]


def test_compare_table_fits_80_100_and_120_columns(tmp_path: Path) -> None:
    """No cell cut to `…`, no line wider than the terminal; what was left out is said; a pipe stays wide."""
    from runner import attnbench
    from test_compare import write_sweep

    sweep = write_sweep(tmp_path)
    for columns in (80, 100, 120):
        out = attnbench("compare", str(sweep), cwd=tmp_path, env={"COLUMNS": str(columns)}, check=True).stdout
        assert "…" not in out and max(len(line) for line in out.splitlines()) <= columns, (columns, out)
        assert "0.9600 ± 0.0100" in out and "baseline" in out  # the primary metric and Δ always stay
    narrow = " ".join(attnbench("compare", str(sweep), cwd=tmp_path, env={"COLUMNS": "80"}).stdout.split())
    assert "better" in narrow and "inconclusive" in narrow and "(~4 seeds)" in narrow  # the verdicts stay
    assert ("80 columns: left out 95% CI, vs, test, p, p (adj), P(>), params, attn params, head params, "
            "FLOPs/sample, train samples/s, peak MB, wall s") in narrow
    middle = " ".join(attnbench("compare", str(sweep), cwd=tmp_path, env={"COLUMNS": "120"}).stdout.split())
    assert "params" in middle.split("120 columns")[0] and "train samples/s" in middle.split("120 columns")[0]
    assert ("120 columns: left out 95% CI, vs, test, p, p (adj), P(>), attn params, head params, FLOPs/sample, "
            "peak MB, wall s") in middle  # the parameters and the throughput stay longest
    wide = attnbench("compare", str(sweep), cwd=tmp_path, check=True).stdout  # piped, no COLUMNS: every column
    assert "wall s" in wide and "left out" not in wide


def _widest(text: str) -> tuple[int, str]:
    return max((len(line), line) for line in text.splitlines())


def test_a_run_and_a_grid_fit_80_columns(tmp_path: Path) -> None:
    """Every line a run and a 2-job grid print (epochs, W&B, the summary table and its title, the grid's
    comparison) fits a terminal of 80 columns; the grid says which job of how many runs and, after the first,
    how long the grid has left."""
    from runner import attnbench

    env = {"COLUMNS": "80"}
    run = attnbench("train", "trainer.epochs=1", "model=cbam", cwd=tmp_path, env=env, check=True)
    out = run.stdout + run.stderr
    assert _widest(out)[0] <= 80, _widest(out)
    assert "epoch 1/1 train loss" in out and "W&B run" in out
    assert "classify · data=digits · backbone=smallcnn · model=cbam · seed=0\n" in out  # the title on one line

    grid = attnbench("train", "-m", "model=none,se", "trainer.epochs=1", "hydra.sweep.dir=grid", cwd=tmp_path,
                     env=env, check=True)
    out = grid.stdout + grid.stderr
    assert _widest(out)[0] <= 80, _widest(out)
    lines = out.splitlines()
    assert "job 1/2" in lines
    [second] = [line for line in lines if line.startswith("job 2/2")]
    assert " left in the grid (1 done, " in second, second
    assert sum(line.startswith("W&B run ") for line in lines) == 3  # two jobs and the comparison, each once
    assert "params" in out and "train samples/s" in out  # compare keeps the costs at 80 columns


def test_time_left_covers_validation_and_test() -> None:
    """The run's clock: training steps, then each validation left and the test (six validations' worth when the
    test split is six times the validation split), measured once a validation has run."""
    from attnbench.engine.trainer import RunClock

    class Episodic:
        def eval_share(self, split: str) -> float:
            return {"val": 0.1, "test": 0.6}[split]

    clock = RunClock(Episodic(), epochs=2, steps_per_epoch=30)
    assert clock.left(0, 0) is None  # no step timed yet
    clock.step_s = 1.0  # before a validation: a third of an epoch's step time per unit of data
    assert clock.left(0, 0) == 60 + 2 * (30 / 3 * 0.1) + 30 / 3 * 0.6
    clock.validation_s = 3.0  # measured: the test is six of them
    assert clock.left(30, 1) == 30 + 3.0 + 18.0


def test_a_long_run_says_so_before_it_trains_on(tmp_path: Path) -> None:
    """A run estimated over 10 minutes prints one warning with the time and what to change, then trains on."""
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "attnbench", "train", "trainer.epochs=30000", "logger=none"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:  # up to the first epoch: the warning comes before it
            lines.append(line)
            if line.startswith("epoch 1/"):
                break
        text = " ".join("".join(lines).split())  # as one line, however the console wrapped it
        assert "warning: this run takes about " in text, text
        assert "evaluation included); 30000 epochs: fewer (trainer.epochs=…)" in text, text
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
