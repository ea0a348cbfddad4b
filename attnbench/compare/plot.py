"""The comparison as a picture (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from ..printable import printable
from ..track.run import atomic_write
from .analysis import Report, bounds
from .formats import interval_cell


def _within(limits: tuple[float, float], metric: str) -> tuple[float, float]:
    """Axis limits of ``metric`` kept inside the range its values can take (accuracy within [0, 1])."""
    lo, hi = bounds(metric)
    return max(limits[0], lo), min(limits[1], hi)


def plot(report: Report, path: Path) -> Path:
    """One row per data set: the primary metric per variant with its 95% CI and every seed, then the metric
    against parameters and against training throughput (the cost of each gain at a glance)."""
    import matplotlib

    matplotlib.use("Agg")
    # names come from files: a $ in one is text, not the start of a formula (an unbalanced one would raise)
    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw(report, path)


def _draw(report: Report, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    n = len(report.comparisons)
    tallest = max(len(c.rows) for c in report.comparisons)
    row_height = max(3.6, 1.2 + 0.45 * tallest)
    fig, axes = plt.subplots(n, 3, figsize=(18, 0.4 + row_height * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1, 1]})
    palette = plt.get_cmap("tab10").colors
    for c, (ranked, by_params, by_speed) in zip(report.comparisons, axes):
        rows = c.rows
        color = {row.label: palette[i % len(palette)] for i, row in enumerate(sorted(rows, key=lambda r: r.label))}
        for y, row in enumerate(rows):  # ranked from the top, best first, as in the table
            lo, hi = row.ci95 if row.ci95 else (row.mean, row.mean)
            ranked.errorbar(row.mean, y, xerr=[[row.mean - lo], [hi - row.mean]], fmt="o", ms=8, capsize=5, lw=2,
                            color=color[row.label], zorder=3)
            ranked.scatter(row.scores, [y] * row.n, s=20, facecolor="white", edgecolor=color[row.label], lw=1.2,
                           zorder=4)
            text = f"{row.mean:.4f}" + (f"   Δ {row.delta:+.4f} {interval_cell(row)} {row.verdict.word}"
                                        if row.verdict is not None else "   baseline" if row.is_baseline else "")
            # right of the panel (x in axes fractions): the metric's axis keeps to the metric's range
            ranked.annotate(text, (1.0, y), xycoords=ranked.get_yaxis_transform(), xytext=(8, 0),
                            textcoords="offset points", va="center", fontsize=9, annotation_clip=False)
        baseline = next((row for row in rows if row.is_baseline), None)
        if baseline is not None:
            ranked.axvline(baseline.mean, color="0.55", ls="--", lw=1, zorder=1)
        ranked.set_yticks(range(len(rows)), [printable(f"{row.label}  (n={row.n})") for row in rows], fontsize=10)
        ranked.get_yticklabels()[0].set_fontweight("bold")
        ranked.set_ylim(len(rows) - 0.5, -0.5)
        ranked.set_xlabel(printable(f"{c.primary}: mean with 95% CI, one dot per seed"))
        ranked.grid(axis="x", alpha=0.3)
        ranked.set_xlim(*_within(ranked.get_xlim(), c.primary))
        ranked.set_title(printable(f"data={c.data} · {c.primary} ({'higher' if c.higher_is_better else 'lower'} is "
                                   f"better)" + (f" · dashed: {c.baseline}" if c.baseline else "")), loc="left",
                         fontsize=11)
        for ax, key, axis in ((by_params, "params", "parameters (fewer is cheaper)"),
                              (by_speed, "train_samples_per_s", "training samples/s (more is cheaper)")):
            points = [row for row in rows if row.cost.get(key)]
            for row in points:
                x = row.cost[key]
                lo, hi = row.ci95 if row.ci95 else (row.mean, row.mean)
                ax.errorbar(x, row.mean, yerr=[[row.mean - lo], [hi - row.mean]], fmt="o", ms=8, capsize=4,
                            color=color[row.label])
                ax.annotate(printable(row.label), (x, row.mean), xytext=(7, 5), textcoords="offset points", fontsize=9,
                            color=color[row.label])
            xs = [row.cost[key] for row in points]
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.margins(x=0.18, y=0.08)
            if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
                axis += ", log scale: does not start at zero"
            elif xs:  # from zero: a 1% difference in cost looks like one
                ax.set_xlim(0, max(xs) * 1.25)
            ax.set_ylim(*_within(ax.get_ylim(), c.primary))
            ax.set_xlabel(axis)
            ax.set_ylabel(printable(f"{c.primary} (95% CI)"))
            ax.grid(alpha=0.3)
            ax.set_title(printable(f"{c.primary}") + f" against {axis.split(' (')[0]}", loc="left", fontsize=11)
            if not points:
                ax.text(0.5, 0.5, f"no {key} in the summaries", transform=ax.transAxes, ha="center")
    data = printable(", ".join(f"data={c.data}" for c in report.comparisons))
    fig.suptitle(f"Attention variants compared: {data} · the primary metric, then against its cost",
                 fontsize=13, fontweight="bold")
    fig.tight_layout()
    try:  # through a temporary file: an existing picture (or a symlink there) is replaced, never written through
        # bbox "tight": the figures written right of the first panel's bars are included
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower(), dpi=110,
                                                 bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path
