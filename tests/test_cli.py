"""The command line as a user types it: help, list, and mistakes refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_full_error_env_shows_the_traceback(tmp_path: Path) -> None:
    result = attnbench("train", "data=image_folder", "logger=none", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "data.path" in result.stderr
