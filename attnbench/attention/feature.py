"""Channel and spatial attention: the ``feature`` slot, (B, C, H, W) -> (B, C, H, W).

Backbones place one of these in every residual block, on the residual branch just before the addition,
as the CBAM reference code does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attention


def _hidden(channels: int, reduction: int) -> int:
    if reduction < 1:
        raise ValueError(f"reduction must be at least 1, got {reduction}")
    return max(1, channels // reduction)


class SqueezeExcite(Attention):
    """Squeeze-and-Excitation: s = σ(W₂ ReLU(W₁ GAP(x))), out = x·s.

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018. With biases, as in the paper's code, the
    module has 2C²/r + C/r + C parameters. W₁ and W₂ are fully connected layers on the pooled (B, C) vector,
    as in the paper's code (timm writes them as 1×1 convolutions on a 1×1 map: the same function, slower).
    """

    slot = "feature"
    paper = "Hu et al. 2018, Squeeze-and-Excitation Networks"
    weights_over = "channels"

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3))))).sigmoid()
        self.record(s)
        return x * s[:, :, None, None]


class ChannelGate(nn.Module):
    """CBAM's channel half: one MLP shared by the average- and max-pooled vectors, summed, sigmoid, (B, C).

    The two pooled vectors go through the MLP as one stacked batch (one pass instead of two)."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        average, maximum = self.mlp(torch.cat([x.mean((2, 3)), x.amax((2, 3))])).chunk(2)
        return (average + maximum).sigmoid()


class SpatialGate(nn.Module):
    """CBAM's spatial half: [max over C, mean over C] -> k×k conv (no bias) -> BatchNorm -> sigmoid."""

    def __init__(self, kernel_size: int, norm: bool) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # the reference code's BatchNorm keeps running statistics with momentum 0.01
        self.norm = nn.BatchNorm2d(1, momentum=0.01) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        pooled = [x.amax(1, keepdim=True), x.mean(1, keepdim=True)]
        return self.norm(self.conv(torch.cat(pooled, 1))).sigmoid()


class CBAM(Attention):
    """Convolutional Block Attention Module: channel gate, then spatial gate.

    Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018. Defaults follow the official code
    (MLP of fully connected layers with biases, BatchNorm after the 7×7 conv); ``mlp_bias=False,
    spatial_norm=False`` give the paper's equations.
    """

    slot = "feature"
    paper = "Woo et al. 2018, CBAM: Convolutional Block Attention Module"

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7, mlp_bias: bool = True,
                 spatial_norm: bool = True) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction, mlp_bias)
        self.spatial = SpatialGate(spatial_kernel, spatial_norm)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)[:, :, None, None]
        s = self.spatial(x)
        self.record(s.flatten(1))
        return x * s
