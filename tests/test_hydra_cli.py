"""Hydra as documented: glob/range/choice sweeps, --cfg job with -m, and one-line refusals of keys nothing
reads (+trainer.foo=1), keys in the wrong place (lr=0.1) and unknown choices under --cfg."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner import attnbench, run_dirs, summary


def test_glob_sweep_runs_the_matching_variants_that_fit(tmp_path: Path) -> None:
    result = attnbench("train", "-m", "model=glob(s*,exclude=[se,stochastic])", "data=digits", "trainer.epochs=1",
                       "logger=none", cwd=tmp_path, check=True)
    assert "leaves out self, soft: they do not fit data=digits" in result.stdout
    assert [summary(r)["model"] for r in run_dirs(tmp_path / "outputs")] == ["sum"]


def test_cfg_job_with_multirun_prints_each_job(tmp_path: Path) -> None:
    result = attnbench("train", "-m", "model=none,se", "seed=range(0,2)", "--cfg", "job", "-p", "seed",
                       cwd=tmp_path, check=True)
    assert result.stdout.splitlines() == ["# model=none,seed=0", "0", "# model=none,seed=1", "1",
                                          "# model=se,seed=0", "0", "# model=se,seed=1", "1"]
    assert not (tmp_path / "outputs").exists()


def test_keys_nothing_reads_are_refused_with_the_nearest_real_key(tmp_path: Path) -> None:
    for args, line in [
        (["+trainer.foo=1"], "error: unknown key 'trainer.foo' (`attnbench train --cfg job` prints every key)"),
        (["+trainer.lrr=1"], "error: unknown key 'trainer.lrr': did you mean trainer.lr? "
                             "(`attnbench train --cfg job` prints every key)"),
        (["lr=0.1"], "error: unknown key 'lr': did you mean trainer.lr? "
                     "(`attnbench train --cfg job` prints every key)"),
        (["--cfg", "job", "model=nosuch"], "error: unknown model 'nosuch'. Choose one of: "),
    ]:
        result = attnbench("train", *args, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert result.stderr.startswith(line), (args, result.stderr)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("overrides", "old", "new"), [
    (["data=glyphs", "data.readout=mean"], "data.readout", "task:\n  name: fewshot\n  metric: euclidean\n"
                                                           "  readout: mean"),
    (["data=reviews", "model=multiquery", "model.coef=0.5"], "model.coef", "penalty_weight: 0.5"),
    (["data=shapes", "model=local", "model.window=3"], "model.window", "half_window: 3"),
    (["data=glyphs", "trainer.batch_size=2"], "trainer.batch_size", "episodes_per_step: 2"),
])
def test_renamed_keys_still_run_with_one_deprecation_line(tmp_path: Path, overrides: list[str], old: str,
                                                          new: str) -> None:
    result = attnbench("train", *overrides, "logger=none", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and old in warnings[0], result.stderr
    assert new in result.stdout, result.stdout
