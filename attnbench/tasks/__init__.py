"""One task family per module: how a model is built from backbone + variant, its loss, metrics, pictures."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..config import check_logger, check_trainer
from ..data import LOADERS
from ..errors import UserError
from .build import attention_slots, backbone_class, check_keys, data_kwargs, parameters, plain
from .caption import CaptionTask
from .classify import ClassifyTask
from .fewshot import FewShotTask
from .rate import RateTask
from .values import SEED, check_values

# task family -> class; ``data.task`` in a data config picks one
TASKS: dict[str, type] = {
    "classify": ClassifyTask,
    "rate": RateTask,
    "caption": CaptionTask,
    "fewshot": FewShotTask,
}


def family_slots() -> dict[str, tuple[str, ...]]:
    return {family: cls.slots for family, cls in TASKS.items()}


def task_class(cfg: DictConfig, choices: dict[str, str]) -> type:
    family = cfg.data.get("task")
    if family not in TASKS:
        raise UserError(f"data={choices['data']} names task {family!r}, which is not one of {', '.join(TASKS)}")
    return TASKS[family]


def check(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Everything about a composed config that can be known without loading data or building a model:
    the task exists, data/backbone/model keys are real parameters, the variant fits a slot.

    ``choices`` are the config-group options the user picked (``{"data": "cifar100", ...}``): messages
    name those, while ``name`` inside each group is the loader, backbone or variant it runs.
    """
    check_trainer(cfg.trainer)
    check_logger(cfg.logger)
    if not SEED.holds(cfg.seed):
        raise UserError(f"seed must be {SEED}, got {cfg.seed}")
    cls = task_class(cfg, choices)
    loader = LOADERS.get(cfg.data.name)
    if loader is None:
        raise UserError(f"data={choices['data']} names loader {cfg.data.name!r}, which does not exist")
    data_kwargs(cfg.data, loader, cls.data_keys, f"data={choices['data']}")
    label = f"backbone={choices['backbone']}"
    if cfg.backbone.name not in cls.backbones:
        raise UserError(f"{label} does not fit the {cls.family} task of data={choices['data']}")
    backbone = backbone_class(cfg.backbone.name, label)
    settings = plain(cfg.backbone)
    settings.pop("name")
    given_by_task = ("slots", *cls.backbone_inputs)
    check_keys(settings, [p for p in parameters(backbone) if p not in given_by_task], label)
    check_values(backbone, settings, label)
    # slots the task fills itself (few-shot's pair slot, between query and class maps) are offered too
    attention_slots(cfg.model, (*backbone.slots, *getattr(cls, "task_slots", ())), label, family_slots())


def build_task(cfg: DictConfig, choices: dict[str, str]):
    """Load the data and build the model of the task family the data set names, then probe it with one
    forward pass on two test samples: an impossible hyperparameter (k larger than the sequence, a window
    wider than the grid) is refused here, before training, rather than as a shape error mid-run."""
    check(cfg, choices)
    task = task_class(cfg, choices)(cfg, choices, family_slots())
    batch, _ = task.example_batch(limit=2)
    task.model.eval()
    try:
        with torch.no_grad():
            task.predict(task.model, batch)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model={choices['model']} does not fit backbone={choices['backbone']} on "
                        f"data={choices['data']}: {first}") from e
    task.model.train()
    return task


__all__ = ["TASKS", "build_task", "check", "family_slots"]
