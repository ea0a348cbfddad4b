"""Efficient Channel Attention as an attnbench ``feature`` variant.

Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020:
s = σ(conv1d_k(GAP(x))), out = x·s, with k = |log2(C)/γ + b/γ| rounded to odd (γ = 2, b = 1). It has k
parameters per block, against SE's 2C²/r.

Subclassing ``Attention`` is what gets it attnbench's diagnostics for free: ``record`` the gate and the run
reports its entropy, ``attention_params`` counts its weights, compare shows both.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from attnbench.attention import Attention


def adaptive_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    k = int(abs(math.log2(channels) / gamma + b / gamma))
    return k if k % 2 else k + 1


class ECA(Attention):
    slot = "feature"  # (B, C, H, W) -> (B, C, H, W); the backbone passes C first
    paper = "Wang et al. 2020, ECA-Net: Efficient Channel Attention"
    weights_over = "channels"

    def __init__(self, channels: int, /, kernel_size: int | None = None) -> None:
        super().__init__()
        k = adaptive_kernel(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv(x.mean((2, 3)).unsqueeze(1)).squeeze(1).sigmoid()  # (B, C)
        self.record(gate)
        return x * gate[:, :, None, None]
