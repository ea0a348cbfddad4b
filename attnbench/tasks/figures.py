"""Attention pictures, drawn headless with matplotlib."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

CMAP = "viridis"  # perceptually uniform: equal steps of weight look like equal steps of colour


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend (imported here, not at the top: a run without pictures
    never pays for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (its folder made) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path


def finish(fig: Any, axes: Any, shown: Any, title: str, fontsize: int) -> None:
    """A grid figure's title, tight layout, and one colour bar for every panel (``shown``: the last heat map
    drawn, None when there is none)."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="attention weight")


def _bare(ax: Any) -> None:
    """No axis drawn on ``ax`` (a matplotlib Axes). The empty tick lists spare matplotlib laying out ticks
    nobody sees on every layout pass (tight_layout, bbox_inches="tight"): about 40% of a many-panel
    figure's time, the picture unchanged."""
    ax.set(xticks=[], yticks=[])
    ax.axis("off")


def _row_label(ax: Any, text: str) -> None:
    """A row's name left of its first panel (an axis turned off shows no y label)."""
    ax.annotate(text, (-0.08, 0.5), xycoords="axes fraction", rotation=90, ha="right", va="center", fontsize=8)


def attention_grid_figure(images: Tensor, weights: Tensor, labels: list[int], predictions: list[int] | None,
                          classes: list[str], title: str, path: Path) -> Path:
    """Each image above its attention over positions (a square grid of one block) as a map of its own, the
    block's cells as they are (no smoothing, no blending into the image's colours), on one colour scale for
    the whole figure with its colour bar; the rows named; truth and prediction over each image (a wrong one
    in red; ``None`` for images that are not predicted, such as few-shot support images)."""
    plt = pyplot()

    n = len(images)
    side = math.isqrt(weights.shape[-1])
    maps = weights.reshape(n, side, side) if side * side == weights.shape[-1] else None
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 1.2, 3.9), squeeze=False)
    top = float(maps.max()) if maps is not None else 1.0
    shown = None
    for i in range(n):
        img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
        axes[0, i].imshow(img, cmap="gray" if img.ndim == 2 else None)
        for row in (0, 1):
            _bare(axes[row, i])
        if predictions is None:
            axes[0, i].set_title(classes[labels[i]], fontsize=7)
        else:
            axes[0, i].set_title(f"true {classes[labels[i]]}\npred {classes[predictions[i]]}", fontsize=7,
                                 color="black" if predictions[i] == labels[i] else "firebrick")
        if maps is not None:
            shown = axes[1, i].imshow(maps[i].numpy(), cmap=CMAP, vmin=0.0, vmax=top, interpolation="nearest")
    _row_label(axes[0, 0], "image")
    _row_label(axes[1, 0], f"attention ({side}×{side})" if maps is not None else "attention: not a square grid")
    if shown is not None:
        fig.colorbar(shown, ax=axes[1, :].tolist(), fraction=0.03, pad=0.02, label="attention weight")
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


# a review for the token pictures: its tokens, the weight each receives, which are evidence, a caption
ShadedReview = tuple[list[str], list[float], list[bool], str]
SHADE = (214, 39, 40)  # the colour of attention, at full strength on the most-attended token of the figure


def _top(reviews: list[ShadedReview]) -> float:
    """The largest weight of any token in the figure: one scale for every review, so that a review whose
    weights are near uniform looks pale, not as dark as one that picks a single word."""
    return max((w for _, weights, _, _ in reviews for w in weights), default=0.0)


def _legend(reviews: list[ShadedReview], top: float) -> str:
    """What the shading means (and the underline, when some token carries the label: only synthetic data
    marks its evidence)."""
    text = f"shade: the attention weight of each token, on one scale for every review (darkest = {top:.3g})"
    if any(any(marks) for _, _, marks, _ in reviews):
        text += "; underlined: tokens that carry the label"
    return text


def _shades(weights: list[float], top: float) -> list[float]:
    return [w / top if top > 0 else 0.0 for w in weights]


