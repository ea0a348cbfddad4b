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


def test_version(tmp_path: Path) -> None:
    from attnbench import __version__

    result = attnbench("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"attnbench {__version__}"


@pytest.mark.parametrize("command", ["train", "eval", "list", "bench", "check-variant", "compare"])
def test_help_on_every_subcommand_prints_help_and_exits_0(tmp_path: Path, command: str) -> None:
    result = attnbench(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower() and "error" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_bad_subcommand_argument_is_one_line(tmp_path: Path) -> None:
    for args in (("eval",), ("eval", "a", "b"), ("list", "--bogus")):
        result = attnbench(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {args[0]}: ") and f"`attnbench {args[0]} --help`" in line


def test_hydra_info_forms_as_hydra_documents_them(tmp_path: Path) -> None:
    result = attnbench("train", "--info", "defaults", "model=se", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Defaults List" in result.stdout and "model/se" in result.stdout
    assert "Config search path" not in result.stdout  # only the part asked for
    result = attnbench("train", "--info", cwd=tmp_path)  # alone: all of them
    assert result.returncode == 0 and "Config search path" in result.stdout and "Defaults List" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_shell_completion_installs_for_attnbench_and_completes_train(tmp_path: Path) -> None:
    script = attnbench("-sc", "install=bash", cwd=tmp_path, check=True).stdout
    assert script.rstrip().endswith("-F hydra_bash_completion attnbench")
    query = {"COMP_LINE": "attnbench train model=s"}
    words = attnbench("-sc", "query=bash", cwd=tmp_path, env=query, check=True).stdout.split()
    assert "model=se" in words and "model=cbam" not in words
    words = attnbench("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": "attnbench ch"}, check=True).stdout.split()
    assert words == ["check-variant"]


def test_list_prints_extras_as_typed(tmp_path: Path) -> None:
    out = attnbench("list", cwd=tmp_path, env={"COLUMNS": "250"}, check=True).stdout
    assert "pip install 'attnbench[timm]'" in out


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
