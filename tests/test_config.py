"""Every file in conf/ composes, and every combination it offers passes the build-time checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from attnbench.config import conf_dir
from attnbench.tasks import TASKS, check

CONF = conf_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def choices(cfg: DictConfig) -> dict[str, str]:
    return dict(cfg.hydra.runtime.choices)


@pytest.mark.parametrize("data", options("data"))
def test_every_data_set_composes_with_its_defaults(data: str, compose: Callable[..., DictConfig]) -> None:
    cfg = compose(f"data={data}")
    check(cfg, choices(cfg))  # keys, slots and values only: no data is loaded
    assert cfg.task.name in TASKS


# options that need a value the user always gives
REQUIRED = {"custom": ["model.target=attnbench.attention.feature:SqueezeExcite", "model.slot=feature"]}


def test_every_variant_and_backbone_fits_some_data_set(compose: Callable[..., DictConfig]) -> None:
    """Each model= and backbone= option composes and checks with at least one data set."""
    embedded = ["digits", "reviews", "glyphs", "shapes"]  # one per task family first: most options fit one
    candidates = embedded + [d for d in options("data") if d not in embedded]
    for group in ("model", "backbone"):
        for option in options(group):
            fits = False
            for data in candidates:
                try:
                    cfg = compose(f"data={data}", f"{group}={option}", *REQUIRED.get(option, []))
                    check(cfg, choices(cfg))
                except Exception:
                    continue
                fits = True
                break
            assert fits, f"{group}={option} fits no data set"


def test_every_config_file_opens_with_a_description() -> None:
    for path in Path(CONF).rglob("*.yaml"):
        first = path.read_text().lstrip().splitlines()[0]
        if first.startswith("# @package"):
            first = path.read_text().lstrip().splitlines()[1]
        assert first.startswith("#"), f"{path} should open with a comment saying what it is"


@pytest.mark.parametrize("overrides", [*([f"experiment={e}"] for e in options("experiment")),
                                       *([f"data={d}"] for d in options("data"))], ids=" ".join)
def test_every_experiment_and_data_set_passes_preflight(overrides: list[str]) -> None:
    """`attnbench train experiment=…` (one job: its base configuration) and `attnbench train data=…` compose and
    pass the same checks a run makes before anything is written."""
    from attnbench.cli import preflight

    assert preflight([*overrides, "logger=none"], False) is None


def test_the_schemas_declare_no_default_the_yaml_could_disagree_with(compose: Callable[..., DictConfig]) -> None:
    """Each trainer and logger default lives in conf/ alone: the schema fields are all MISSING, and the YAML
    gives every one of them a value."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from attnbench.config import SCHEMAS, Config

    for group, schema in [*SCHEMAS.items(), ("", Config)]:
        for f in fields(schema):
            if group or f.name in ("seed", "resume", "allow_degenerate"):
                assert f.default == "???", f"{schema.__name__}.{f.name} has a default of its own: {f.default!r}"
    for logger in ("wandb", "none"):
        cfg = compose(f"logger={logger}")
        for group in SCHEMAS:
            missing = [k for k in cfg[group] if OmegaConf.is_missing(cfg[group], k)]
            assert not missing, f"logger={logger}: conf/ gives no value for {group}.{missing}"
