"""attnbench compare: the table checked against numbers worked out by hand from fixture run directories (written
in the real layout: summary.json and .hydra/{config,hydra,overrides}.yaml), every format, the plot, runs that did
not complete, bad input through the CLI, the sweep callback, and one real sweep of the digits_channel study."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from runner import attnbench, run_dirs

# t quantile for 2 degrees of freedom (3 seeds), 0.975: from a t table
T_975_DF2 = 4.302653

# test/acc per seed, chosen so that means and standard deviations are round: none 0.92 ± 0.02, se 0.96 ± 0.01,
# cbam 0.95 ± 0.03
ACC = {"none": [0.90, 0.92, 0.94], "se": [0.95, 0.96, 0.97], "cbam": [0.92, 0.95, 0.98]}
PARAMS = {"none": 77290, "se": 78032, "cbam": 78630}
ATTENTION_PARAMS = {"none": 0, "se": 742, "cbam": 1340}
SPEED = {"none": 900.0, "se": 600.0, "cbam": 450.0}


def write_run(sweep: Path, model: str, seed: int, acc: float | None, *, status: str = "completed",
              data: str = "digits", extra: dict | None = None, overrides: list[str] | None = None,
              cfg_changes: dict | None = None) -> Path:
    """A run directory exactly as a multirun job leaves it (the files compare reads)."""
    overrides = overrides if overrides is not None else [f"model={model}", f"seed={seed}"]
    run = sweep / ",".join(sorted(overrides))
    (run / ".hydra").mkdir(parents=True)
    model_cfg = {"none": {"name": "none"}, "se": {"name": "se", "reduction": 16, "bias": True},
                 "cbam": {"name": "cbam", "reduction": 16, "spatial_kernel": 7, "mlp_bias": True,
                          "spatial_norm": True}}[model]
    config = {"data": {"name": data, "val_fraction": 0.1, "test_fraction": 0.2},
              "task": {"name": "classify"},
              "backbone": {"name": "resnet", "stages": [1, 1], "widths": [32, 64], "shortcut": "B"},
              "model": model_cfg,
              "trainer": {"epochs": 15, "batch_size": 64, "lr": 0.05, "device": "auto", "log_every": 50},
              "logger": {"name": "none", "mode": "auto", "project": "attnbench", "entity": None, "tags": []},
              "seed": seed, "resume": None}
    for key, value in (cfg_changes or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    choices = {"experiment": None, "logger": "none", "trainer": "default", "task": "classify", "data": data,
               "model": model,
               "backbone": "smallcnn", "hydra/env": "default", "hydra/callbacks": None, "hydra/sweeper": "basic"}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"mode": "MULTIRUN", "overrides": {"hydra": [], "task": overrides},
                   "runtime": {"output_dir": str(run), "choices": choices}}}, sort_keys=False))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {
        "status": status, "task": "classify", "data": data, "backbone": "smallcnn", "model": model, "seed": seed,
        "overrides": overrides, "flops_per_sample": 4.2e6 + PARAMS[model], "eval_samples_per_s": 9000.0,
        "primary": {"name": "test/acc", "value": acc, "higher_is_better": True},
        "metrics": {} if acc is None else {"val/acc": acc - 0.01, "test/acc": acc, "test/loss": 1 - acc},
        "params": PARAMS[model], "attention_params": ATTENTION_PARAMS[model],
        "train_samples_per_s": SPEED[model] + seed, "peak_memory_mb": 100.0 + seed, "wall_time_s": 10.0 + seed,
        "device": "cpu", "versions": {"attnbench": "0.1.0", "torch": "2.x"}, **(extra or {}),
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return run


def write_sweep(root: Path, name: str = "sweep", **kw) -> Path:
    sweep = root / name
    for model, values in ACC.items():
        for seed, acc in enumerate(values):
            write_run(sweep, model, seed, acc, **kw)
    return sweep


def ci_half(std: float, n: int = 3) -> float:
    return T_975_DF2 * std / math.sqrt(n)


def welch_by_hand(a: list[float], b: list[float]) -> float:
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_by_hand(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test from its formula: t = mean(d) / (sd(d)/√n), n − 1 degrees of freedom."""
    from scipy.special import stdtr

    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return float(2 * stdtr(len(d) - 1, -abs(mean / (sd / math.sqrt(len(d))))))


