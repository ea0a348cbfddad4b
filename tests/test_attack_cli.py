"""The command line under attack, from a terminal's point of view: text from plug-ins and paths is printed as
itself (never Rich markup, never terminal control), a plug-in that exits at import is an error that names it,
and check-variant takes its documented form."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from runner import assert_complete_summary, attnbench, run_dirs

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data=digits", "logger=none", "trainer.epochs=1", "trainer.warmup_epochs=0", "trainer.batch_size=64",
        "backbone.widths=[8,8]"]
PAPER = "[/] Evil et al. [bold red]2026[/bold red] \x1b]0;retitled\x07"


def hostile_plugins(tmp_path: Path) -> dict[str, str]:
    """An environment with two installed plug-ins: one whose paper line is markup and escapes, one whose
    module calls sys.exit(0) when imported."""
    site = tmp_path / "site"
    (site / "evil_attn").mkdir(parents=True)
    (site / "evil_attn" / "__init__.py").write_text(
        "from torch import nn\n\n\nclass Loud(nn.Module):\n    slot = 'feature'\n"
        f"    paper = {PAPER!r}\n\n    def __init__(self, channels, /):\n        super().__init__()\n\n"
        "    def forward(self, x):\n        return x\n")
    (site / "exiting.py").write_text("import sys\n\nsys.exit(0)\n")
    info = site / "evil_attn-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-attn\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[attnbench.variants]\nloud = evil_attn:Loud\nquits = exiting:Gone\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", str(ROOT))])}


def test_plugin_text_is_printed_as_itself_and_an_exiting_plugin_is_named(tmp_path: Path) -> None:
    env = hostile_plugins(tmp_path)
    listed = attnbench("list", cwd=tmp_path, env={**env, "COLUMNS": "400"})
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "│ loud" in line)
    assert "[/] Evil et al. [bold red]2026[/bold red] \\x1b]0;retitled\\x07 [plugin evil_attn:Loud]" in row, row
    assert "\x1b" not in listed.stdout
    quits = [line for line in listed.stdout.splitlines() if "'quits'" in line]
    assert len(quits) == 1 and "calls sys.exit(0) when imported" in quits[0], listed.stdout

    trained = attnbench("train", "model=quits", *TINY, cwd=tmp_path, env=env)
    assert trained.returncode == 2 and "plugin variant 'quits'" in trained.stderr, trained.stderr
    assert "sys.exit(0)" in trained.stderr and "Traceback" not in trained.stderr
    checked = attnbench("check-variant", "exiting:Gone", "--slot", "feature", cwd=tmp_path, env=env)
    assert checked.returncode == 2 and checked.stderr.startswith("error: exiting:Gone: cannot import exiting")
    assert "sys.exit(0)" in checked.stderr


def test_check_variant_takes_keyword_arguments_after_the_slot(tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "my_attention"), str(ROOT)])}
    result = attnbench("check-variant", "my_attention.eca:ECA", "--slot", "feature", "kernel_size=3", "--compile",
                       "off", cwd=tmp_path, env=env)
    assert result.returncode == 0 and "ECA passes every feature-slot check" in result.stdout, result.stderr


def test_a_run_directory_named_with_markup_completes_and_prints_as_itself(tmp_path: Path) -> None:
    result = attnbench("train", *TINY, "model=se", 'hydra.run.dir="out/a[/]b[v2]"', cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "run directory: out/a[/]b[v2]" in result.stdout  # relative to where the command ran
    assert_complete_summary(run_dirs(tmp_path / "out")[0])


LONG = "1" * 300
REFUSED_BEFORE_THE_RUN = {
    "negative widths": (["backbone.widths=[-4,64]"], {}, "backbone.widths must be at least 1, got [-4, 64]"),
    "a grid of no jobs": (["-m", "seed=range(5,0)"], {}, "has no jobs: a sweep in it lists no value"),
    "a glob matching nothing": (["-m", "model=glob(zz*)"], {}, "model=glob(zz*) matches no model option"),
    "a folder name over 255 bytes": (["-m", f"trainer.lr=0.1,{LONG}"], {}, "bytes, over the 255 a file name"),
    "a project with a slash": (["logger=wandb", "logger.mode=offline", "logger.project=a/b"], {},
                               "logger.project='a/b': W&B refuses it"),
    "an entity with a slash": (["logger=wandb", "logger.mode=offline"], {"WANDB_ENTITY": "me/you"},
                               "WANDB_ENTITY='me/you': W&B refuses it"),
    "a group with a slash": (["logger=wandb", "logger.mode=offline"], {"WANDB_RUN_GROUP": "a/b"},
                             "WANDB_RUN_GROUP='a/b': W&B refuses it"),
    "an empty tag": (["logger=wandb", "logger.mode=offline", 'logger.tags=[""]'], {},
                     "logger.tags: the tag '' has 0 characters"),
    "a 100-character tag": (["logger=wandb", "logger.mode=offline"], {"WANDB_TAGS": "ok," + "t" * 100},
                            "WANDB_TAGS: the tag 'tttt"),
    "an unwritable WANDB_DIR": (["logger=wandb", "logger.mode=offline"], {"WANDB_DIR": "{tmp}/a-file/wandb"},
                                "a-file is not a folder this process can write to"),
}


@pytest.mark.parametrize("case", REFUSED_BEFORE_THE_RUN)
def test_values_that_cannot_work_are_refused_before_the_run_exists(tmp_path: Path, case: str) -> None:
    overrides, env, message = REFUSED_BEFORE_THE_RUN[case]
    (tmp_path / "a-file").write_text("not a folder")
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    result = attnbench("train", *TINY, *overrides, cwd=tmp_path, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()


def test_a_config_dir_with_broken_yaml_or_a_blocked_target_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "hydra" / "callbacks").mkdir(parents=True)
    (conf / "model" / "broken.yaml").write_text("name: se\nreduction: [1,\n")
    (conf / "hydra" / "callbacks" / "evil.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    evil:\n      _target_: os.remove\n      path: victim\n")
    (tmp_path / "victim").write_text("keep me")
    for overrides, message in ((["model=broken"], "broken.yaml, line 3: not valid YAML"),
                               (["hydra/callbacks=evil"], "hydra.callbacks.evil: Target 'os.remove' is blocklisted")):
        result = attnbench("train", *TINY, "--config-dir", str(conf), *overrides, cwd=tmp_path)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-3000:]
        assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()
    assert (tmp_path / "victim").read_text() == "keep me"


@pytest.mark.parametrize("text", ["a\\nb", "a'b", "a\\'b", "ends\\", "x\\\\y", "[/]", "sp ace", 'q"d', "é", "a,b",
                                  "\\\\'", "🙂/run", "tab\there"])
def test_a_directory_handed_to_hydra_names_the_directory_that_was_claimed(text: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from attnbench.launch import override_value

    assert OverridesParser.create().parse_override(f"hydra.run.dir={override_value(text)}").value() == text


@pytest.mark.parametrize(("args", "line"), [
    ([], "error: check-variant: needs a TARGET"),
    (["--slot", "feature"], "error: check-variant: needs a TARGET"),
    (["x:Y", "--compile", "bogus"], "error: check-variant: argument --compile: invalid choice: 'bogus'"),
])
def test_check_variant_usage_errors_are_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    result = attnbench("check-variant", *args, cwd=tmp_path)
    errors = [e for e in result.stderr.splitlines() if e.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(line), result.stderr
    assert "usage:" not in result.stderr


LOGGER = {"name": "wandb", "mode": "offline", "project": "attnbench", "entity": None, "group": None, "tags": [],
          "log_checkpoints": "none"}
WANDB_SETTINGS = {  # (logger changes, explicit keys, environment, refused with)
    "logger=none ignores a bad WANDB_DIR": ({"name": "none"}, set(), {"WANDB_DIR": "{file}/x"}, None),
    "mode disabled ignores a bad project": ({"mode": "disabled", "project": "a/b"}, set(), {}, None),
    "WANDB_MODE=disabled ignores a bad project": ({"project": "a/b"}, set(), {"WANDB_MODE": "disabled"}, None),
    "logger.project on the command line wins over WANDB_PROJECT": ({}, {"logger.project"},
                                                                    {"WANDB_PROJECT": "a/b"}, None),
    "WANDB_TAGS of blanks only": ({}, set(), {"WANDB_TAGS": " , ,"}, None),
    "a 64-character tag": ({"tags": ["t" * 64]}, set(), {}, None),
    "a 65-character tag": ({"tags": ["t" * 65]}, set(), {}, "has 65 characters; W&B takes 1 to 64"),
    "a 128-character project": ({"project": "p" * 128}, set(), {}, None),
    "a 129-character project": ({"project": "p" * 129}, set(), {}, "W&B refuses it"),
    "a project with #": ({"project": "a#b"}, set(), {}, "none of / \\ # ? % :"),
    "a blank project": ({"project": " "}, set(), {}, "W&B refuses it"),
    "a WANDB_DIR to be made": ({}, set(), {"WANDB_DIR": "{tmp}/new/wandb"}, None),
    "a WANDB_DIR that is a file": ({}, set(), {"WANDB_DIR": "{file}"}, "is not a folder this process can write"),
    "a relative WANDB_DIR": ({}, set(), {"WANDB_DIR": "relative/wandb"}, None),
    "an entity of null": ({"entity": None}, set(), {}, None),
    "a unicode group": ({"group": "gruppe-ä"}, set(), {}, None),
}


@pytest.mark.parametrize("case", WANDB_SETTINGS)
def test_wandb_settings_and_environment_combinations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      case: str) -> None:
    from omegaconf import OmegaConf

    from attnbench.errors import UserError
    from attnbench.track.wandb_logger import check_settings

    changes, explicit, env, refused = WANDB_SETTINGS[case]
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    for key in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("{file}", str(tmp_path / "a-file")).replace("{tmp}", str(tmp_path)))
    cfg = OmegaConf.create({**LOGGER, **changes})
    if refused is None:
        check_settings(cfg, explicit)
    else:
        with pytest.raises(UserError, match=re.escape(refused)):
            check_settings(cfg, explicit)
