"""The CIFAR-10 speed-run network, with attention slots.

In the spirit of the public CIFAR-10 speed runs (Page's "How to train your ResNet" series, tysam-code's
hlb-CIFAR10, Jordan's airbench94, which reports 94.0% in 3.8 s on an A100): a frozen 2×2 patch-whitening
convolution computed from training patches, then three conv groups (conv → 2×2 max-pool → BatchNorm → GELU →
conv → BatchNorm → GELU) of 64, 256 and 256 channels on a 32 → 31 → 15 → 7 → 3 grid, and a max-pool readout
scaled by 1/9. BatchNorm keeps its scale at one (only the shift trains) and forgets fast (momentum 0.4 in torch's
convention); convolutions start with an identity (Dirac) filter for each input channel. A ``feature`` slot
closes every conv group and the readout is the ``pool`` slot (max by default), so ``model=se``/``cbam`` put
attention in the three groups as in any other backbone. The training recipe lives in
``conf/trainer/speedrun.yaml`` and ``conf/experiment/speedrun.yaml``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.pool import MaxPool
from .base import SlotFactory, fill, identity_factory, pool_readout


class PatchWhitening(nn.Module):
    """A frozen k×k convolution that whitens image patches: its 2·C·k² filters are the eigenvectors of the
    patch covariance scaled by 1/√(eigenvalue + ε), and their negatives (so a following GELU keeps both signs).
    Only its bias trains. ``fit`` sets the filters from training images."""

    def __init__(self, in_channels: int, kernel_size: int, eps: float = 5e-4) -> None:
        super().__init__()
        self.kernel_size, self.eps = kernel_size, eps
        self.conv = nn.Conv2d(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        self.conv.weight.requires_grad_(False)
        nn.init.zeros_(self.conv.bias)

    @torch.no_grad()
    def fit(self, images: Tensor, chunk: int = 500) -> None:
        """Eigen-decompose the covariance of every k×k patch of ``images`` (normalised, (N, C, H, W))."""
        k = self.kernel_size
        c = images.shape[1]
        covariance = images.new_zeros(c * k * k, c * k * k, dtype=torch.float64)
        count = 0
        for part in images.split(chunk):  # bounded memory: the patches of a few hundred images at a time
            patches = part.float().unfold(2, k, 1).unfold(3, k, 1)  # (n, C, H', W', k, k)
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
            covariance += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance / max(count, 1))
        filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]).flip(0)
        filters = filters.reshape(-1, c, k, k).to(self.conv.weight)
        self.conv.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def frozen_scale_batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)  # the scale stays one; the next convolution can scale
    return norm


def identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3×3, same padding, no bias, the first ``in_channels`` filters starting as the identity."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Module):
    """conv → 2×2 max-pool → BN → GELU → conv → BN → GELU, then the feature slot."""

    def __init__(self, in_channels: int, out_channels: int, momentum: float, feature: SlotFactory) -> None:
        super().__init__()
        self.conv1 = identity_conv(in_channels, out_channels)
        self.norm1 = frozen_scale_batchnorm(out_channels, momentum)
        self.conv2 = identity_conv(out_channels, out_channels)
        self.norm2 = frozen_scale_batchnorm(out_channels, momentum)
        self.attention = feature(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return self.attention(F.gelu(self.norm2(self.conv2(x))))


class SpeedNet(nn.Module):
    """Patch whitening, three conv groups, a pooled readout scaled by ``output_scale``."""

    slots = ("feature", "pool")

    def __init__(self, in_channels: int, widths: list[int], whitening_kernel: int = 2,
                 batchnorm_momentum: float = 0.4, output_scale: float = 1 / 9, project_readout: bool = False,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive channel counts, got {list(widths)}")
        if whitening_kernel < 1:
            raise ValueError(f"whitening_kernel must be at least 1, got {whitening_kernel}")
        if not 0 < batchnorm_momentum <= 1:
            raise ValueError(f"batchnorm_momentum must be in (0, 1], got {batchnorm_momentum}")
        slots = slots or {}
        feature = fill(slots, "feature", identity_factory)
        self.whitening = PatchWhitening(in_channels, whitening_kernel)
        channels = self.whitening.conv.out_channels
        groups = []
        for width in widths:
            groups.append(ConvGroup(channels, width, batchnorm_momentum, feature))
            channels = width
        self.groups = nn.Sequential(*groups)
        self.pool = pool_readout(slots, channels, project_readout, default=MaxPool)
        self.out_dim: int = self.pool.out_dim
        self.output_scale = output_scale

    def fit_inputs(self, images: Tensor) -> None:
        """Data-dependent initialisation: the whitening filters from (normalised) training images."""
        self.whitening.fit(images)

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.groups(F.gelu(self.whitening(x)))
        b, c, h, w = fmap.shape
        return self.pool(fmap.flatten(2).transpose(1, 2), grid=(h, w)) * self.output_scale
