"""Structured-config schemas. Hydra validates the composed config against them, so a misspelt key or a value
of the wrong type is refused before anything runs. ``data``, ``backbone`` and ``model`` differ per choice;
their keys are checked against the signature of the loader or module they configure (see ``tasks.build``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional

from .errors import UserError
from .values import (
    COUNT,
    FACTOR,
    NONNEGATIVE,
    OPEN_FRACTION,
    POSITIVE,
    PROBABILITY,
    SEED,
    Pattern,
    check_schema_values,
    setting,
)

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "linear", "step", "constant"]  # linear after a warm-up: the one-cycle schedule
Precision = Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on CUDA, fp32 elsewhere
Device = Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps")
CheckpointUpload = Literal["none", "best", "last", "all"]


# The fields below have no defaults: conf/trainer/default.yaml and conf/logger/wandb.yaml give every value (the
# comments there say what each does); a field says only what it accepts.
@dataclass
class TrainerConfig:
    epochs: int = setting(bound=COUNT)
    batch_size: int = setting(bound=COUNT)
    eval_batch_size: int = setting(bound=COUNT)
    optimizer: str = setting(Optimizer)
    lr: float = setting(bound=POSITIVE)
    momentum: float = setting(bound=PROBABILITY)
    nesterov: bool = setting()
    betas: list[float] = setting(tuple[float, float], PROBABILITY)
    weight_decay: float = setting(bound=NONNEGATIVE)
    schedule: str = setting(Schedule)
    warmup_epochs: float = setting(bound=NONNEGATIVE)
    milestones: list[float] = setting(bound=OPEN_FRACTION)
    gamma: float = setting(bound=POSITIVE)
    warmup_start_factor: float = setting(bound=FACTOR)
    end_factor: float = setting(bound=FACTOR)
    norm_lr_scale: float = setting(bound=POSITIVE)
    label_smoothing: float = setting(bound=PROBABILITY)
    grad_clip: Optional[float] = setting(bound=POSITIVE)
    precision: str = setting(Precision)
    channels_last: bool = setting()
    compile: bool = setting()
    device: str = setting(Device)
    devices: int = setting(bound=COUNT)
    sync_batchnorm: bool = setting()
    find_unused_parameters: bool = setting()
    deterministic: bool = setting()
    log_every: int = setting(bound=COUNT)


@dataclass
class LoggerConfig:
    name: str = setting(Literal["wandb", "none"])
    mode: str = setting(Literal["auto", "online", "offline", "disabled"])
    project: str = setting()
    entity: Optional[str] = setting()
    group: Optional[str] = setting()
    tags: list[str] = setting()
    log_checkpoints: str = setting(CheckpointUpload)


@dataclass
class Config:
    data: Any = None  # differs per data set: its keys are checked against the loader's signature (tasks.build)
    task: Any = None  # differs per task family: its keys are checked against the family's Settings (tasks.base)
    backbone: Any = None
    model: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = setting(bound=SEED)
    resume: Optional[str] = setting()
    allow_degenerate: bool = setting()
    split_by_seed: bool = setting()


SCHEMAS = {"trainer": TrainerConfig, "logger": LoggerConfig}

# Keys renamed in 0.2: the old name still works, with one deprecation line, until 0.3.
RENAMED_KEYS = {
    "data.metric": "task.metric",  # task settings moved out of data: (conf/task/)
    "data.readout": "task.readout",
    "data.beam": "task.beam",
    "data.meteor": "task.meteor",
    "model.coef": "model.penalty_weight",  # every auxiliary-loss weight ends in _weight
    "model.l0_coef": "model.l0_weight",
    "model.doubly_stochastic": "model.doubly_stochastic_weight",
    "model.entropy": "model.entropy_weight",
}
# renamed for one variant: local's window was a half-width (dattn's model.window is a full width, and stays)
RENAMED_VARIANT_KEYS = {("local", "model.window"): "model.half_window"}


def renamed_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``overrides`` with renamed keys under their new names, and a deprecation line for each old name used."""
    variant = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "model"), None)
    out, warnings = [], []
    for override in overrides:
        key, eq, value = override.partition("=")
        prefix = key[: len(key) - len(key.lstrip("+~"))]
        bare = key[len(prefix):]
        new = RENAMED_KEYS.get(bare) or RENAMED_VARIANT_KEYS.get((variant, bare))
        if eq and new:
            warnings.append(f"{bare} is now {new} (the old name goes in 0.3)")
            override = f"{prefix}{new}={value}"
        out.append(override)
    return out, warnings


