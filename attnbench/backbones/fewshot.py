"""Few-shot backbones: Conv-4 and ResNet-12. Both return feature maps (B, C, h, w), not vectors: the few-shot
task pools them, or compares them position by position (the ``pair`` variants). Each block has a ``feature``
slot, so channel and spatial attention (``se``, ``cbam``, ``dual``) plug in here as in the CIFAR ResNets.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import SlotFactory, fill, identity_factory


class ConvBlock(nn.Module):
    """3×3 conv (64 filters) - BatchNorm - feature slot - ReLU - optional 2×2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, feature: SlotFactory) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.attention = feature(out_channels)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.attention(self.bn(self.conv(x))), inplace=True))


class Conv4(nn.Module):
    """Conv-4 (Vinyals et al. 2016; Snell et al. 2017): four conv blocks of ``width`` channels.

    Every block max-pools in the standard network (84×84 → 5×5, 28×28 → 1×1). ``pooled_blocks`` < 4 pools in
    the first blocks only (as DN4 and CovaMNet do) and keeps a larger map for comparing positions: 28×28 →
    7×7 with two.
    """

    slots = ("feature",)

    def __init__(self, in_channels: int, width: int = 64, blocks: int = 4, pooled_blocks: int = 4,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        if blocks < 1 or width < 1:
            raise ValueError(f"blocks and width must be at least 1, got {blocks} and {width}")
        if not 0 <= pooled_blocks <= blocks:
            raise ValueError(f"pooled_blocks must be between 0 and blocks={blocks}, got {pooled_blocks}")
        feature = fill(slots or {}, "feature", identity_factory)
        self.blocks = nn.Sequential(*(ConvBlock(in_channels if i == 0 else width, width, i < pooled_blocks, feature)
                                      for i in range(blocks)))
        self.out_channels = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ResidualBlock12(nn.Module):
    """ResNet-12's block: three 3×3 conv-BN (LeakyReLU 0.1 between), the feature slot, a 1×1 conv-BN
    shortcut, LeakyReLU, 2×2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, feature: SlotFactory, slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels)]
            if i < 2:
                layers.append(nn.LeakyReLU(slope, inplace=True))
        self.body = nn.Sequential(*layers)
        self.attention = feature(out_channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.attention(self.body(x)) + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): four residual blocks, each halving the map.

    Widths 64-160-320-640 as in MetaOptNet (12.4M parameters; 84×84 → 5×5). CAN's own ResNet-12 is narrower
    (64-128-256-512) and strides instead of pooling (84×84 → 6×6): ``widths`` sets the channels.
    """

    slots = ("feature",)

    def __init__(self, in_channels: int, widths: list[int] | None = None, slope: float = 0.1,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        widths = list(widths or [64, 160, 320, 640])
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive channel counts, got {widths}")
        feature = fill(slots or {}, "feature", identity_factory)
        channels = [in_channels, *widths]
        self.blocks = nn.Sequential(*(ResidualBlock12(channels[i], channels[i + 1], feature, slope)
                                      for i in range(len(widths))))
        self.out_channels = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu", a=slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
