"""Optimisers and learning-rate schedules, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainerConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norm scales and other one-dimensional parameters (standard practice:
    decaying them only shrinks what normalisation undoes anyway)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainerConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    fused = device.type == "cuda"  # one kernel for the whole update on the GPU
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               fused=fused or None)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)
    raise ValueError(f"trainer.optimizer must be sgd or adamw, not {cfg.optimizer!r}")


def lr_factor(cfg: TrainerConfig, steps_per_epoch: int) -> callable:
    """Multiplier of the base learning rate at a step: linear warm-up, then cosine, step or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    milestones = [int(m * total) for m in cfg.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_schedule(cfg: TrainerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LambdaLR:
    if cfg.schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"trainer.schedule must be cosine, step or constant, not {cfg.schedule!r}")
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