def token_weights_html(reviews: list[ShadedReview], title: str, path: Path) -> Path:
    """Each review with its tokens shaded by attention, on one scale for the whole page (darkest = the
    largest weight of any token); evidence tokens underlined; the exact weight in each token's tooltip."""
    import html

    r, g, b = SHADE
    top = _top(reviews)
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>",
             "<body style='font-family: sans-serif; max-width: 60em'>",
             f"<h3>{html.escape(title)}</h3>",
             f"<p style='color:#555'>{html.escape(_legend(reviews, top))}</p>"]
    for tokens, weights, marks, caption in reviews:
        spans = []
        for token, weight, shade, mark in zip(tokens, weights, _shades(weights, top), marks):
            style = f"background: rgba({r},{g},{b},{shade:.3f});" + (" text-decoration: underline;" if mark else "")
            spans.append(f"<span title='{weight:.4f}' style='{style}'>{html.escape(token)}</span>")
        parts.append(f"<p><b>{html.escape(caption)}</b><br>{' '.join(spans)}</p>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def token_weights_png(reviews: list[ShadedReview], title: str, path: Path, columns: int = 100) -> Path:
    """The same picture as an image: monospaced tokens on shaded boxes (one scale for the figure, with its
    colour bar), evidence underlined."""
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.patches import Rectangle

    top = _top(reviews)
    cmap = LinearSegmentedColormap.from_list("attention", [(1, 1, 1), tuple(c / 255 for c in SHADE)])
    lines: list[tuple[str, list[tuple[int, str, float, bool]]]] = []  # (caption, [(column, token, shade, mark)])
    for tokens, weights, marks, caption in reviews:
        lines.append((caption, []))
        row: list[tuple[int, str, float, bool]] = []
        column = 0
        for token, shade, mark in zip(tokens, _shades(weights, top), marks):
            if column and column + len(token) > columns:
                lines.append(("", row))
                row, column = [], 0
            row.append((column, token, shade, mark))
            column += len(token) + 1
        lines.append(("", row))
        lines.append(("", []))
    font = 8
    char = 0.6 * font / 72  # inches per monospaced character
    line = 1.5 * font / 72
    width, extra = columns * char + 0.4, 1.2  # inches of text; the colour bar's inches, right of it
    fig = plt.figure(figsize=(width + extra, (len(lines) + 3) * line + 0.3))
    ax = fig.add_axes((0.02, 0.0, 0.96 * width / (width + extra), 1.0))
    ax.set_xlim(0, columns)
    ax.set_ylim(len(lines) + 3, 0)
    ax.axis("off")
    ax.text(0, 1, title, fontsize=font + 1, fontweight="bold", va="center")
    ax.text(0, 2, _legend(reviews, top), fontsize=font - 2, color="#555555", va="center")  # as in the HTML
    for y, (caption, row) in enumerate(lines, start=3):
        if caption:
            ax.text(0, y + 0.5, caption, fontsize=font, fontweight="bold", va="center")
        for x, token, shade, mark in row:
            ax.add_patch(Rectangle((x - 0.1, y + 0.1), len(token) + 0.2, 0.8, facecolor=cmap(shade), lw=0))
            ax.text(x, y + 0.5, token, fontsize=font, family="monospace", va="center")
            if mark:
                ax.plot([x, x + len(token)], [y + 0.92, y + 0.92], color="black", lw=0.6)
    bar = fig.add_axes(((width + 0.35) / (width + extra), 0.1, 0.12 / (width + extra), 0.8))
    fig.colorbar(ScalarMappable(Normalize(0, top or 1.0), cmap), cax=bar, label="attention weight")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def token_weights_figures(reviews: list[ShadedReview], title: str, out_dir: Path) -> dict[str, Path]:
    return {"attention": token_weights_png(reviews, title, out_dir / "attention.png"),
            "attention_html": token_weights_html(reviews, title, out_dir / "attention.html")}


def caption_attention_figure(image: Tensor, words: list[str], weights: Tensor, grid: tuple[int, int], heading: str,
                             path: Path, references: list[str] | None = None, per_row: int = 6) -> Path:
    """The classic Show-Attend-Tell picture: the image, then one panel per generated word with that word's
    attention over the region grid upsampled and overlaid. ``image`` (C, H, W) in [0, 1], ``weights`` (T, H·W)."""
    plt = pyplot()

    panels = len(words) + 1
    rows = math.ceil(panels / per_row)
    cols = min(panels, per_row)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    picture = image.permute(1, 2, 0).squeeze(-1).numpy()
    size = image.shape[-2:]
    for ax in axes.flat:
        _bare(ax)
    axes[0, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes[0, 0].set_title("input", fontsize=9)
    heats = torch.nn.functional.interpolate(weights.float().reshape(-1, 1, *grid), size=size, mode="bilinear",
                                            align_corners=False)[:, 0]
    top, shown = float(heats.max()) if len(words) else 1.0, None  # one scale for every word's panel
    for i, word in enumerate(words):
        ax = axes.flat[i + 1]
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        shown = ax.imshow(heats[i].numpy(), cmap=CMAP, alpha=0.6, vmin=0, vmax=top)
        ax.set_title(word, fontsize=10)
    caption = " ".join(words)
    title = f"{heading}\ngenerated: {caption}"
    if references:
        title += f"\nreference: {references[0]}"
    finish(fig, axes, shown, title, 9)
    return save(fig, path)


def pair_attention_figure(support: Tensor, query: Tensor, support_maps: Tensor, query_maps: Tensor,
                          labels: list[int], classes: list[str], title: str, path: Path) -> Path:
    """Pair attention in one episode: a row per query, two columns per class (that class's support image,
    then the query), each with the attention it gets in that (query, class) pair; the query's own class is
    framed in green. ``support`` (N, C, H, W), ``query`` (R, C, H, W), maps (R, N, h, w)."""
    plt = pyplot()

    rows, ways = support_maps.shape[:2]
    size = query.shape[-2:]
    up = torch.nn.functional.interpolate
    fig, axes = plt.subplots(rows, 2 * ways, figsize=(1.3 * 2 * ways, 1.45 * rows + 0.4), squeeze=False)
    top = float(max(support_maps.max(), query_maps.max()))  # one colour scale for the whole episode
    shown = None
    for r in range(rows):
        for k in range(ways):
            for side, (image, maps) in enumerate(((support[k], support_maps), (query[r], query_maps))):
                ax = axes[r, 2 * k + side]
                picture = image.permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
                heat = up(maps[r, k][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
                shown = ax.imshow(heat.numpy(), cmap=CMAP, alpha=0.55, vmin=0.0, vmax=top)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == labels[r]:
                    for spine in ax.spines.values():
                        spine.set_edgecolor("limegreen")
                        spine.set_linewidth(2.5)
            if r == 0:
                axes[r, 2 * k].set_title(f"{classes[k][:26]}\nsupport | query", fontsize=6, loc="left")
        axes[r, 0].set_ylabel(f"query {r}", fontsize=7)
    finish(fig, axes, shown, title, 8)
    return save(fig, path)
