"""Training end to end through the CLI: the default learns, grids write a run directory per job (with an
offline W&B run), SIGTERM saves and resume finishes identically, eval reads the best checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from runner import assert_complete_summary, assert_wandb_agrees, attnbench, run_dirs, summary, wait_for, wandb_run


def test_default_run_learns_digits(tmp_path: Path) -> None:
    """`make train`: the embedded default (digits + CBAM) reaches ≥ 0.95 and ends naming its run and metric."""
    result = attnbench("train", "logger=none", cwd=tmp_path, check=True)
    [run] = run_dirs(tmp_path / "outputs")
    s = assert_complete_summary(run)
    assert (s["data"], s["backbone"], s["model"]) == ("digits", "smallcnn", "cbam")
    assert s["primary"] == {"name": "test/acc", "value": s["metrics"]["test/acc"], "higher_is_better": True}
    assert s["primary"]["value"] >= 0.95
    assert s["attention_params"] > 0 and s["params"] > s["attention_params"] and s["flops_per_sample"] > 0
    last = result.stdout.strip().splitlines()[-2:]
    assert last[0] == f"run directory: {run.relative_to(tmp_path)}" and last[1].startswith("test/acc = ")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "val"} and all("epoch" in r and "step" in r for r in records)
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    assert (run / "figures" / "attention.png").exists()  # CBAM's spatial maps over test digits

    evaluated = attnbench("eval", str(run), cwd=tmp_path, check=True).stdout
    assert f"{s['metrics']['test/acc']:.4g}" in evaluated


def test_multirun_grid_writes_a_run_per_job_with_an_offline_wandb_run_that_agrees(tmp_path: Path) -> None:
    result = attnbench("train", "-m", "model=none,se", "seed=0,1", "data=digits", "trainer.epochs=1", cwd=tmp_path,
                       check=True)
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*"))
    runs = run_dirs(sweep)
    assert len(runs) == 4
    seen, sweep_ids = set(), set()
    for run in runs:
        s = assert_complete_summary(run)
        seen.add((s["model"], s["seed"]))
        assert_wandb_agrees(run)
        record = wandb_run(run)
        config = {item.key: json.loads(item.value_json) for item in record.config.update}
        sweep_ids.add(config["sweep"]["id"])
        # named as its folder; grouped without the seed, so the seeds of a variant aggregate
        unseeded = {part for part in run.name.split(",") if not part.startswith("seed=")} | {"backbone=smallcnn"}
        assert record.display_name == run.name and record.run_group == ",".join(sorted(unseeded))
    assert seen == {(m, seed) for m in ("none", "se") for seed in (0, 1)}
    assert sweep_ids == {f"{sweep.parent.name}/{sweep.name}"}
    # one folder per job, named from its overrides, so a rerun of the same command finds it
    assert sorted(r.name for r in runs)[0] == "data=digits,model=none,seed=0,trainer.epochs=1"
    # the sweep's summary run: job_type compare, the same sweep id, each table row with its jobs' run ids
    assert list(sweep.glob("wandb/offline-run-*/*.wandb")), result.stdout[-3000:]
    compare = wandb_run(sweep)
    assert compare.job_type == "compare"
    assert json.loads(next(i.value_json for i in compare.config.update if i.key == "sweep"))["id"] in sweep_ids
    [table] = sweep.glob("wandb/offline-run-*/files/media/table/compare/digits_*.table.json")
    table = json.loads(table.read_text())
    ids = {summary(run)["wandb_id"] for run in runs}
    cells = table["data"][0][table["columns"].index("runs")].split(",")
    assert len(cells) == 2 and set(cells) <= ids



def test_sigterm_saves_and_resume_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    args = ["train", "logger=none", "trainer.epochs=5", "model=se"]
    attnbench(*args, "hydra.run.dir=straight", cwd=tmp_path, check=True)

    process = subprocess.Popen([sys.executable, "-m", "attnbench", *args, "hydra.run.dir=stopped"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # stop it in the middle of the third epoch: after the second epoch's checkpoint, before it finishes
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    wait_for(metrics, process, interval=0.05)
    while metrics.read_text().count('"split": "val"') < 2:
        assert process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    line = err.strip().splitlines()[-1]  # one line: the saved checkpoint and the exact command that continues
    where = (tmp_path / "stopped").resolve()
    assert line.startswith("interrupted: ") and "error" not in err  # the user asked for it: no error
    assert "stopped by SIGTERM" in line and f"checkpoint {where / 'checkpoints' / 'last.pt'} saved" in line
    assert line.endswith(f"continue with `attnbench train resume={where}`"), line
    stopped = summary(tmp_path / "stopped")
    assert stopped["status"] == "interrupted" and stopped["epochs"] < 5

    attnbench("train", "resume=stopped", cwd=tmp_path, check=True)
    resumed, straight = summary(tmp_path / "stopped"), summary(tmp_path / "straight")
    assert resumed["status"] == "completed"
    assert resumed["metrics"] == straight["metrics"]  # bit-for-bit on the CPU
    assert (tmp_path / "stopped" / "metrics.jsonl").read_text() == (tmp_path / "straight" / "metrics.jsonl").read_text()

    before = (tmp_path / "stopped" / "summary.json").read_text()  # resuming a completed run changes nothing
    assert "already completed" in attnbench("train", "resume=stopped", cwd=tmp_path, check=True).stdout
    assert (tmp_path / "stopped" / "summary.json").read_text() == before
