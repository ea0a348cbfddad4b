"""hydra/sweeper=decide: its error rates in simulation, its one-line refusals, and a real grid run from the CLI to
a verdict, interrupted with Ctrl-C and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runner import attnbench, run_dirs

from attnbench.compare.verdict import paired_verdict
from attnbench.sweeper import Plan

SIMULATIONS = 1000
DELTA = 0.01  # one accuracy point


def run_sequential(differences: np.ndarray, plan: Plan, tests: int = 1) -> str:
    """The sweeper's rule on one comparison: look at each planned seed count, stop once the verdict is decided."""
    level = plan.design.level(tests)
    verdict = None
    for n in plan.seed_counts:
        verdict = paired_verdict(list(differences[:n]), level, DELTA, True, (-1.0, 1.0))
        if verdict.decided:
            break
    return verdict.word


def rates(effect: float, spread: float, plan: Plan, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    words = [run_sequential(rng.normal(effect, spread, plan.max_seeds), plan) for _ in range(SIMULATIONS)]
    return {w: words.count(w) / SIMULATIONS for w in ("better", "worse", "equivalent", "inconclusive")}


def test_no_effect_is_declared_better_or_worse_at_most_at_the_nominal_rate() -> None:
    """1,000 comparisons with no true effect, looked at after 3, 5, 7, 9 and 10 seeds: a difference is declared
    in at most α = 5% of them, however often the grid looked."""
    plan = Plan(pilot=3, step=2, max_seeds=10)
    for spread in (0.005, 0.02):
        found = rates(0.0, spread, plan, seed=1)
        assert found["better"] + found["worse"] <= 0.05, found


def test_a_true_effect_of_two_deltas_is_found_in_most() -> None:
    found = rates(2 * DELTA, DELTA, Plan(pilot=3, step=2, max_seeds=10), seed=2)
    assert found["better"] > 0.5 and found["worse"] == 0, found


def test_no_effect_and_a_tight_spread_reach_equivalent() -> None:
    found = rates(0.0, DELTA / 4, Plan(pilot=3, step=2, max_seeds=10), seed=3)
    assert found["equivalent"] > 0.5 and found["better"] + found["worse"] <= 0.05, found


def test_the_looks_and_the_level() -> None:
    plan = Plan(pilot=3, step=2, max_seeds=10)
    assert plan.seed_counts == [3, 5, 7, 9, 10] and plan.design.looks == 5
    assert plan.design.level(2) == pytest.approx(1 - 0.05 / 10)
    assert Plan(pilot=4, step=3, max_seeds=4).seed_counts == [4]


@pytest.mark.parametrize(("override", "said"), [
    ("hydra.sweeper.max_seeds=2", "hydra.sweeper.max_seeds=2 is smaller than the pilot (hydra.sweeper.pilot=3)"),
    ("hydra.sweeper.pilot=1", "a pilot needs at least 2 seeds"),
    ("hydra.sweeper.delta=-0.1", "δ must be a positive, finite number"),
    ("seed=0,1", "hydra/sweeper=decide chooses the seeds itself"),
])
def test_an_impossible_plan_is_one_line(tmp_path: Path, override: str, said: str) -> None:
    result = attnbench("train", "-m", "hydra/sweeper=decide", "model=none,se", override, "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "outputs").exists()


def test_a_real_grid_runs_to_a_verdict_and_resumes_after_ctrl_c(tmp_path: Path) -> None:
    """none against se on digits, one epoch a run, pilot 2, then one seed more: interrupted with Ctrl-C during
    the second look, then the same command again finishes the grid without rerunning a finished job."""
    command = [sys.executable, "-m", "attnbench", "train", "-m", "hydra/sweeper=decide", "model=none,se",
               "trainer.epochs=1", "logger=none", "hydra.sweeper.pilot=2", "hydra.sweeper.step=1",
               "hydra.sweeper.max_seeds=3", "hydra.sweep.dir=grid"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    grid = tmp_path / "grid"
    deadline = time.monotonic() + 240
    while not any("seed=2" in p.name for p in run_dirs(grid)):  # the second look has begun
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    first, _ = process.communicate(timeout=120)
    assert process.returncode == 130, first
    finished = {p.name: (p / "summary.json").stat().st_mtime for p in run_dirs(grid)
                if (p / "summary.json").exists()
                and json.loads((p / "summary.json").read_text()).get("status") == "completed"}
    assert len(finished) >= 4  # the pilot: two configurations at seeds 0 and 1

    time.sleep(0.05)
    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                            env={**os.environ, "COLUMNS": "200"})
    assert second.returncode == 0, second.stdout + second.stderr
    statuses = {p.name: json.loads((p / "summary.json").read_text())["status"] for p in run_dirs(grid)}
    assert set(statuses.values()) == {"completed"} and len(statuses) >= 5
    for name, mtime in finished.items():  # skipped, not trained again
        assert (grid / name / "summary.json").stat().st_mtime == mtime
    plan = json.loads((grid / "decide.json").read_text())
    assert plan["looks"] == 2 and plan["seed_counts"] == [2, 3]
    assert "decide: look 1 of 2" in second.stdout
    table = attnbench("compare", str(grid), "--format", "json", cwd=tmp_path, check=True).stdout
    (c,) = json.loads(table)["data_sets"]
    assert c["family"]["looks"] == 2 and c["family"]["level"] == pytest.approx(1 - 0.05 / 2)
    (se,) = [r for r in c["rows"] if r["model"] == "se"]
    assert se["verdict"] in ("better", "worse", "equivalent", "inconclusive") and se["n"] >= 2
