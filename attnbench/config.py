"""Structured-config schemas. Hydra validates the composed config against them, so a misspelt key or a value
of the wrong type is refused before anything runs. ``data``, ``backbone`` and ``model`` differ per choice;
their keys are checked against the signature of the loader or module they configure (see ``tasks.build``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import UserError


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | linear | step | constant
    warmup_epochs: float = 0.0
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step schedule, fractions of training
    gamma: float = 0.1
    warmup_start_factor: float = 0.0  # the warm-up starts at lr × this and rises linearly to lr
    end_factor: float = 0.0  # cosine and linear schedules end at lr × this
    norm_lr_scale: float = 1.0  # lr multiplier for normalisation layers' parameters (BatchNorm shifts)
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None  # max global gradient norm; null = no clipping
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: bool = True  # CUDA only, convolutional backbones
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: int = 1  # processes for one run (DDP, one GPU each on CUDA); >1 starts torchrun
    sync_batchnorm: bool = False  # DDP on CUDA: batch-norm statistics over the global batch
    find_unused_parameters: bool = False  # DDP: for variants that leave some parameters without gradient
    deterministic: bool = True  # CPU runs are bit-for-bit repeatable
    log_every: int = 50  # steps between progress updates (each one a device sync)


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    mode: str = "auto"  # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "attnbench"
    entity: Optional[str] = None
    group: Optional[str] = None  # null = the configuration without its seed, so seeds aggregate
    tags: list[str] = field(default_factory=list)
    log_checkpoints: str = "none"  # none | best | last | all: checkpoints uploaded as a model artifact


@dataclass
class Config:
    data: Any = None
    backbone: Any = None
    model: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    resume: Optional[str] = None  # a run directory to continue (use `attnbench train resume=DIR`)
    allow_degenerate: bool = False  # run a variant whose attention weighs fewer than two things (marked as such)


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
    from dataclasses import fields

    for group, schema in (("trainer", TrainerConfig), ("logger", LoggerConfig)):
        known = [f.name for f in fields(schema)]
        for key in cfg.get(group) or {}:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                raise UserError(f"unknown key '{group}.{key}'" + (f": did you mean {group}.{near[0]}?" if near else "")
                                + " (`attnbench train --cfg job` prints every key)")


def check_logger(cfg: Any) -> None:
    """logger.name, logger.mode and logger.log_checkpoints, refused before anything runs (rather than when the
    run starts W&B) with the nearest accepted value."""
    import difflib

    if cfg.name not in ("wandb", "none"):
        raise UserError(f"logger.name must be wandb or none, not {cfg.name!r} (logger=none turns W&B off)")
    for key, accepted in (("mode", ("auto", "online", "offline", "disabled")),
                          ("log_checkpoints", ("none", "best", "last", "all"))):
        value = cfg.get(key, accepted[0])
        if value not in accepted:
            near = difflib.get_close_matches(str(value), accepted, n=1)
            raise UserError(f"logger.{key}={value} is not one of {', '.join(accepted)}"
                            + (f": did you mean logger.{key}={near[0]}?" if near else ""))


def check_trainer(cfg: Any) -> None:
    """Values the schema's types cannot rule out: each refused with the setting's name and what it accepts."""
    rules = [
        (cfg.epochs >= 1, f"trainer.epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"trainer.batch_size must be at least 1, got {cfg.batch_size}"),
        (cfg.eval_batch_size >= 1, f"trainer.eval_batch_size must be at least 1, got {cfg.eval_batch_size}"),
        (cfg.lr > 0, f"trainer.lr must be positive, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"trainer.weight_decay must be zero or positive, got {cfg.weight_decay}"),
        (0 <= cfg.momentum < 1, f"trainer.momentum must be in [0, 1), got {cfg.momentum}"),
        (0 <= cfg.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {cfg.label_smoothing}"),
        (cfg.warmup_epochs >= 0, f"trainer.warmup_epochs must be zero or positive, got {cfg.warmup_epochs}"),
        (cfg.grad_clip is None or cfg.grad_clip > 0,
         f"trainer.grad_clip must be positive or null, got {cfg.grad_clip}"),
        (cfg.log_every >= 1, f"trainer.log_every must be at least 1, got {cfg.log_every}"),
        (cfg.devices >= 1, f"trainer.devices must be at least 1 (processes, one GPU each), got {cfg.devices}"),
        (cfg.optimizer in ("sgd", "adamw"), f"trainer.optimizer must be sgd or adamw, not {cfg.optimizer!r}"),
        (cfg.schedule in ("cosine", "linear", "step", "constant"),
         f"trainer.schedule must be cosine, linear, step or constant, not {cfg.schedule!r}"),
        (0 <= cfg.warmup_start_factor <= 1,
         f"trainer.warmup_start_factor must be in [0, 1], got {cfg.warmup_start_factor}"),
        (0 <= cfg.end_factor <= 1, f"trainer.end_factor must be in [0, 1], got {cfg.end_factor}"),
        (cfg.norm_lr_scale > 0, f"trainer.norm_lr_scale must be positive, got {cfg.norm_lr_scale}"),
        (cfg.precision in ("auto", "bf16", "fp32"),
         f"trainer.precision must be auto, bf16 or fp32, not {cfg.precision!r}"),
        (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device) is not None,
         f"trainer.device must be auto, cpu, cuda, cuda:N or mps, not {cfg.device!r}"),
        (cfg.gamma > 0, f"trainer.gamma must be positive, got {cfg.gamma}"),
        (all(0 < m < 1 for m in cfg.milestones),
         f"trainer.milestones must be fractions of training in (0, 1), got {list(cfg.milestones)}"),
        (len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas),
         f"trainer.betas must be two numbers in [0, 1), got {list(cfg.betas)}"),
    ]
    for ok, message in rules:
        if not ok:
            raise UserError(message)
