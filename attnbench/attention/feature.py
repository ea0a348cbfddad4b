"""Channel and spatial attention: the ``feature`` slot, (B, C, H, W) -> (B, C, H, W).

Backbones place one of these in every residual block, on the residual branch just before the addition,
as the CBAM reference code does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
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

    def __init__(self, channels: int, /, reduction: int = 16, bias: bool = True) -> None:
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

    def __init__(self, channels: int, /, reduction: int = 16, spatial_kernel: int = 7, mlp_bias: bool = True,
                 spatial_norm: bool = True) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction, mlp_bias)
        self.spatial = SpatialGate(spatial_kernel, spatial_norm)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)[:, :, None, None]
        s = self.spatial(x)
        self.record(s.flatten(1))
        return x * s

    def choices(self, *inputs: Any, **options: Any) -> dict[str, int]:
        x = inputs[0]  # a channel gate, then a spatial one
        return {"channels": x.shape[1], "positions": x.shape[2] * x.shape[3]}


class PositionAttention(nn.Module):
    """DANet's position module: softmax(QKᵀ) over all positions, applied to V (Q, K: C→C/r; V: C→C).

    No 1/√d scaling, as in the official code. Training uses ``F.scaled_dot_product_attention`` (the same
    sum, without keeping the N×N weights); when the weights are wanted they are computed explicitly.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.query = nn.Conv2d(channels, hidden, 1)
        self.key = nn.Conv2d(channels, hidden, 1)
        self.value = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        q, k, v = (proj(x).flatten(2).transpose(1, 2) for proj in (self.query, self.key, self.value))
        if need_weights:
            weights = (q @ k.transpose(1, 2)).softmax(-1)  # (B, N, N): row i, where position i looks
            out = weights @ v
        else:
            weights, out = None, F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return out.transpose(1, 2).reshape(x.shape), weights


class ChannelAttention(nn.Module):
    """DANet's channel module: softmax over the C×C Gram matrix XXᵀ, applied to X; no parameters.

    The official code takes softmax(max(energy) − energy) (``max_minus=True``); softmax is shift-invariant,
    so that is softmax(−XXᵀ), which favours the channels least alike. ``max_minus=False`` is the paper's
    softmax(XXᵀ).
    """

    def __init__(self, max_minus: bool) -> None:
        super().__init__()
        self.max_minus = max_minus

    def forward(self, x: Tensor) -> Tensor:
        f = x.flatten(2)  # (B, C, N)
        energy = f @ f.transpose(1, 2)
        if self.max_minus:
            energy = energy.amax(-1, keepdim=True) - energy
        return (energy.softmax(-1) @ f).reshape(x.shape)


class DualAttention(Attention):
    """DANet: a position attention module and a channel attention module, summed.

    Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019. Each module adds its attention
    output to the input scaled by a learned scalar that starts at 0 (γ for position, β for channel), so the
    block starts as the identity. The official head sums the two modules' outputs x + γ·P(x) and
    x + β·C(x); inside a residual block that would double the branch, so here both terms are added to one
    copy: out = x + γ·P(x) + β·C(x). ``max_minus`` picks the official channel energy (see
    ``ChannelAttention``); ``reduction`` is the query/key reduction of the position module (8).
    """

    slot = "feature"
    paper = "Fu et al. 2019, Dual Attention Network for Scene Segmentation (DANet)"

    def __init__(self, channels: int, /, reduction: int = 8, max_minus: bool = True) -> None:
        super().__init__()
        self.position = PositionAttention(channels, reduction)
        self.channel = ChannelAttention(max_minus)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        position, weights = self.position(x, need_weights=self.capture or not self.training)
        if weights is not None:
            self.record(weights)
        return x + self.gamma * position + self.beta * self.channel(x)

    def choices(self, *inputs: Any, **options: Any) -> dict[str, int]:
        x = inputs[0]  # the channel module weighs channels, the position module positions
        return {"channels": x.shape[1], "positions": x.shape[2] * x.shape[3]}


class Gate(Attention):
    """A GRU-style update gate between each feature and a candidate computed with the image's context.

    The survey's "gating": g = σ(W_g[x; c] + b_g), h̃ = tanh(W_h[x; c] + b_h), out = g⊙x + (1−g)⊙h̃, where
    x is the feature at one position and c = GAP(x) is the globally pooled feature of the same image (the
    role of the GRU's previous state). g and h̃ are per position and channel; as in a GRU the update gate
    chooses, element by element, between keeping x and replacing it with the context-informed candidate.
    There is no reset gate (the survey's form has none). W[x; c] is computed as W_x·x + W_c·c, which is the
    same product without broadcasting c to every position first. Biases start at zero, so g starts near 0.5.
    Parameters: 4C² + 2C (4C² with ``bias=False``). The sequence form is ``mixer.TokenGate``.
    """

    slot = "feature"
    paper = "GRU-style gating (Cho et al. 2014), the survey's gating attention"

    def __init__(self, channels: int, /, bias: bool = True) -> None:
        super().__init__()
        self.from_input = nn.Conv2d(channels, 2 * channels, 1, bias=bias)  # W_x for gate and candidate; b_g, b_h
        self.from_context = nn.Conv2d(channels, 2 * channels, 1, bias=False)  # W_c
        if bias:
            nn.init.zeros_(self.from_input.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.from_input(x) + self.from_context(x.mean((2, 3), keepdim=True))
        gate, candidate = z.chunk(2, dim=1)
        g = gate.sigmoid()
        self.record(g.mean(1).flatten(1))
        return g * x + (1 - g) * torch.tanh(candidate)