# the markdown table's columns after # and the variant
VS, DELTA, INTERVAL, VERDICT, TEST, P, P_ADJ, P_IMPROVE, COST_COLUMNS = 5, 6, 7, 8, 9, 10, 11, 12, 13


def md_rows(text: str) -> dict[str, list[str]]:
    """The main markdown table's rows by variant (the first table of the output)."""
    table = text.split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {cells[1]: cells for cells in rows}


# ---------------------------------------------------------------------------------------- numbers


def test_table_matches_numbers_worked_out_by_hand(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    result = attnbench("compare", str(sweep), "--format", "markdown", cwd=tmp_path, check=True)
    text = result.stdout
    assert "test/acc (higher is better) · mean over 3 seeds, Δ against model=none" in text
    rows = md_rows(text)
    assert [r[0] for r in rows.values()] == ["1", "2", "3"] and list(rows) == ["se", "cbam", "none"]  # ranked
    # mean ± std (sample std), 95% CI = mean ± t(0.975, 2)·std/√3
    assert rows["se"][3] == "0.9600 ± 0.0100"
    assert rows["cbam"][3] == "0.9500 ± 0.0300"
    assert rows["none"][3] == "0.9200 ± 0.0200"
    assert rows["none"][4] == f"[{0.92 - ci_half(0.02):.4f}, {0.92 + ci_half(0.02):.4f}]" == "[0.8703, 0.9697]"
    assert rows["se"][4] == f"[{0.96 - ci_half(0.01):.4f}, {0.96 + ci_half(0.01):.4f}]" == "[0.9352, 0.9848]"
    assert rows["none"][DELTA] == "baseline" and rows["none"][VS] == "—" and rows["none"][P] == ""
    assert rows["se"][VS] == "model=none" and rows["se"][DELTA] == "+0.0400" and rows["cbam"][DELTA] == "+0.0300"
    # the seeds are shared (same split and data order): a paired t-test on the per-seed differences
    assert rows["se"][TEST] == "paired t"
    p_se, p_cbam = paired_by_hand(ACC["se"], ACC["none"]), paired_by_hand(ACC["cbam"], ACC["none"])
    assert rows["se"][P] == f"{p_se:.3f}" == "0.020" and rows["cbam"][P] == f"{p_cbam:.3f}" == "0.035"
    # Bonferroni over the two tests: each p × 2, and each Δ interval a 97.5% paired t-interval
    assert rows["se"][P_ADJ] == f"{2 * p_se:.3f}" == "0.040" and rows["cbam"][P_ADJ] == f"{2 * p_cbam:.3f}" == "0.070"
    t = 6.205347  # t(1 − 0.025/2, 2 df), from a t table
    d_se, d_cbam = [0.05, 0.04, 0.03], [0.02, 0.03, 0.04]  # per-seed differences: sd 0.01 both
    half = t * 0.01 / math.sqrt(3)
    assert rows["se"][INTERVAL] == f"[{0.04 - half:+.4f}, {0.04 + half:+.4f}]" == "[+0.0042, +0.0758]"
    assert rows["cbam"][INTERVAL] == f"[{0.03 - half:+.4f}, {0.03 + half:+.4f}]" == "[-0.0058, +0.0658]"
    assert sum(d_se) / 3 == pytest.approx(0.04) and sum(d_cbam) / 3 == pytest.approx(0.03)
    # the verdicts follow from the intervals: se's excludes 0; cbam's holds 0 and reaches past δ = 0.01
    assert rows["se"][VERDICT] == "better" and rows["cbam"][VERDICT].startswith("inconclusive (~")
    assert rows["none"][VERDICT] == "baseline"
    assert rows["se"][P_IMPROVE] == "1.00" and rows["cbam"][P_IMPROVE] == "1.00"  # better at every seed
    # cost: params and attention params as counts, FLOPs in millions, throughput, memory and time as means
    assert rows["se"][COST_COLUMNS:] == ["78,032", "742", "—", "4.28M", "601", "101", "11.0"]
    assert rows["none"][COST_COLUMNS + 1] == "0"
    assert "97.5% intervals (Bonferroni: α = 0.05 over 2 tests)" in text and "(δ = 0.01)" in text
    # the other final metrics, mean ± std over seeds
    assert "| se | 0.0400 ± 0.0100 | 0.9500 ± 0.0100 |" in text  # test/loss = 1 − acc, val/acc = acc − 0.01
    assert "9 runs: 9 completed" in text


def test_json_and_csv_hold_the_raw_numbers(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    data = json.loads(attnbench("compare", str(sweep), "--format", "json", cwd=tmp_path, check=True).stdout)
    (digits,) = data["data_sets"]
    assert digits["primary"] == "test/acc" and digits["baseline"] == "model=none" and digits["keys"] == ["model"]
    rows = {r["model"]: r for r in digits["rows"]}
    assert rows["cbam"]["seeds"] == [0, 1, 2] and rows["cbam"]["n"] == 3
    assert rows["cbam"]["mean"] == pytest.approx(0.95) and rows["cbam"]["std"] == pytest.approx(0.03)
    assert rows["cbam"]["mean"] - rows["cbam"]["ci95_low"] == pytest.approx(ci_half(0.03), rel=1e-5)
    assert rows["cbam"]["ci95_high"] == 1.0  # 0.95 + 0.0745 would leave the range of an accuracy: clipped
    assert rows["cbam"]["p_value"] == pytest.approx(paired_by_hand(ACC["cbam"], ACC["none"]), rel=1e-9)
    assert rows["cbam"]["test"] == "paired t" and rows["cbam"]["p_improvement"] == 1.0
    assert rows["cbam"]["p_adjusted"] >= rows["cbam"]["p_value"]
    assert rows["none"]["baseline"] is True and rows["none"]["delta"] is None
    assert rows["se"]["delta"] == pytest.approx(0.04) and rows["se"]["train_samples_per_s"] == pytest.approx(601)
    assert rows["se"]["metrics"]["test/loss"]["mean"] == pytest.approx(0.04)

    out = tmp_path / "cmp.csv"
    result = attnbench("compare", str(sweep), "--out", str(out), cwd=tmp_path, check=True)  # format from suffix
    assert result.stdout == "" and "wrote" in result.stderr
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["model"] for r in table] == ["se", "cbam", "none"]
    assert float(table[0]["mean"]) == pytest.approx(0.96) and float(table[0]["std"]) == pytest.approx(0.01)
    assert float(table[0]["test/loss mean"]) == pytest.approx(0.04) and table[0]["params"] == "78032"
    assert table[2]["baseline"] == "model=none" and table[2]["p_value"] == ""


def test_terminal_table_and_other_baseline(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    result = attnbench("compare", str(sweep), "--baseline", "se", cwd=tmp_path, check=True)
    text = result.stdout
    assert "Δ against model=se" in text and "other final metrics" in text
    lines = {line.split()[1]: line for line in text.splitlines() if re.match(r"\s+\d\s+(se|cbam|none)\s", line)}
    assert "baseline" in lines["se"] and "-0.0100" in lines["cbam"] and "-0.0400" in lines["none"]
    assert "0.9500 ± 0.0300" in lines["cbam"] and "78,630" in lines["cbam"] and "1,340" in lines["cbam"]


def test_swept_config_values_become_columns_and_baselines_match_them(tmp_path: Path) -> None:
    """model × trainer.lr with --tune none: each learning rate is a row, measured against model=none at the same
    learning rate."""
    sweep = tmp_path / "sweep"
    for lr, shift in ((0.05, 0.0), (0.1, 0.02)):
        for model in ("none", "se"):
            for seed, acc in enumerate(ACC[model]):
                write_run(sweep, model, seed, acc + shift, overrides=[f"model={model}", f"seed={seed}",
                                                                      f"trainer.lr={lr}"],
                          cfg_changes={"trainer.lr": lr, "trainer.device": f"cuda:{seed}"})
    data = json.loads(attnbench("compare", str(sweep), "--tune", "none", "--format", "json", cwd=tmp_path,
                                check=True).stdout)
    (digits,) = data["data_sets"]
    assert digits["keys"] == ["model", "trainer.lr"]  # trainer.device differs but is not a setting of the result
    rows = {(r["model"], r["trainer.lr"]): r for r in digits["rows"]}
    assert len(rows) == 4 and all(r["n"] == 3 for r in rows.values())
    assert rows[("se", "0.1")]["delta"] == pytest.approx(0.04) and rows[("se", "0.05")]["delta"] == pytest.approx(0.04)
    assert rows[("none", "0.1")]["baseline"] and rows[("none", "0.05")]["baseline"]
    result = attnbench("compare", str(sweep), "--baseline", "trainer.lr=0.05", "--tune", "none", "--format", "json",
                       cwd=tmp_path, check=True)
    rows = {(r["model"], r["trainer.lr"]): r for r in json.loads(result.stdout)["data_sets"][0]["rows"]}
    assert rows[("se", "0.1")]["delta"] == pytest.approx(0.02) and rows[("se", "0.05")]["baseline"]


def test_lower_is_better_metrics_rank_ascending(tmp_path: Path) -> None:
    from attnbench.compare import analysis, runs

    sweep = write_sweep(tmp_path)
    for run in run_dirs(sweep):  # the same runs scored by an error (1 − acc): lower is better
        summary = json.loads((run / "summary.json").read_text())
        summary["primary"] = {"name": "test/err", "value": 1 - summary["primary"]["value"], "higher_is_better": False}
        (run / "summary.json").write_text(json.dumps(summary))
    (c,) = analysis.build_report(runs.load_runs([str(sweep)])).comparisons
    assert [row.label for row in c.rows] == ["se", "cbam", "none"] and not c.higher_is_better
    assert c.rows[0].mean == pytest.approx(0.04) and c.rows[0].delta == pytest.approx(-0.04)


# ---------------------------------------------------------------------------------------- runs that did not complete


def test_failed_interrupted_and_corrupt_runs_are_reported_apart(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    write_run(sweep, "se", 3, None, status="failed", extra={"error": "loss is nan at step 12"})
    write_run(sweep, "cbam", 3, 0.10, status="interrupted", extra={"error": "interrupted by SIGTERM"})
    corrupt = write_run(sweep, "se", 4, 0.99)
    (corrupt / "summary.json").write_text('{"status": "completed", "task": "classify", "primary": {"na')  # half written
    killed = write_run(sweep, "none", 4, 0.10)
    (killed / "summary.json").unlink()  # SIGKILL: no summary at all
    result = attnbench("compare", str(sweep), "--format", "markdown", cwd=tmp_path, check=True)
    assert f"warning: skipped {corrupt / 'summary.json'}: corrupt or half-written" in result.stderr
    text = result.stdout
    rows = md_rows(text)
    # the table is the one of the 9 completed runs: nothing of the others averaged in
    assert rows["se"][3] == "0.9600 ± 0.0100" and rows["cbam"][3] == "0.9500 ± 0.0300"
    assert rows["se"][2] == "3 (+1 failed)" and rows["cbam"][2] == "3 (+1 interrupted)"
    assert rows["none"][2] == "3 (+1 no summary)"
    assert "12 runs: 9 completed, 1 failed, 1 interrupted, 1 no summary" in text
    apart = text.split("Not completed (not averaged in):")[1]
    assert "| failed | model=se, seed=3 | loss is nan at step 12 |" in apart
    assert "| interrupted | model=cbam, seed=3 | interrupted by SIGTERM |" in apart
    assert "| no summary | model=none, seed=4 |" in apart
    data = json.loads(attnbench("compare", str(sweep), "--format", "json", cwd=tmp_path, check=True).stdout)
    assert data["skipped"][0]["file"] == str(corrupt / "summary.json")
    assert {r["status"] for r in data["data_sets"][0]["not_completed"]} == {"failed", "interrupted", "no summary"}


# ---------------------------------------------------------------------------------------- bad input


def test_bad_input_through_the_cli(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = attnbench("compare", str(empty), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith(f"error: no runs in {empty}")
    assert "Traceback" not in result.stderr

    result = attnbench("compare", str(tmp_path / "typo"), cwd=tmp_path)
    assert result.returncode == 2 and "typo: no such file or directory" in result.stderr

    sweep = write_sweep(tmp_path)
    result = attnbench("compare", str(sweep), "--baseline", "model=dual", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: baseline model=dual is not among the completed runs of data=digits "
                                     "(model there: cbam, none, se)")
    result = attnbench("compare", str(sweep), "--baseline", "trainer.lr=0.1", cwd=tmp_path)
    assert result.returncode == 2 and "baseline trainer.lr: not a setting that differs" in result.stderr
    result = attnbench("compare", str(sweep), "--format", "xlsx", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'xlsx' (choose from 'table', 'markdown', 'csv', 'json')" in result.stderr

    only_failed = tmp_path / "failed"
    write_run(only_failed, "se", 0, None, status="failed", extra={"error": "boom"})
    result = attnbench("compare", str(only_failed), cwd=tmp_path)
    assert result.returncode == 2 and "data=digits: no completed run to compare" in result.stderr

    garbage = tmp_path / "garbage"
    write_run(garbage, "se", 0, 0.5)
    (next(garbage.iterdir()) / "summary.json").write_text("[1, 2]")
    result = attnbench("compare", str(garbage), cwd=tmp_path)
    assert result.returncode == 2 and "not a JSON object" in result.stderr and "no usable runs" in result.stderr


def test_data_sets_are_compared_apart_and_empty_paths_warned(tmp_path: Path) -> None:
    digits = write_sweep(tmp_path, "digits")
    cifar = tmp_path / "cifar"
    for seed, acc in enumerate([0.80, 0.82]):
        write_run(cifar, "se", seed, acc, data="cifar")
    (tmp_path / "nothing").mkdir()
    # a quoted glob (expanded by compare) and a path with no runs beside ones with runs
    result = attnbench("compare", str(tmp_path / "[cd]i*"), str(tmp_path / "nothing"), "--format", "markdown",
                       cwd=tmp_path, check=True)
    assert f"warning: no runs in {tmp_path / 'nothing'}" in result.stderr
    assert "runs of 2 data sets (cifar, digits): each is compared on its own" in result.stdout
    assert "### data=cifar" in result.stdout and "### data=digits" in result.stdout
    assert "no completed model=none runs: rows without a matched control have no Δ" in result.stdout  # not fatal
    cifar_table = result.stdout.split("### data=cifar")[1].split("### data=digits")[0]
    assert "0.8100 ± 0.0141" in cifar_table and "0.96" not in cifar_table
    assert digits.exists()


# ---------------------------------------------------------------------------------------- plot and callback


def test_plot_is_written(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    png = tmp_path / "cmp.png"
    attnbench("compare", str(sweep), "--plot", str(png), "--format", "csv", cwd=tmp_path, check=True)
    image = Image.open(png).convert("L")
    assert image.width >= 1500 and image.height >= 350
    histogram = image.histogram()
    assert sum(histogram[:200]) > 0.02 * image.width * image.height  # ink: axes, bars, points and labels


def test_sweep_callback_prints_the_table_and_logs_it_to_wandb(tmp_path: Path, capsys) -> None:
    from omegaconf import OmegaConf

    from attnbench.callbacks import SweepSummary, last_sweep

    sweep = write_sweep(tmp_path)
    write_run(sweep, "se", 3, None, status="failed", extra={"error": "boom"})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}},
                               "logger": {"name": "wandb", "mode": "offline", "project": "attnbench-test",
                                          "entity": None, "tags": []}})
    SweepSummary().on_multirun_end(config)
    out = capsys.readouterr().out
    assert "9 completed, 1 failed" in out and "not completed:" in out
    assert "Δ against model=none" in out and "0.9600 ± 0.0100" in out
    assert len(last_sweep["failed"]) == 1  # what the CLI's exit status counts
    assert (sweep / "compare.md").read_text().count("| se |") == 2 and (sweep / "compare.png").stat().st_size > 0
    tables = list(sweep.glob("wandb/offline-run-*/files/media/table/compare/digits_*.table.json"))
    assert len(tables) == 1, list(sweep.rglob("*"))
    logged = json.loads(tables[0].read_text())
    assert logged["columns"][:5] == ["rank", "model", "chosen", "n", "test/acc mean"]
    assert logged["data"][0][:4] == [1, "se", "", 3] and logged["data"][0][4] == pytest.approx(0.96)
    assert len(list(sweep.glob("wandb/offline-run-*/files/media/images/compare/plot_*.png"))) == 1


# ---------------------------------------------------------------------------------------- a real sweep


def test_digits_channel_sweep_then_compare(tmp_path: Path) -> None:
    """The study as a user runs it (two variants, two seeds, short training to fit the test budget)."""
    result = attnbench("train", "-m", "experiment=digits_channel", "model=none,se", "seed=0,1", "trainer.epochs=3",
                       "trainer.lr=0.1", "logger=none", cwd=tmp_path, check=True)
    assert "sweep " in result.stdout and "4 jobs, 4 completed" in result.stdout
    assert "Δ against model=none" in result.stdout  # printed by the callback when the sweep ended
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    runs = run_dirs(sweep)
    scores = {}
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        scores.setdefault(summary["model"], []).append(summary["primary"]["value"])
    assert all(v > 0.3 for vs in scores.values() for v in vs), scores  # learned: 10 classes, chance is 0.1
    result = attnbench("compare", str(sweep), "--plot", "cmp.png", "--format", "markdown", cwd=tmp_path, check=True)
    rows = md_rows(result.stdout)
    assert set(rows) == {"none", "se"}
    for model, values in scores.items():
        mean = sum(values) / 2
        std = abs(values[0] - values[1]) / math.sqrt(2)
        assert rows[model][3] == f"{mean:.4f} ± {std:.4f}"
    assert rows["none"][DELTA] == "baseline"
    assert rows["se"][DELTA] == f"{sum(scores['se']) / 2 - sum(scores['none']) / 2:+.4f}"
    assert (tmp_path / "cmp.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------- the studies


CONF = Path(__file__).resolve().parents[1] / "conf"
CHANNEL_VARIANTS = ["none", "se", "cbam", "dual", "gate"]


def _compose(overrides: list[str], multirun: bool = False):
    from attnbench.cli import expand_jobs
    from attnbench.config import composer

    with composer("test") as compose:
        return expand_jobs(compose, overrides, True) if multirun else compose(overrides)


@pytest.mark.parametrize("study, data, stages", [("digits_channel", "digits", [1, 1]),
                                                 ("cifar_channel", "cifar", [3, 3, 3])])
def test_channel_studies_expand_to_their_grids(study: str, data: str, stages: list[int]) -> None:
    jobs = _compose([f"experiment={study}"], multirun=True)
    grid = {(j[0].split("=")[1], j[1].split("=")[1]) for j in jobs}
    assert grid == {(m, s) for m in CHANNEL_VARIANTS for s in "012"} and len(jobs) == 15
    cfg = _compose([f"experiment={study}", "model=se"])
    assert cfg.hydra.runtime.choices.data == data and list(cfg.backbone.stages) == stages
    if data == "cifar":  # ResNet-20 with the CIFAR recipe, both picked by data=cifar
        assert cfg.hydra.runtime.choices.backbone == "resnet20" and cfg.trainer.epochs == 60


def test_wandb_sweep_file_runs_the_digits_channel_grid() -> None:
    """The file W&B reads: its grid is the digits_channel study, and each point, formatted as the agent formats
    ${args_no_hyphens} (key=value), is an `attnbench train` command line that composes and passes the checks."""
    from attnbench.cli import preflight

    sweep = yaml.safe_load((CONF / "wandb_sweep.yaml").read_text())
    assert {"program", "method", "parameters", "command", "metric"} <= set(sweep) and sweep["method"] == "grid"
    assert sweep["command"] == ["${env}", "attnbench", "train", "${args_no_hyphens}"]
    assert sweep["metric"] == {"name": "test/acc", "goal": "maximize"}
    params = sweep["parameters"]
    assert params["experiment"] == {"value": "digits_channel"}
    assert params["model"]["values"] == CHANNEL_VARIANTS and params["seed"]["values"] == [0, 1, 2]
    available = {p.stem for p in (CONF / "model").glob("*.yaml")}  # dual and gate come with the catalogue
    for model in [m for m in CHANNEL_VARIANTS if m in available]:
        args = [f"experiment={params['experiment']['value']}", f"model={model}", "seed=2"]
        assert preflight(args, multirun=False) is None, args


# ---------------------------------------------------------------------------------------- an equal tuning budget

# (model, lr) -> (val/acc, test/acc) per seed: lr=0.01 wins on validation for none, lr=0.1 for se, while the test
# figures point the other way, so that a choice made on test would differ
TUNED = {("none", 0.01): ([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]),
         ("none", 0.1): ([0.85, 0.86, 0.87], [0.95, 0.96, 0.97]),
         ("se", 0.01): ([0.88, 0.89, 0.90], [0.99, 0.98, 0.97]),
         ("se", 0.1): ([0.93, 0.94, 0.95], [0.84, 0.85, 0.86])}


def write_tuned_sweep(root: Path, tuned: dict = TUNED, **kw) -> Path:
    sweep = root / "tuned"
    for (model, lr), (val, test) in tuned.items():
        for seed, (v, t) in enumerate(zip(val, test)):
            write_run(sweep, model, seed, t, overrides=[f"model={model}", f"seed={seed}", f"trainer.lr={lr}"],
                      cfg_changes={"trainer.lr": lr},
                      extra={"metrics": {"val/acc": v, "test/acc": t, "test/loss": 1 - t}}, **kw)
    return sweep


def test_compare_keeps_each_variants_best_validation_setting_and_reports_its_test_runs(tmp_path: Path) -> None:
    sweep = write_tuned_sweep(tmp_path)
    data = json.loads(attnbench("compare", str(sweep), "--format", "json", cwd=tmp_path, check=True).stdout)
    (c,) = data["data_sets"]
    assert c["keys"] == ["model"] and c["tuning"] == ["trainer.lr"] and c["selection"] == "val/acc (max)"
    rows = {r["model"]: r for r in c["rows"]}
    assert rows["none"]["chosen"] == {"trainer.lr": "0.01"} and rows["se"]["chosen"] == {"trainer.lr": "0.1"}
    # the test figure is exactly the chosen runs' test metric, and the Δ pairs those runs seed by seed
    assert rows["none"]["mean"] == pytest.approx(0.81) and rows["se"]["mean"] == pytest.approx(0.85)
    assert rows["se"]["delta"] == pytest.approx(0.04) and rows["se"]["test"] == "paired t"
    assert {t["setting"]["trainer.lr"]: t["selection_score"] for t in rows["se"]["trials"]} == \
        pytest.approx({"0.01": 0.89, "0.1": 0.94})
    table = attnbench("compare", str(sweep), "--format", "markdown", cwd=tmp_path, check=True).stdout
    assert "trainer.lr=0.1 (1 of 2)" in table and "best mean val/acc (max) over seeds" in table


def test_changing_only_test_metrics_never_changes_the_chosen_setting(tmp_path: Path) -> None:
    import random

    from attnbench.compare import analysis, runs

    rng = random.Random(0)
    for trial in range(5):
        shuffled = {key: (val, [rng.random() for _ in test]) for key, (val, test) in TUNED.items()}
        sweep = write_tuned_sweep(tmp_path / str(trial), shuffled)
        (c,) = analysis.build_report(runs.load_runs([str(sweep)])).comparisons
        chosen = {row.values["model"]: row.chosen.setting["trainer.lr"] for row in c.rows}
        assert chosen == {"none": "0.01", "se": "0.1"}
        for row in c.rows:  # and what is reported is those runs' own test figures
            lr = float(row.chosen.setting["trainer.lr"])
            assert row.mean == pytest.approx(sum(shuffled[(row.values["model"], lr)][1]) / 3)


def test_unequal_budgets_warn_and_bad_selections_are_one_line(tmp_path: Path) -> None:
    sweep = write_tuned_sweep(tmp_path, {**TUNED, ("se", 1.0): ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])})
    text = attnbench("compare", str(sweep), "--format", "markdown", cwd=tmp_path, check=True).stdout
    assert "unequal tuning budget: none (2) had fewer trials than the 3 of the others" in text
    for option, message in ((["--select", "val/bleu"], "--select val/bleu: not among the runs' metrics"),
                            (["--select", "test/acc"], "--select test/acc: choosing by a test metric"),
                            (["--tune", "model.k"], "--tune model.k: not a setting that varies")):
        result = attnbench("compare", str(sweep), *option, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    untuned = json.loads(attnbench("compare", str(sweep), "--tune", "none", "--format", "json", cwd=tmp_path,
                                   check=True).stdout)["data_sets"][0]
    assert untuned["keys"] == ["model", "trainer.lr"] and len(untuned["rows"]) == 5  # every (model, lr) a row


def test_a_nan_primary_is_never_averaged_or_ranked(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    write_run(sweep, "se", 3, float("nan"))
    data = json.loads(attnbench("compare", str(sweep), "--format", "json", cwd=tmp_path, check=True).stdout)
    (c,) = data["data_sets"]
    se = next(r for r in c["rows"] if r["model"] == "se")
    assert se["n"] == 3 and se["mean"] == pytest.approx(0.96) and se["not_completed"] == {"not finite": 1}
    assert [r["status"] for r in c["not_completed"]] == ["not finite"]


def test_each_row_is_measured_against_its_matched_control(tmp_path: Path) -> None:
    """The few-shot study's rows: ProtoNet on two readouts, CAN and its control; every interval inside [0, 1]."""
    sweep = tmp_path / "pair"
    rows = {("none", "-", "flatten"): [0.86, 0.87, 0.88], ("none", "-", "mean"): [0.80, 0.82, 0.81],
            ("cross", "false", "mean"): [0.83, 0.85, 0.84], ("cross", "true", "mean"): [0.97, 0.99, 0.995]}
    for (model, reweight, readout), accs in rows.items():
        for seed, acc in enumerate(accs):
            model_cfg = {"model": {"name": model, **({"reweight": reweight == "true"} if reweight != "-" else {})}}
            overrides = [f"model={model}", f"seed={seed}", f"task.readout={readout}"]
            run = write_run(sweep, "none", seed, acc, overrides=overrides + [f"model.reweight={reweight}"])
            config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
            config.update(model_cfg)
            config["task"]["readout"] = readout
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
            summary = json.loads((run / "summary.json").read_text())
            summary["model"] = model
            (run / "summary.json").write_text(json.dumps(summary))
    (c,) = json.loads(attnbench("compare", str(sweep), "--format", "json", cwd=tmp_path, check=True).stdout)[
        "data_sets"]
    by = {(r["model"], r["model.reweight"], r["task.readout"]): r for r in c["rows"]}
    can, control = by[("cross", "true", "mean")], by[("cross", "false", "mean")]
    assert can["reference"] == "model.reweight=false" and can["delta"] == pytest.approx(0.145)
    assert control["reference"] == "model=none" and control["delta"] == pytest.approx(0.03)  # the same readout
    assert by[("none", "-", "mean")]["baseline"] and by[("none", "-", "flatten")]["baseline"]
    for row in c["rows"]:
        assert 0 <= row["ci95_low"] <= row["ci95_high"] <= 1
    assert can["ci95_high"] == 1.0 and can["p_improvement"] == 1.0
    assert can["p_adjusted"] == pytest.approx(2 * can["p_value"])  # Bonferroni over the table's two tests
