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


def caption_attention_figure(image: Tensor, words: list[str], weights: Tensor, grid: tuple[int, int], path: Path,
                             references: list[str] | None = None, per_row: int = 6) -> Path:
    """The classic Show-Attend-Tell picture: the image, then one panel per generated word with that word's
    attention over the region grid upsampled and overlaid. ``image`` (C, H, W) in [0, 1], ``weights`` (T, H·W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(words) + 1
    rows = math.ceil(panels / per_row)
    cols = min(panels, per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    picture = image.permute(1, 2, 0).squeeze(-1).numpy()
    size = image.shape[-2:]
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes[0, 0].set_title("input", fontsize=9)
    for i, word in enumerate(words):
        ax = axes.flat[i + 1]
        heat = weights[i].float().reshape(1, 1, *grid)
        heat = torch.nn.functional.interpolate(heat / heat.max().clamp_min(1e-12), size=size, mode="bilinear",
                                               align_corners=False)[0, 0]
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        ax.imshow(heat.numpy(), cmap="gray", alpha=0.6, vmin=0, vmax=1)
        ax.set_title(word, fontsize=10)
    caption = " ".join(words)
    title = f"generated: {caption}"
    if references:
        title += f"\nreference: {references[0]}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
