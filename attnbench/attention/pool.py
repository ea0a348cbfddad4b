"""Pooling and aggregation: the ``pool`` slot, (B, N, D) with a mask -> (B, out_dim).

Every pool takes the width ``dim`` first and exposes ``out_dim`` (several variants concatenate, so the
readout width is not always ``dim``). ``forward(x, mask=None, grid=None)``: ``mask`` is True on real
positions; ``grid`` is (H, W) when the positions come from an image, for the variants that use space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Attention


def _valid(x: Tensor, mask: Tensor | None) -> Tensor:
    """The mask as a (B, N, 1) float tensor (all ones when there is none)."""
    if mask is None:
        return x.new_ones(x.shape[0], x.shape[1], 1)
    return mask.unsqueeze(-1).to(x.dtype)


class SumPool(Attention):
    """Sum over positions (padding excluded): the order-free baseline of Deep Sets."""

    slot = "pool"
    paper = "baseline"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        return (x * _valid(x, mask)).sum(1)


class MeanPool(Attention):
    """Mean over positions (padding excluded); global average pooling on images."""

    slot = "pool"
    paper = "baseline"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        valid = _valid(x, mask)
        return (x * valid).sum(1) / valid.sum(1).clamp_min(1)


class MaxPool(Attention):
    """Maximum over positions per channel (padding excluded)."""

    slot = "pool"
    paper = "baseline"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
        return x.amax(1)
