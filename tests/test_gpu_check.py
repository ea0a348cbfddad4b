"""scripts/gpu_check.sh: its CPU dry run exercises every check that does not need CUDA, so the one call a
GPU machine gets cannot have rotted (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"


def _gpu_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})


def test_the_cpu_dry_run_writes_every_check_into_json_and_markdown(tmp_path: Path) -> None:
    result = _gpu_check("out", "--cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["cpu"] is True
    checks = report["checks"]
    assert list(checks) == ["families", "resnet18", "speedrun", "grid", "flex", "ddp"]
    for name, check in checks.items():
        assert check["rows"] and not any("error" in row for row in check["rows"]), (name, check["rows"])
    families = [r for r in checks["families"]["rows"] if "family" in r]
    assert {r["family"] for r in families} == {"classify", "rate", "caption", "fewshot"}
    assert all(r["value"] is not None and r["train_steps_s"] > 0 for r in families)
    models = {r["model"] for r in checks["resnet18"]["rows"]}
    assert {"timm resnet18", "timm seresnet18", "attnbench resnet18, model=se"} <= models
    [speedrun] = checks["speedrun"]["rows"]
    assert speedrun["exit_status"] == 0 and speedrun["test_acc"] is not None and "train_s_to_val_94%" in speedrun
    [grid] = checks["grid"]["rows"]
    assert grid["completed"] == grid["jobs"] == 2
    flex = checks["flex"]["rows"]
    assert {r["variant"] for r in flex} == {"relpos", "local"}
    assert all(r["max_abs_output_difference"] < 1e-4 for r in flex)  # the flex path computes the dense one
    [ddp] = checks["ddp"]["rows"]
    assert ddp["world_size"] == 2 and ddp["completed"] == 1
    markdown = (tmp_path / "out" / "gpu_check.md").read_text()
    for name in checks:
        assert f"## {name} (" in markdown
    assert "| relpos | 64 |" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_and_without_cpu_it_refuses_in_one_line(tmp_path: Path) -> None:
    result = _gpu_check("out", cwd=tmp_path)
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
