"""One task family per module: how a model is built from backbone + variant, its loss, metrics, pictures."""

from __future__ import annotations

import functools
import json
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..attention import survey
from ..config import check_settings
from ..data import LOADERS
from ..errors import UserError
from ..values import check_values
from .base import Task, read_spec
from .build import (
    attention_slots,
    backbone_class,
    backbone_slots,
    check_keys,
    data_kwargs,
    fits_task,
    parameters,
    plain,
    split_seed_of,
    variant_classes,
)
from .caption import CaptionTask
from .classify import ClassifyTask
from .fewshot import FewShotTask
from .rate import RateTask
from .shapes import attention_record

# task family -> class; ``task.name`` picks one (a data config chooses its task= option)
TASKS: dict[str, type[Task]] = {
    "classify": ClassifyTask,
    "rate": RateTask,
    "caption": CaptionTask,
    "fewshot": FewShotTask,
}


def family_slots() -> dict[str, tuple[str, ...]]:
    return {family: cls.slots for family, cls in TASKS.items()}


def task_class(cfg: DictConfig, choices: dict[str, str]) -> type[Task]:
    """The task family's class, refusing a data set whose loader gives another family's data."""
    family = cfg.task.name
    if family not in TASKS:
        raise UserError(f"task={choices['task']} names family {family!r}, which is not one of {', '.join(TASKS)}")
    cls = TASKS[family]
    loader = LOADERS.get(cfg.data.name)
    if loader is None:
        raise UserError(f"data={choices['data']} names loader {cfg.data.name!r}, which does not exist")
    gives = typing.get_type_hints(loader).get("return")
    if gives is not None and not issubclass(gives, cls.data_type):
        takes = [f for f, c in TASKS.items() if issubclass(gives, c.data_type)]
        raise UserError(f"task={choices['task']} cannot train on data={choices['data']}, a data set of the "
                        f"{' or '.join(takes) or 'no'} task; leave task= to the data set")
    return cls


def check(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Everything about a composed config that can be known without loading data or building a model:
    the task exists and fits the data, data/backbone/model/task keys are real parameters, the variant fits a slot.

    ``choices`` are the config-group options the user picked (``{"data": "cifar100", ...}``): messages
    name those, while ``name`` inside each group is the loader, backbone or variant it runs.
    """
    check_settings(cfg)
    cls = task_class(cfg, choices)
    _, own = data_kwargs(cfg.data, LOADERS[cfg.data.name], cls.data_key_names(), f"data={choices['data']}")
    if cfg.split_by_seed:
        split_seed_of(cfg, LOADERS[cfg.data.name], f"data={choices['data']}")
    read_spec(cls.DataKeys, own, f"data={choices['data']}")
    read_spec(cls.Settings, plain(cfg.task), f"task={choices['task']}")
    label = f"backbone={choices['backbone']}"
    backbone = backbone_class(cfg.backbone.name, label)
    if not fits_task(backbone, cfg.backbone.name, cls):
        raise UserError(f"{label} does not fit the {cls.family} task of data={choices['data']}")
    settings = plain(cfg.backbone)
    settings.pop("name")
    given_by_task = ("slots", *cls.backbone_inputs)
    check_keys(settings, [p for p in parameters(backbone) if p not in given_by_task], label)
    check_values(backbone, settings, label)
    # slots the task fills itself (few-shot's pair slot, between query and class maps) are offered too
    offered = (*backbone_slots(backbone, settings), *cls.task_slots)
    attention_slots(cfg.model, offered, label, family_slots())


def build_task(cfg: DictConfig, choices: dict[str, str]):
    """Load the data and build the model of the task family the data set names, then probe it with one
    forward pass on two test samples: an impossible hyperparameter (k larger than the sequence, a window
    wider than the grid) is refused here, before training, rather than as a shape error mid-run. The same
    pass records what every attention module weighs over (``task.attention``, see ``shapes``) and refuses
    attention over nothing."""
    check(cfg, choices)
    task = task_class(cfg, choices)(cfg, choices, family_slots())
    batch, _ = task.example_batch(limit=2)
    task.model.eval()
    kinds = tuple(variant_classes(cfg.model))
    probe_started = time.perf_counter()
    try:
        with torch.no_grad():
            modules = survey(task.model, lambda: task.predict(task.model, batch), kinds)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model={choices['model']} does not fit backbone={choices['backbone']} on "
                        f"data={choices['data']}: {first}") from e
    task.model.train()
    task.attention = attention_record(modules, cfg, choices, task.family)
    task.probe_s = time.perf_counter() - probe_started  # the run's ``probe`` phase
    return task


@contextmanager
def shared_data() -> Iterator[None]:
    """Within the block each loader loads one data configuration once, however many tasks ask for it."""
    originals = dict(LOADERS)

    def cached(loader: Callable) -> Callable:
        loaded: dict[str, Any] = {}

        @functools.wraps(loader)  # keeps its signature, against which data keys are checked
        def load(**kwargs: Any) -> Any:
            key = json.dumps(kwargs, sort_keys=True, default=str)
            if key not in loaded:
                loaded[key] = loader(**kwargs)
            return loaded[key]
        return load

    LOADERS.update({name: cached(loader) for name, loader in originals.items()})
    try:
        yield
    finally:
        LOADERS.update(originals)


def probe_grid(jobs: list[tuple[str, DictConfig]]) -> None:
    """Build every distinct job of a grid (its configuration with its Hydra node; seeds do not change a
    shape) and probe its attention, so that a job whose attention weighs nothing is refused before the first
    job starts. ``jobs`` are (prefix naming the job, config); a refusal is a UserError that starts with it.
    Each data configuration is loaded once, and nothing built is kept."""
    seen: set[str] = set()
    with shared_data():
        for prefix, cfg in jobs:
            groups = ("data", "task", "backbone", "model", "trainer")
            identity = [OmegaConf.to_container(cfg[k], resolve=True) for k in groups]
            key = json.dumps([*identity, cfg.allow_degenerate], sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            try:
                build_task(cfg, dict(cfg.hydra.runtime.choices))
            except UserError as e:
                raise UserError(prefix + str(e)) from e


__all__ = ["TASKS", "Task", "build_task", "check", "family_slots", "probe_grid", "shared_data"]
