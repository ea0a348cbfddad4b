"""What a run's cost measurement costs (issue 19): FLOPs counted on a few samples give the whole batch's
figure, inference timing stays within its budget, peak memory is the peak of the block it measures, and
summary.json splits the run's time into phases."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from runner import attnbench, run_dirs

from attnbench.cli import conf_dir
from attnbench.config import register_schemas
from attnbench.engine import Trainer, forward_flops
from attnbench.engine.cost import MemoryPeak, leading, max_resident_mb, resident_mb
from attnbench.job import PHASES, fingerprint, seed_everything
from attnbench.tasks import build_task
from attnbench.track import Logger, RunDirectory

TINY = {  # small enough to build in a second; the evaluation batch still holds many samples
    "digits": ["backbone.widths=[8,16]"],
    "reviews": ["data.train_size=64", "data.val_size=32", "data.test_size=96", "model=mha", "trainer.batch_size=16"],
}


def _trainer(tmp_path: Path, data: str) -> Trainer:
    register_schemas()
    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="t"):
        cfg = compose("config", overrides=[f"data={data}", "logger=none", *TINY[data]], return_hydra_config=True)
    seed_everything(cfg.seed)
    task = build_task(cfg, dict(cfg.hydra.runtime.choices))
    trainer = Trainer(cfg.trainer, task, RunDirectory(tmp_path), Logger(), seed=cfg.seed, fingerprint=fingerprint(cfg))
    trainer.setup()
    return trainer


@pytest.mark.parametrize("data", ["digits", "reviews"])
def test_flops_of_a_few_samples_match_the_whole_batch_count(tmp_path: Path, data: str) -> None:
    trainer = _trainer(tmp_path, data)
    batch, size = trainer.task.example_batch()
    assert size > 16  # else the few samples would be the whole batch and the test would prove nothing
    whole = forward_flops(lambda: trainer.task.predict(trainer.task.model.eval(), batch))
    cost = trainer.inference_cost(budget_s=0.2)
    assert whole is not None and cost["flops_per_sample"] == pytest.approx(whole / size, rel=1e-9)
    assert 0 < cost["inference_batch"] <= size and cost["eval_samples_per_s"] > 0


def test_inference_timing_stays_near_its_budget(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "reviews")
    started = time.perf_counter()
    trainer.inference_cost(budget_s=0.5)
    assert time.perf_counter() - started < 3.0  # budget plus the FLOP count and one estimate pass


def test_leading_keeps_the_width_of_a_tensor_batch_and_leaves_other_batches_whole() -> None:
    tokens = torch.zeros(10, 37, dtype=torch.long)
    few, n = leading(tokens, 10, 4)
    assert few.shape == (4, 37) and n == 4
    episode = object()
    assert leading(episode, 80, 8) == (episode, 80)


def test_memory_peak_of_blocks_entered_again_is_their_highest() -> None:
    peak = MemoryPeak(torch.device("cpu"))
    with peak:
        held = torch.ones(40 * 2**20 // 4)
        time.sleep(0.2)
    first = peak.mb
    del held
    with peak:
        pass
    assert peak.mb == first and len(peak.windows) == 2


def test_memory_peak_is_the_blocks_own_peak_even_below_an_earlier_one() -> None:
    if resident_mb() is None:
        pytest.skip("needs /proc (Linux)")
    high = torch.ones(300 * 2**20 // 4)  # 300 MiB: raise the process's all-time peak, then free it
    del high
    before = resident_mb()
    with MemoryPeak(torch.device("cpu")) as peak:
        held = torch.ones(60 * 2**20 // 4)  # 60 MiB, held long enough to be sampled
        time.sleep(0.3)
        del held
    assert peak.mb is not None and peak.mb >= before + 50
    if peak.mb < max_resident_mb():  # below the earlier peak: the sampled figure, not ru_maxrss
        assert peak.mb <= before + 60 + 50


def test_summary_splits_the_run_into_phases(tmp_path: Path) -> None:
    attnbench("train", "trainer.epochs=1", "backbone.widths=[8,16]", "logger=none", cwd=tmp_path, check=True)
    [run] = run_dirs(tmp_path / "outputs")
    s = json.loads((run / "summary.json").read_text())
    assert list(s["phases_s"]) == [p for p in PHASES if p in s["phases_s"]]
    assert {"startup", "data", "model", "probe", "setup", "train_steps", "validation", "test", "cost"} <= set(
        s["phases_s"])
    assert all(v >= 0 for v in s["phases_s"].values())
    assert sum(s["phases_s"].values()) - s["phases_s"]["startup"] <= s["wall_time_s"] + 0.1
    [(start, end)] = s["timeline"]["train_steps"]  # one epoch
    assert s["timeline"]["process_started"] < s["timeline"]["job_started"] < start < end
    assert end - start == pytest.approx(s["phases_s"]["train_steps"], abs=0.05)
    assert s["peak_memory_mb"] > 0 and s["eval_peak_memory_mb"] > 0 and s["inference_batch"] > 0


def test_bench_runs_splits_real_train_processes_into_phases(tmp_path: Path) -> None:
    result = attnbench("bench", "--runs", "--quick", "--json", "report.json", cwd=tmp_path, check=True)
    assert "4 · run efficiency" in result.stdout and "1 · trainer overhead" not in result.stdout  # section 4 alone
    report = json.loads((tmp_path / "report.json").read_text())
    single, grid = report["runs"]
    assert len(single["jobs"]) == 1 and len(grid["jobs"]) == 2
    assert [job["job"] for job in grid["jobs"]] == ["model=none", "model=se"]
    for row in (single, grid):
        assert row["exit_status"] == 0 and 0 < row["efficiency"] < 1
        # the jobs' spans are the process's wall time, cut where each job starts
        assert sum(job["span_s"] for job in row["jobs"]) == pytest.approx(row["wall_s"], abs=0.01)
        for job in row["jobs"]:
            assert sum(job["phases_s"].values()) == pytest.approx(job["span_s"], abs=0.01)
            assert job["phases_s"]["exit"] > -0.05 and job["outside_s"] == pytest.approx(
                job["span_s"] - job["train_steps_s"])
            # the run's own training peak against the resident set sampled from outside while it trained
            assert job["memory_ratio"] == pytest.approx(1.0, abs=0.15)
