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


def pair_attention_figure(support: Tensor, query: Tensor, support_maps: Tensor, query_maps: Tensor,
                          labels: list[int], classes: list[str], path: Path) -> Path:
    """Pair attention in one episode: a row per query, two columns per class (that class's support image,
    then the query), each with the attention it gets in that (query, class) pair; the query's own class is
    framed in green. ``support`` (N, C, H, W), ``query`` (R, C, H, W), maps (R, N, h, w)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ways = support_maps.shape[:2]
    size = query.shape[-2:]
    up = torch.nn.functional.interpolate
    fig, axes = plt.subplots(rows, 2 * ways, figsize=(1.3 * 2 * ways, 1.45 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for k in range(ways):
            for side, (image, maps) in enumerate(((support[k], support_maps), (query[r], query_maps))):
                ax = axes[r, 2 * k + side]
                picture = image.permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
                heat = up(maps[r, k][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
                ax.imshow(heat.numpy(), cmap="jet", alpha=0.45)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == labels[r]:
                    for spine in ax.spines.values():
                        spine.set_edgecolor("limegreen")
                        spine.set_linewidth(2.5)
            if r == 0:
                axes[r, 2 * k].set_title(f"{classes[k][:26]}\nsupport | query", fontsize=6, loc="left")
        axes[r, 0].set_ylabel(f"query {r}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
