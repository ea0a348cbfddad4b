"""The command line as a user types it: help, list, and mistakes refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runner import attnbench


def test_bare_command_and_help_print_usage(tmp_path: Path) -> None:
    for args in ((), ("--help",)):
        result = attnbench(*args, cwd=tmp_path)
        assert result.returncode == 0
        assert "usage: attnbench" in result.stdout and "train" in result.stdout and "list" in result.stdout


def test_help_imports_nothing_heavy() -> None:
    """`attnbench --help` stays fast because torch, wandb and datasets are imported only when used."""
    code = ("import sys; from attnbench.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'wandb', 'datasets', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_command(tmp_path: Path) -> None:
    result = attnbench("trian", cwd=tmp_path)
    assert result.returncode == 2 and "did you mean `attnbench train`" in result.stderr


def test_list_shows_variants_data_and_backbones(tmp_path: Path) -> None:
    out = attnbench("list", cwd=tmp_path, check=True).stdout
    for name in ("cbam", "se", "none", "digits", "cifar", "image_folder", "resnet20", "resnet18", "smallcnn"):
        assert name in out
    assert "Woo et al. 2018" in out and "classify" in out


def test_train_help_lists_config_groups(tmp_path: Path) -> None:
    result = attnbench("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("data", "model", "backbone", "trainer", "logger"):
        assert group in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args, message", [
    (["model=cbm"], "unknown model 'cbm'. Did you mean model=cbam?"),
    (["data=cifra"], "unknown data 'cifra'. Did you mean data=cifar?"),
    (["backbone=resnet21"], "unknown backbone 'resnet21'"),
    (["trainer.lrr=0.1"], "unknown key 'trainer.lrr': did you mean trainer.lr?"),
    (["model.reducton=4"], "unknown key 'model.reducton': did you mean model.reduction?"),
    (["+model.reducton=4"], "model=cbam has no key 'reducton'"),
    (["trainer.lr=fast"], "trainer.lr: Value 'fast'"),
    (["model=none,se"], "add -m to run a grid"),
    (["-m", "model=none,cbm"], "unknown model 'cbm'"),
    (["resume=/nonexistent/run"], "is not an attnbench run directory"),
])
def test_config_mistakes_are_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    result = attnbench("train", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists()


def test_full_error_env_shows_the_traceback(tmp_path: Path) -> None:
    result = attnbench("train", "data=image_folder", "logger=none", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "data.path" in result.stderr
