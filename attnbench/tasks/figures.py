"""Attention pictures, drawn headless with matplotlib."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor


def attention_grid_figure(images: Tensor, weights: Tensor, labels: list[int], classes: list[str],
                          path: Path) -> Path:
    """Each image above its attention over positions (a square grid of the last block), upsampled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    side = math.isqrt(weights.shape[-1])
    maps = weights.reshape(n, 1, side, side) if side * side == weights.shape[-1] else None
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
        for row in (0, 1):
            axes[row, i].imshow(img, cmap="gray" if img.ndim == 2 else None)
            axes[row, i].axis("off")
        axes[0, i].set_title(classes[labels[i]], fontsize=8)
        if maps is not None:
            heat = torch.nn.functional.interpolate(maps[i:i + 1], size=images.shape[-2:], mode="bilinear")[0, 0]
            axes[1, i].imshow(heat.numpy(), cmap="jet", alpha=0.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