def conf_dir() -> Path:
    """conf/ beside the package in a source checkout, inside it in an installed wheel."""
    here = Path(__file__).resolve().parent
    return here / "conf" if (here / "conf").is_dir() else here.parent / "conf"


def register_schemas() -> None:
    """Make ``schema`` available to ``conf/config.yaml``'s defaults list (first entry), the launcher
    plugins' schemas to the launcher configs in ``conf/hydra/launcher/``, and the model and backbone configs
    of installed plugins to their groups."""
    from hydra.core.config_store import ConfigStore  # here, not at the top: `attnbench --help` imports no Hydra

    from .plugins import register_configs

    ConfigStore.instance().store(name="schema", node=Config)
    register_launcher_schemas()
    register_configs(conf_dir())


@contextmanager
def composer(job_name: str = "train") -> Iterator[Callable[[Sequence[str]], Any]]:
    """``with composer() as compose: cfg = compose(["model=se"])``: configs composed from overrides exactly as
    ``attnbench train`` composes them (our conf/, the schemas, the Hydra node included). The one way in for the
    command line, bench and the tests."""
    from hydra import compose, initialize_config_dir  # here, not at the top: `attnbench --help` imports no Hydra

    register_schemas()
    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name=job_name):
        yield lambda overrides: compose("config", overrides=list(overrides), return_hydra_config=True)


def register_launcher_schemas() -> None:
    """The schemas of the launcher plugins (the ``cluster`` extra) as ``hydra/launcher/base_<name>``, which
    ``conf/hydra/launcher/<name>.yaml`` extends, so a misspelt launcher key is refused like any other.

    The plugins store the same schemas under ``<name>`` itself; those entries are dropped, since our YAML
    of that name replaces them (Hydra would otherwise also match the YAML against its namesake, a
    deprecated automatic schema match that clashes with the defaults list). A plugin that is not installed
    gets an empty placeholder, so the configs still compose and the pre-flight check can say what to install."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's plugin scan (re)runs the plugins' config modules once per process: first
    store = ConfigStore.instance()
    schemas: dict[str, Any] = {"submitit_slurm": {}, "submitit_local": {}, "joblib": {}}
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

        schemas.update(submitit_slurm=SlurmQueueConf, submitit_local=LocalQueueConf)
    except ImportError:
        pass
    try:
        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

        schemas.update(joblib=JobLibLauncherConf)
    except ImportError:
        pass
    for name, schema in schemas.items():
        store.store(group="hydra/launcher", name=f"base_{name}", node=schema, provider="attnbench")
        store.repo.get("hydra", {}).get("launcher", {}).pop(f"{name}.yaml", None)


def check_schema_keys(cfg: Any) -> None:
    """``+trainer.foo=1`` adds a key Hydra accepts and nothing reads: refuse it, naming the nearest real key."""
    import difflib

    for group, schema in SCHEMAS.items():
        known = [f.name for f in fields(schema)]
        for key in cfg.get(group) or {}:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                raise UserError(f"unknown key '{group}.{key}'" + (f": did you mean {group}.{near[0]}?" if near else "")
                                + " (`attnbench train --cfg job` prints every key)")


def check_settings(cfg: Any) -> None:
    """The values of ``trainer.*``, ``logger.*`` and ``seed``, refused before anything runs with the setting's
    name and what it accepts (the schema fields declare it)."""
    from omegaconf import OmegaConf

    for group, schema in SCHEMAS.items():
        check_schema_values(schema, OmegaConf.to_container(cfg[group], resolve=True), group)
    check_schema_values(Config, {"seed": cfg.seed}, "")
