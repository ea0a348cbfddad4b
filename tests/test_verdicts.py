"""compare's verdicts and its tuning: each row's Δ interval and the one word that follows from it, on fixture
sweeps with known values; each fault a verdict could hide (a diverged trial winning, a test value choosing, an
unfinished trial, the split or the budget as a tuning key, an ambiguous baseline, a missing control, an error
interval below 0, identical differences read as certain, undertrained runs), and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from runner import attnbench
from test_compare import write_run

from attnbench.compare.analysis import build_report, parse_baseline
from attnbench.compare.runs import load_runs
from attnbench.compare.verdict import Design, Margin, paired_verdict, parse_margins, welch_verdict, word_for
from attnbench.errors import UserError


def report(*paths: Path, **options):
    return build_report(load_runs([str(p) for p in paths]), **options)


def rows_of(rep) -> dict[str, object]:
    (c,) = rep.comparisons
    return {row.label: row for row in c.rows}


def sweep_of(root: Path, accs: dict[str, list[float]], **kw) -> Path:
    for model, values in accs.items():
        for seed, acc in enumerate(values):
            write_run(root, model, seed, acc, **kw)
    return root


# ---------------------------------------------------------------------------------------- the four words


def test_each_word_where_it_belongs(tmp_path: Path) -> None:
    """better: the interval above 0; worse: below; equivalent: inside ±δ (one point); inconclusive: neither,
    with the seeds that would decide it. Six seeds, two tests: 97.5% paired t-intervals."""
    base = [0.900, 0.910, 0.920, 0.930, 0.940, 0.950]
    better = [b + d for b, d in zip(base, [0.050, 0.052, 0.048, 0.051, 0.049, 0.050])]  # +0.05, tiny spread
    equivalent = [b + d for b, d in zip(base, [0.001, -0.001, 0.002, -0.002, 0.000, 0.001])]  # ±0.002
    sweep = sweep_of(tmp_path / "a", {"none": base, "se": better, "cbam": equivalent})
    rows = rows_of(report(sweep))
    assert rows["se"].verdict.word == "better" and rows["se"].verdict.interval[0] > 0
    lo, hi = rows["cbam"].verdict.interval
    assert rows["cbam"].verdict.word == "equivalent" and -0.01 <= lo < 0 < hi <= 0.01

    worse = [b - d for b, d in zip(base, [0.050, 0.052, 0.048, 0.051, 0.049, 0.050])]
    noisy = [b + d for b, d in zip(base, [0.04, -0.03, 0.05, -0.02, 0.03, -0.04])]  # spread far above δ
    rows = rows_of(report(sweep_of(tmp_path / "b", {"none": base, "se": worse, "cbam": noisy})))
    assert rows["se"].verdict.word == "worse" and rows["se"].verdict.interval[1] < 0
    v = rows["cbam"].verdict
    assert v.word == "inconclusive" and v.interval[0] < 0 < v.interval[1] and v.seeds_needed > 6

    # the printed table: the interval, the word and the seeds an inconclusive row needs
    text = attnbench("compare", str(tmp_path / "b"), "--format", "markdown", cwd=tmp_path, check=True).stdout
    assert "| worse |" in text and f"inconclusive (~{v.seeds_needed} seeds)" in text
    assert "97.5% intervals (Bonferroni: α = 0.05 over 2 tests)" in text and "δ = 0.01" in text


def test_every_word_follows_from_the_interval() -> None:
    assert word_for((0.001, 0.02), 0.01, True) == "better" and word_for((0.001, 0.02), 0.01, False) == "worse"
    assert word_for((-0.02, -0.001), 0.01, True) == "worse"
    assert word_for((-0.009, 0.009), 0.01, True) == "equivalent"
    assert word_for((-0.011, 0.009), 0.01, True) == "inconclusive"
    assert word_for((-0.009, 0.009), None, True) == "inconclusive"  # no δ: never equivalent


def test_the_interval_is_the_paired_t_interval_at_the_family_level() -> None:
    from scipy import stats

    d = [0.02, 0.05, 0.01, 0.04]
    v = paired_verdict(d, Design().level(3), 0.01, True)
    mean, se = sum(d) / 4, stats.sem(d)
    half = stats.t.ppf(1 - 0.05 / 3 / 2, 3) * se
    assert v.interval == pytest.approx((mean - half, mean + half)) and v.level == pytest.approx(1 - 0.05 / 3)
    assert v.p_value == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    w = welch_verdict([0.9, 0.92, 0.95], [0.8, 0.85, 0.81, 0.83], 0.95, 0.01, True)
    low, high = stats.ttest_ind([0.9, 0.92, 0.95], [0.8, 0.85, 0.81, 0.83], equal_var=False).confidence_interval()
    assert w.test == "Welch t" and w.interval == pytest.approx((low, high))


def test_identical_differences_are_not_certainty(tmp_path: Path) -> None:
    """Two seeds that moved by the same amount: the exact sign-flip test gives p = 0.5, not 0, and no interval
    narrower than what it can decide."""
    v = paired_verdict([0.02, 0.02], 0.95, 0.01, True, (-1.0, 1.0))
    assert v.test == "sign-flip" and v.p_value == 0.5 and v.word == "inconclusive"
    assert v.interval == (-1.0, 1.0) and v.seeds_needed == 6  # 2/2⁶ ≤ 0.05 < 2/2⁵
    assert paired_verdict([0.02] * 6, 0.95, 0.01, True).word == "better"
    rows = rows_of(report(sweep_of(tmp_path, {"none": [0.90, 0.91], "se": [0.92, 0.93]})))
    assert rows["se"].p_value == pytest.approx(0.5) and rows["se"].verdict.word == "inconclusive"


def test_error_intervals_stay_in_range(tmp_path: Path) -> None:
    errors = {"none": [0.010, 0.030, 0.002], "se": [0.004, 0.001, 0.020]}
    for model, values in errors.items():
        for seed, err in enumerate(values):
            write_run(tmp_path, model, seed, 1 - err, extra={
                "primary": {"name": "test/error", "value": err, "higher_is_better": False},
                "metrics": {"val/error": err, "test/error": err}})
    rows = rows_of(report(tmp_path))
    for row in rows.values():
        assert 0 <= row.ci95[0] <= row.ci95[1] <= 1
    assert -1 <= rows["se"].verdict.interval[0]


# ---------------------------------------------------------------------------------------- tuning


def write_trials(root: Path, model: str, trials: dict[float, list[tuple[str, float | None, float | None]]],
                 **kw) -> None:
    """Runs of ``model`` at several learning rates: per trial, per seed (status, val/acc, test/acc)."""
    for lr, seeds in trials.items():
        for seed, (status, val, test) in enumerate(seeds):
            metrics = {k: v for k, v in (("val/acc", val), ("test/acc", test)) if v is not None}
            extra = {"metrics": metrics, **kw.get("extra", {})}
            if status != "completed":
                extra["error"] = "loss is nan at step 40"
            write_run(root, model, seed, test, status=status, overrides=[f"model={model}", f"seed={seed}",
                      f"trainer.lr={lr}"], cfg_changes={"trainer.lr": lr}, extra=extra)


def test_a_diverged_trial_never_wins_on_its_surviving_seed(tmp_path: Path) -> None:
    ok = [("completed", 0.90, 0.90), ("completed", 0.91, 0.91), ("completed", 0.92, 0.92)]
    write_trials(tmp_path, "none", {0.01: ok, 0.1: ok})
    write_trials(tmp_path, "se", {0.01: ok, 0.1: [("failed", None, None), ("completed", 0.99, 0.99),
                                                  ("failed", None, None)]})
    rows = rows_of(report(tmp_path))
    se = rows["se"]
    assert se.chosen.setting == {"trainer.lr": "0.01"} and se.n == 3
    assert {t.setting["trainer.lr"]: t.failures for t in se.trials} == {"0.01": 0, "0.1": 2}
    notes = " ".join(report(tmp_path).comparisons[0].notes)
    assert "trial trainer.lr=0.1 did not finish every seed (1 of 3 completed)" in notes


def test_a_test_value_never_chooses_the_trial(tmp_path: Path) -> None:
    """The best trial on validation has one run whose test value is NaN: it is still chosen (the NaN run is set
    apart afterwards), where dropping the run first would have let the test metric pick the other trial."""
    write_trials(tmp_path, "none", {0.01: [("completed", 0.80, 0.80)] * 3, 0.1: [("completed", 0.85, 0.85)] * 3})
    write_trials(tmp_path, "se", {0.01: [("completed", 0.90, 0.90), ("completed", 0.91, math.nan),
                                         ("completed", 0.92, 0.92)],
                                  0.1: [("completed", 0.89, 0.95), ("completed", 0.89, 0.95),
                                        ("completed", 0.89, 0.95)]})
    rep = report(tmp_path)
    se = rows_of(rep)["se"]
    assert se.chosen.setting == {"trainer.lr": "0.01"} and se.n == 2
    assert [r.status for r in se.not_completed] == ["not finite"]


def test_unfinished_trials_and_failed_variants_are_named(tmp_path: Path) -> None:
    ok = [("completed", 0.90, 0.90), ("completed", 0.91, 0.91)]
    write_trials(tmp_path, "none", {0.01: ok, 0.1: ok})
    write_trials(tmp_path, "se", {0.01: ok, 0.1: ok[:1]})
    killed = tmp_path / "model=se,seed=1,trainer.lr=0.1" / ".hydra"  # a job killed before its summary
    killed.mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        text = (tmp_path / "model=se,seed=0,trainer.lr=0.1" / ".hydra" / name).read_text()
        (killed / name).write_text(text.replace("seed: 0", "seed: 1").replace("seed=0", "seed=1"))
    write_trials(tmp_path, "cbam", {0.01: [("failed", None, None)] * 2, 0.1: [("failed", None, None)] * 2})
    notes = " ".join(report(tmp_path).comparisons[0].notes)
    assert "se: trial trainer.lr=0.1 did not finish every seed (1 of 2 completed)" in notes
    assert "cbam: no run completed (4 failed), so it is not in the table" in notes


def test_a_setting_at_the_edge_of_the_range_is_flagged(tmp_path: Path) -> None:
    write_trials(tmp_path, "none", {lr: [("completed", 0.80 + lr, 0.8)] * 2 for lr in (0.01, 0.03, 0.1)})
    write_trials(tmp_path, "se", {0.01: [("completed", 0.80, 0.8)] * 2, 0.03: [("completed", 0.90, 0.9)] * 2,
                                  0.1: [("completed", 0.85, 0.85)] * 2})
    notes = " ".join(report(tmp_path).comparisons[0].notes)
    assert "none: chosen at the edge of the swept range, trainer.lr=0.1 (largest tried)" in notes
    assert "se: chosen at the edge" not in notes


def test_budgets_are_rows_and_never_tuned(tmp_path: Path) -> None:
    """A 15-epoch run beside a 2-epoch grid: another row, never a trial that wins; and a note."""
    sweep_of(tmp_path, {"none": [0.80, 0.81], "se": [0.79, 0.80]}, cfg_changes={"trainer.epochs": 2})
    write_run(tmp_path / "long", "cbam", 0, 0.99, cfg_changes={"trainer.epochs": 15})
    rep = report(tmp_path)
    c = rep.comparisons[0]
    assert "trainer.epochs" in c.keys and c.tuning == []
    cbam = next(row for row in c.rows if row.values["model"] == "cbam")
    assert cbam.reference is None and cbam.delta is None  # no 15-epoch baseline to be measured against
    assert any("different budgets side by side (trainer.epochs: 2, 15)" in n for n in c.notes)
    with pytest.raises(UserError, match="trainer.epochs: a budget, not a tuning key"):
        report(tmp_path, tune=["trainer.epochs"])


def test_data_and_split_keys_are_never_tuned(tmp_path: Path) -> None:
    for split in (0, 1):
        for model, accs in (("none", [0.8, 0.81]), ("se", [0.82, 0.83])):
            for seed, acc in enumerate(accs):
                write_run(tmp_path, model, seed, acc + split / 10,
                          overrides=[f"model={model}", f"seed={seed}", f"data.split_seed={split}"],
                          cfg_changes={"data.split_seed": split})
    result = attnbench("compare", str(tmp_path), "--tune", "data.split_seed", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: --tune data.split_seed: data and split keys are never tuned (each "
                                     "variant would keep its luckiest data, and runs on different test sets "
                                     "would be paired)")


def test_undertrained_rows_are_marked(tmp_path: Path) -> None:
    sweep_of(tmp_path, {"none": [0.80, 0.81, 0.82], "se": [0.82, 0.83, 0.84]},
             extra={"epochs": 2, "best_epoch": 2})
    rep = report(tmp_path)
    assert all(row.undertrained for row in rep.comparisons[0].rows)
    assert any(n.startswith("possibly undertrained: ") for n in rep.comparisons[0].notes)
    text = attnbench("compare", str(tmp_path), "--format", "markdown", cwd=tmp_path, check=True).stdout
    assert "⚠ undertrained" in text


# ---------------------------------------------------------------------------------------- references


def test_an_ambiguous_baseline_is_refused_with_the_key_that_tells_them_apart(tmp_path: Path) -> None:
    for reduction in (4, 16):
        for seed, acc in enumerate([0.9, 0.91]):
            write_run(tmp_path, "se", seed, acc + reduction / 1000,
                      overrides=["model=se", f"seed={seed}", f"model.reduction={reduction}"],
                      cfg_changes={"model.reduction": reduction})
    sweep_of(tmp_path, {"cbam": [0.92, 0.93]})
    result = attnbench("compare", str(tmp_path), "--baseline", "se", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "baseline model=se matches several rows of data=digits (model.reduction=16 and model.reduction=4)" \
        in result.stderr or "(model.reduction=4 and model.reduction=16)" in result.stderr
    assert "--baseline model=se,model.reduction=VALUE" in result.stderr
    rows = rows_of(report(tmp_path, baseline=parse_baseline("model=se,model.reduction=4")))
    cbam = next(row for label, row in rows.items() if label.startswith("model=cbam"))
    assert cbam.reference.values == {"model": "se", "model.reduction": "4"}


def test_a_missing_control_is_a_note_naming_the_row(tmp_path: Path) -> None:
    for model, reweight, accs in (("none", None, [0.80, 0.81]), ("se", "true", [0.85, 0.86])):
        for seed, acc in enumerate(accs):
            write_run(tmp_path, model, seed, acc, overrides=[f"model={model}", f"seed={seed}"],
                      cfg_changes={} if reweight is None else {"model.reweight": reweight == "true"})
    c = report(tmp_path).comparisons[0]
    assert any("has no matched control (model.reweight=false is not among the runs)" in n for n in c.notes)


# ---------------------------------------------------------------------------------------- options


def test_delta_is_one_documented_key(tmp_path: Path) -> None:
    assert parse_margins("0.02") == {"*": Margin(value=0.02)}
    assert parse_margins("2%") == {"*": Margin(share=0.02)}
    assert parse_margins("test/acc=0.02,test/rmse=3%") == {"test/acc": Margin(value=0.02),
                                                           "test/rmse": Margin(share=0.03)}
    sweep = sweep_of(tmp_path, {"none": [0.9, 0.91, 0.92], "se": [0.9, 0.91, 0.92]})
    for bad, said in (("-0.01", "δ must be a positive, finite number"), ("nan", "δ must be a positive"),
                      ("abc", "not a number")):
        result = attnbench("compare", str(sweep), "--delta", bad, cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr and len(result.stderr.splitlines()) == 1
    result = attnbench("compare", str(sweep), "--select", "test/acc", cwd=tmp_path)
    assert result.returncode == 2 and "choosing by a test metric" in result.stderr
    result = attnbench("compare", str(sweep), "--select", "val/acc", cwd=tmp_path)
    assert result.returncode == 2 and "nothing is tuned here" in result.stderr


def test_the_note_says_when_the_split_is_fixed_and_the_test_set_dominates(tmp_path: Path) -> None:
    sweep_of(tmp_path, {"none": [0.900, 0.901, 0.902], "se": [0.91, 0.911, 0.912]}, extra={"test_items": 100})
    notes = " ".join(report(tmp_path).comparisons[0].notes)
    assert "test/acc is quantised: 100 test items" in notes
    assert "the test set dominates the spread of" in notes and "split_by_seed=true draws a split per seed" in notes


def test_the_design_of_a_sequential_grid_keeps_its_level(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path / "s", {"none": [0.9, 0.91, 0.92], "se": [0.95, 0.96, 0.975]})
    (sweep / "decide.json").write_text(json.dumps({"alpha": 0.05, "looks": 4, "delta": "0.02", "baseline": "se"}))
    c = report(sweep).comparisons[0]
    assert c.design.looks == 4 and c.baseline == "model=se"
    none = next(row for row in c.rows if row.label == "none")
    assert none.verdict.level == pytest.approx(1 - 0.05 / 4) and c.margin == Margin(value=0.02)
