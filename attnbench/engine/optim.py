"""Optimisers and learning-rate schedules, stepped once per optimisation step."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import TrainerConfig

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model: nn.Module, weight_decay: float, lr: float, norm_lr_scale: float = 1.0) -> list[dict]:
    """No weight decay on biases, norm scales and other one-dimensional parameters (standard practice:
    decaying them only shrinks what normalisation undoes anyway). Normalisation layers' parameters form a group
    of their own when ``norm_lr_scale`` gives them another learning rate (the speed runs train BatchNorm
    shifts 64× faster)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    decay, no_decay, norm = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if norm_lr_scale != 1.0 and id(p) in norm_params:
            norm.append(p)
        else:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if norm:
        groups.append({"params": norm, "weight_decay": 0.0, "lr": lr * norm_lr_scale})
    return groups


def build_optimizer(cfg: TrainerConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.lr, cfg.norm_lr_scale)
    fused = device.type == "cuda"  # one kernel for the whole update on the GPU
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def lr_factor(cfg: TrainerConfig, steps_per_epoch: int) -> callable:
    """Multiplier of the base learning rate at a step: linear warm-up (from ``warmup_start_factor``), then
    cosine or linear decay to ``end_factor``, steps, or constant. Linear warm-up and decay make the one-cycle
    (triangular) schedule of the speed runs."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    milestones = [int(m * total) for m in cfg.milestones]
    start, end = cfg.warmup_start_factor, cfg.end_factor

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * (step + 1) / warmup
        progress = min((step - warmup) / max(1, total - warmup), 1.0)
        if cfg.schedule == "cosine":
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.schedule == "linear":
            return end + (1 - end) * (1 - progress)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_schedule(cfg: TrainerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> LambdaLR:
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
