"""CIFAR-style residual networks with a ``feature`` slot in every block and a ``pool`` readout slot.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2: a 3×3 stem and stages of
basic blocks. ResNet-20/56/110 use three stages of 16/32/64 channels and parameter-free shortcuts
(option A); the CIFAR ResNet-18 uses four stages of 64…512 channels and 1×1 projection shortcuts
(option B). The small CNN for 8×8 digits is the same network with one block per stage.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import SlotFactory, fill, identity_factory, pool_readout


class PadShortcut(nn.Module):
    """Option A: subsample and zero-pad the new channels, no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, then the feature slot, then the residual addition and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, feature: SlotFactory,
                 shortcut_kind: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = feature(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride, shortcut_kind)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """A CIFAR-style ResNet: stem, stages of basic blocks (each later stage halves the grid), pool readout."""

    slots = ("feature", "pool")

    def __init__(self, in_channels: int, stages: list[int], widths: list[int], shortcut: str = "A",
                 project_readout: bool = False, slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        if len(stages) != len(widths) or not stages:
            raise ValueError(f"stages {list(stages)} and widths {list(widths)} must be non-empty and equally long")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (1×1 projection), not {shortcut!r}")
        slots = slots or {}
        feature = fill(slots, "feature", identity_factory)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, (depth, width) in enumerate(zip(stages, widths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, feature, shortcut))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = pool_readout(slots, channels, project_readout)
        self.out_dim: int = self.pool.out_dim
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation, as in the paper. No zero-initialised last BN per block: a gate placed after it
        # (SE, CBAM) would see only zeros at the start and learn far more slowly than the plain network.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.feature_map(x)
        b, c, h, w = fmap.shape
        return self.pool(fmap.flatten(2).transpose(1, 2), grid=(h, w))
