"""What every task family shares: the declared shape of a task class, and the set-up that turns a composed config
into data, slot factories and a backbone.

A family subclasses ``Task``, declares its class attributes and its two small typed specs (``DataKeys``: the
``data.*`` keys the task itself reads, such as augmentation; ``Settings``: its ``task.*`` keys, whose values come
from ``conf/task/<family>.yaml``), then builds its model in ``__init__`` after ``super().__init__``. The engine
drives it through ``engine/protocol.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ..attention import diagnostics
from ..backbones import SlotFactory
from ..data import LOADERS
from ..values import check_schema_values, setting
from .build import (
    attention_slots,
    backbone_class,
    backbone_slots,
    build_backbone,
    check_keys,
    data_kwargs,
    plain,
    split_seed_of,
)


@dataclass
class NoKeys:
    """A family that reads no keys of this kind."""


@dataclass
class TaskName:
    """``task.*`` of a family with no settings beyond its name."""

    name: str = setting()


def read_spec(spec: type, values: Mapping[str, Any], label: str) -> Any:
    """``spec(**values)``, each key known to the spec and each value one it accepts (else a one-line UserError);
    ``label`` names the config node (``task=fewshot``)."""
    check_keys(values, [f.name for f in fields(spec)], label)
    check_schema_values(spec, values, label.split("=")[0])
    return spec(**values)


class Task:
    family: ClassVar[str]  # classify | rate | caption | fewshot: conf/task/<family>.yaml names it
    slots: ClassVar[tuple[str, ...]]  # the slot kinds a variant can fill in this family
    task_slots: ClassVar[tuple[str, ...]] = ()  # filled by the task itself, not by the backbone (few-shot's pair)
    primary: ClassVar[str]  # the metric that picks the best checkpoint and heads comparisons
    higher_is_better: ClassVar[bool] = True
    convolutional: ClassVar[bool]  # channels_last pays off only for convolutional models
    backbones: ClassVar[tuple[str, ...]]  # backbone class names (BACKBONES) the family can use
    backbone_inputs: ClassVar[tuple[str, ...]] = ()  # backbone arguments the task supplies from the data
    data_type: ClassVar[type]  # what the family's loaders return
    DataKeys: ClassVar[type] = NoKeys  # the data.* keys the task reads itself, with their defaults
    Settings: ClassVar[type] = TaskName  # the task.* keys (values in conf/task/)
    # its figures show more than attention maps (captioning: the generated words under each image), so a run
    # whose attention has no map to draw still draws them
    draws_without_maps: ClassVar[bool] = False
    batch_key: ClassVar[str] = "trainer.batch_size"  # the setting that gives ``batch_size``, a step's global batch

    def __init__(self, cfg: DictConfig, choices: dict[str, str], family_slots: dict[str, tuple[str, ...]]) -> None:
        self.model_name, self.data_name = choices["model"], choices["data"]  # messages and figure titles
        self.loader_kwargs, own = data_kwargs(cfg.data, LOADERS[cfg.data.name], self.data_key_names(),
                                              f"data={choices['data']}")
        if cfg.split_by_seed:
            self.loader_kwargs["split_seed"] = split_seed_of(cfg, LOADERS[cfg.data.name], f"data={choices['data']}")
        self.data_keys = read_spec(self.DataKeys, own, f"data={choices['data']}")
        self.settings = read_spec(self.Settings, plain(cfg.task), f"task={choices['task']}")
        self.backbone_cfg, self.backbone_label = cfg.backbone, f"backbone={choices['backbone']}"
        backbone = plain(cfg.backbone)
        offered = (*backbone_slots(backbone_class(backbone.pop("name"), self.backbone_label), backbone),
                   *self.task_slots)
        self.factories: dict[str, SlotFactory] = attention_slots(cfg.model, offered, self.backbone_label,
                                                                 family_slots)
        self.batch_size = cfg.trainer.batch_size
        self.eval_batch_size = cfg.trainer.eval_batch_size
        self.label_smoothing = cfg.trainer.label_smoothing
        self.seed = cfg.seed
        self.device = torch.device("cpu")
        self.rank, self.world = 0, 1

    @classmethod
    def data_key_names(cls) -> list[str]:
        return [f.name for f in fields(cls.DataKeys)]

    def build_backbone(self, **inputs: Any) -> nn.Module:
        """The configured backbone with the variant in the slots it offers (not those the task fills)."""
        slots = {kind: f for kind, f in self.factories.items() if kind not in self.task_slots}
        return build_backbone(self.backbone_cfg, slots, self.backbone_label, **inputs)

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def notes(self) -> dict[str, str]:
        return {}

    def test_items(self) -> int | None:
        """How many scored items the test metric averages over: its resolution, and its binomial error."""
        test = getattr(getattr(self, "data", None), "test", None)
        return len(test) if test is not None else None

    def eval_share(self, split: str) -> float | None:
        """The size of ``split`` against the training split, for the time estimate (None: unknown)."""
        return None

    def save_artifacts(self, run_dir: Path) -> None:
        """Nothing beyond checkpoints, unless a family needs more (a vocabulary)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore, unless a family's data pipeline has random state."""


class DiagnosticMeans:
    """The attention modules' evaluation diagnostics (entropy, kept heads...), summed on the device over the
    batches of a split and read as means."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.batches = 0

    def add(self, model: nn.Module) -> None:
        for name, value in diagnostics(model).items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.batches += 1

    def means(self) -> dict[str, Tensor]:
        return {name: total / max(self.batches, 1) for name, total in self.sums.items()}
