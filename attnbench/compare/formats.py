"""The comparison as text: rich tables for the terminal, markdown to paste, csv and json with the raw numbers."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from typing import Any

from ..printable import markup, printable
from .analysis import COST, Comparison, Report, Row

FORMATS = ("table", "markdown", "csv", "json")


def fmt_metric(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def fmt_delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def fmt_count(value: float | None) -> str:
    """Parameters, FLOPs: 78,032 / 4.23M / 1.2G."""
    if value is None:
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:,.0f}"


def fmt_plain(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def primary_cell(row: Row) -> str:
    return fmt_metric(row.mean) + ("" if row.std is None else f" ± {row.std:.4f}")


def ci_cell(row: Row) -> str:
    return "—" if row.ci95 is None else f"[{row.ci95[0]:.4f}, {row.ci95[1]:.4f}]"


def n_cell(row: Row) -> str:
    if not row.not_completed:
        return str(row.n)
    counts = Counter(r.status for r in row.not_completed)
    return f"{row.n} (+{', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"


def delta_cell(row: Row) -> str:
    return "baseline" if row.is_baseline else fmt_delta(row.delta)


def interval_cell(row: Row) -> str:
    """Δ's interval at the table's level (the caption gives it)."""
    if row.verdict is None:
        return "—"
    lo, hi = row.verdict.interval
    return f"[{lo:+.4f}, {hi:+.4f}]"


def verdict_cell(row: Row) -> str:
    """The word; an inconclusive row adds the seeds that would decide it (80% power at its Δ and spread)."""
    if row.is_baseline:
        return "baseline"
    if row.verdict is None:
        return "—"
    if row.verdict.word != "inconclusive":
        return row.verdict.word
    needed = row.verdict.seeds_needed
    return f"inconclusive (~{needed} seeds)" if needed else "inconclusive (>10,000 seeds)"


def share_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def chosen_cell(row: Row) -> str:
    """The tuning setting the validation metric chose, and out of how many trials."""
    if row.chosen is None or not row.chosen.setting:
        return "—"
    return f"{row.chosen.label} (1 of {len(row.trials)})"


MAIN_COLUMNS = ("n", "mean ± std", "95% CI", "vs", "Δ", "Δ interval", "verdict", "test", "p", "p (adj)", "P(>)",
                "params", "attn params", "head params", "FLOPs/sample", "train samples/s", "peak MB", "wall s")


def main_columns(c: Comparison) -> list[str]:
    """The columns of the main table: the chosen setting when the rows were tuned."""
    return [*MAIN_COLUMNS[:1], *(["chosen"] if c.tuning else []), *MAIN_COLUMNS[1:]]


def marks(row: Row) -> str:
    """⚠ degenerate / reduced / undertrained beside n."""
    found = [m for m in (row.mark, "undertrained" if row.undertrained else "") if m]
    return "".join(f" ⚠ {m}" for m in found)


def main_cells(c: Comparison, row: Row) -> list[str]:
    cost = row.cost
    tested = not row.is_baseline and row.reference is not None
    return [n_cell(row) + marks(row), *([chosen_cell(row)] if c.tuning else []),
            primary_cell(row), ci_cell(row),
            row.reference_label or "—", delta_cell(row), interval_cell(row) if tested else "",
            verdict_cell(row) if tested or row.is_baseline else "—",
            row.test if tested else "", fmt_p(row.p_value) if tested
            else "", fmt_p(row.p_adjusted) if tested else "", share_cell(row.p_improvement) if tested else "",
            fmt_count(cost["params"]), fmt_count(cost["attention_params"]), fmt_count(cost["head_params"]),
            fmt_count(cost["flops_per_sample"]), fmt_plain(cost["train_samples_per_s"]),
            fmt_plain(cost["peak_memory_mb"]), fmt_plain(cost["wall_time_s"], 1)]


def method_line(c: Comparison) -> str:
    """How the table's figures were made, for its caption."""
    parts = ["95% CI: t-interval of the mean over seeds, clipped to the metric's range",
             "vs: the matched control, else the baseline; Δ: the mean per-seed difference over shared seeds "
             "(paired t; Welch's t where fewer than two are shared)",
             f"Δ interval: {c.design.describe(c.n_planned)}",
             f"verdict: better/worse when the Δ interval excludes 0, equivalent when it lies inside ±δ "
             f"(δ = {c.margin.describe()}), else inconclusive with the seeds per row that would decide it at 80% "
             f"power, at the observed Δ and spread",
             "p (adj): p × the same family, below α exactly when the interval excludes 0",
             "P(>): share of seed pairs in which the row beats its reference"]
    if c.tuning:
        parts.append(f"chosen: the setting of {', '.join(c.tuning)} with the best mean {c.selection} over seeds; "
                     f"test figures are those runs' alone")
    return "; ".join(parts)


def metric_cell(row: Row, name: str) -> str:
    if name not in row.metrics:
        return "—"
    mean, std = row.metrics[name]
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


def title(c: Comparison) -> str:
    direction = "higher" if c.higher_is_better else "lower"
    seeds = sorted({row.n for row in c.rows})
    n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    vs = f", Δ against {c.baseline}" if c.baseline else ""
    return f"data={c.data} · {c.task} · {c.primary} ({direction} is better) · mean over {n} seeds{vs}"


def status_line(c: Comparison) -> str:
    counts = Counter(["completed"] * (c.n_runs - len(c.not_completed)) + [r.status for r in c.not_completed])
    parts = [f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "completed", kv[0]))]
    chosen = f" ({sum(row.n for row in c.rows)} of them in the chosen settings)" if c.tuning else ""
    return f"{c.n_runs} runs: {', '.join(parts)}{chosen}"


def incomplete_rows(c: Comparison) -> list[list[str]]:
    rows = []
    for run in c.not_completed:
        settings = ", ".join(f"{k}={run.setting(k)}" for k in c.keys)
        rows.append([run.status, f"{settings}, seed={run.seed}", run.error or "—", str(run.path)])
    return rows


# What the terminal table leaves out, in this order, when it is wider than the terminal: time and memory, the
# finer cost columns (head and attention parameters, FLOPs), then the statistics a reader can do without (the
# test's name, the raw p, the reference, the tuning choice, P(>), the mean's interval, the adjusted p), and only
# then the two costs a reader weighs a gain against: training throughput and parameters. The rank, the
# settings, n, the primary metric, Δ, its interval and the verdict always stay; markdown, csv and json keep
# every column.
DROP_ORDER = ("wall s", "peak MB", "head params", "FLOPs/sample", "attn params", "test", "p", "vs", "chosen", "P(>)",
              "95% CI", "p (adj)", "train samples/s", "params")


def fit_columns(console: Any, headers: list[str], rows: list[list[str]], droppable: list[str]) -> list[int]:
    """The indices of the columns to show so that the table fits ``console.width`` at its natural column
    widths (nothing squeezed, so no number is cut to ``0.…``): the ``droppable`` headers are left out in
    their order until it fits; if it never does, only the others stay and rich folds them."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    def width(kept: list[int]) -> int:
        table = Table(box=box.SIMPLE_HEAD)
        for i in kept:
            table.add_column(headers[i], no_wrap=True)
        for row in rows:
            table.add_row(*[row[i] for i in kept])
        return Measurement.get(console, console.options.update_width(10**6), table).maximum  # unclamped

    kept = list(range(len(headers)))
    for name in droppable:
        if width(kept) <= console.width:
            break
        kept = [i for i in kept if headers[i] != name]
    return kept


def _left_out(headers: list[str], kept: list[int], width: int) -> str:
    """The note under a table that lost columns to the terminal's width."""
    gone = [markup(h) for i, h in enumerate(headers) if i not in kept]
    return (f"[dim]{width} columns: left out {', '.join(gone)} (a wider terminal or --format markdown shows "
            f"them)[/dim]") if gone else ""


def render_table(report: Report, width: int | None = None, color: bool = True) -> str:
    """The rich tables, as text (ANSI colours when ``color``); without ``width`` (a pipe, a file) no column is
    squeezed: lines are as long as the table needs. Every name, path, error and note in it came from a file:
    each is printed through ``markup``, so it shows as itself."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 1000, force_terminal=color, color_system="standard" if color
                      else None, highlight=False, soft_wrap=False)
    for note in report.notes:
        console.print(f"[bold]note:[/bold] {markup(note)}")
    for c in report.comparisons:
        console.print(f"[bold]{markup(title(c))}[/bold]")
        headers = ["#", *c.keys, *[f"{c.primary} {n}" if n == "mean ± std" else n for n in main_columns(c)]]
        cells = [[markup(cell) for cell in (str(rank), *[row.values[k] for k in c.keys], *main_cells(c, row))]
                 for rank, row in enumerate(c.rows, 1)]
        verdict = headers.index("verdict")
        for row in cells:  # the seeds an inconclusive row needs under its word: the column stays narrow
            row[verdict] = row[verdict].replace(" (~", "\n(~").replace(" (>", "\n(>")
        kept = fit_columns(console, headers, cells, list(DROP_ORDER))
        table = Table(caption=" · ".join(filter(None, [markup(status_line(c)), _left_out(headers, kept,
                                                                                             console.width)])),
                      box=box.SIMPLE_HEAD, caption_justify="left")
        for i in kept:
            table.add_column(markup(headers[i]), justify="left" if 0 < i <= len(c.keys) else "right", overflow="fold",
                             style="bold" if 0 < i <= len(c.keys) or "mean ± std" in headers[i] else None)
        for row in cells:
            table.add_row(*[row[i] for i in kept])
        console.print(table)
        console.print(markup(method_line(c)))
        names = [n for n in c.metric_names if n != c.primary]
        if names:
            console.print(f"[bold]data={markup(c.data)} · other final metrics (mean ± std over seeds)[/bold]")
            headers = [*c.keys, *names]
            cells = [[markup(cell) for cell in (*[row.values[k] for k in c.keys],
                                                 *[metric_cell(row, n) for n in names])] for row in c.rows]
            kept = fit_columns(console, headers, cells, names[::-1])  # the last metrics go first
            metrics = Table(box=box.SIMPLE_HEAD, caption=_left_out(headers, kept, console.width) or None,
                            caption_justify="left")
            for i in kept:
                metrics.add_column(markup(headers[i]), justify="left" if i < len(c.keys) else "right", overflow="fold",
                                   style="bold" if i < len(c.keys) else None)
            for row in cells:
                metrics.add_row(*[row[i] for i in kept])
            console.print(metrics)
        if c.not_completed:
            console.print(f"[bold yellow]data={markup(c.data)} · not completed (not averaged in)[/bold yellow]")
            apart = Table(box=box.SIMPLE_HEAD)
            for column in ("status", "settings", "error", "run directory"):
                apart.add_column(column, overflow="fold")
            for cells in incomplete_rows(c):
                apart.add_row(*map(markup, cells))
            console.print(apart)
        for note in c.notes:
            console.print(f"[bold]note:[/bold] {markup(note)}")
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())  # no padding to the width


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    def line(cells: list[str]) -> str:  # a newline or a bar in a cell would end the row or the cell
        return "| " + " | ".join(printable(cell).replace("|", "\\|") for cell in cells) + " |"

    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return "\n".join([line(header), rule, *[line(r) for r in rows]])


def render_markdown(report: Report) -> str:
    parts = [f"> {printable(note)}" for note in report.notes]
    for c in report.comparisons:
        parts.append(f"### {printable(title(c))}")
        columns = main_columns(c)
        header = ["#", *c.keys, *[f"{c.primary} (mean ± std)" if n == "mean ± std" else n for n in columns]]
        rows = [[str(i), *[row.values[k] for k in c.keys], *main_cells(c, row)] for i, row in enumerate(c.rows, 1)]
        parts.append(_md_table(header, rows, ["r"] + ["l"] * len(c.keys) + ["r"] * len(columns)))
        parts.append(printable(f"{status_line(c)}. {method_line(c)}. params and FLOPs per sample of the whole model, "
                               f"attn params of the attention modules alone, head params of the output layer."))
        names = [n for n in c.metric_names if n != c.primary]
        if names:
            parts.append("Other final metrics (mean ± std over seeds):\n\n" + _md_table(
                [*c.keys, *names], [[*[row.values[k] for k in c.keys], *[metric_cell(row, n) for n in names]]
                                    for row in c.rows], ["l"] * len(c.keys) + ["r"] * len(names)))
        if c.not_completed:
            parts.append("Not completed (not averaged in):\n\n" + _md_table(
                ["status", "settings", "error", "run directory"], incomplete_rows(c), ["l"] * 4))
        parts += [f"> note: {printable(note)}" for note in c.notes]
    return "\n\n".join(parts) + "\n"


def _row_record(c: Comparison, rank: int, row: Row) -> dict[str, Any]:
    return {
        "rank": rank, **row.values, "n": row.n, "seeds": row.seeds, "mean": row.mean, "std": row.std,
        "ci95_low": row.ci95[0] if row.ci95 else None, "ci95_high": row.ci95[1] if row.ci95 else None,
        "baseline": row.is_baseline, "reference": row.reference_label, "delta": row.delta, "test": row.test,
        **_verdict_record(row),
        "p_value": row.p_value, "p_adjusted": row.p_adjusted, "p_improvement": row.p_improvement,
        "chosen": row.chosen.setting if row.chosen and c.tuning else None,
        "trials": [{"setting": t.setting, "selection_score": t.score, "n": len(t.runs)} for t in row.trials]
        if c.tuning else None,
        "not_completed": dict(Counter(r.status for r in row.not_completed)),
        "attention": row.attention, "mark": row.mark, "undertrained": row.undertrained,
        "metrics": {name: {"mean": m, "std": s} for name, (m, s) in sorted(row.metrics.items())},
        **row.cost,
    }


VERDICT_FIELDS = ("delta_low", "delta_high", "interval_level", "verdict", "margin", "seeds_needed")


def _verdict_record(row: Row) -> dict[str, Any]:
    v = row.verdict
    return {"verdict": v.word if v else None, "delta_low": v.interval[0] if v else None,
            "delta_high": v.interval[1] if v else None, "interval_level": v.level if v else None,
            "margin": v.margin if v else None, "seeds_needed": v.seeds_needed if v else None}


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "notes": report.notes,
        "data_sets": [{
            "data": c.data, "task": c.task, "primary": c.primary, "higher_is_better": c.higher_is_better,
            "baseline": c.baseline, "keys": c.keys, "tuning": c.tuning, "selection": c.selection, "notes": c.notes,
            "family": {"tests": c.n_planned, "looks": c.design.looks, "alpha": c.design.alpha,
                       "level": c.design.level(c.n_planned), "correction": "Bonferroni"},
            "delta": c.margin.describe(),
            "rows": [_row_record(c, i, row) for i, row in enumerate(c.rows, 1)],
            "not_completed": [{"run_dir": str(r.path), "status": r.status, "error": r.error or None,
                               **{k: r.setting(k) for k in c.keys}, "seed": r.seed} for r in c.not_completed],
        } for c in report.comparisons],
        "skipped": [{"file": str(path), "reason": why} for path, why in report.loaded.skipped],
    }


def render_json(report: Report) -> str:
    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(report_dict(report)), indent=2) + "\n"


def render_csv(report: Report) -> str:
    """One line per group, raw numbers at full precision; keys and metrics of every data set as columns."""
    keys = list(dict.fromkeys(k for c in report.comparisons for k in c.keys))
    metrics = list(dict.fromkeys(n for c in report.comparisons for n in c.metric_names if n != c.primary))
    header = ["data", "task", "primary", "higher_is_better", "rank", *keys, "n", "seeds", "mean", "std", "ci95_low",
              "ci95_high", "baseline", "reference", "delta", *VERDICT_FIELDS, "test", "p_value", "p_adjusted",
              "p_improvement", "chosen",
              "not_completed", *[f"{m} mean" for m in metrics],
              *[f"{m} std" for m in metrics], *COST, "attention", "mark"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for c in report.comparisons:
        for rank, row in enumerate(c.rows, 1):
            verdict = _verdict_record(row)
            writer.writerow([c.data, c.task, c.primary, c.higher_is_better, rank,
                             *[row.values.get(k, "") for k in keys], row.n, " ".join(map(str, row.seeds)),
                             row.mean, _blank(row.std), _blank(row.ci95 and row.ci95[0]),
                             _blank(row.ci95 and row.ci95[1]), c.baseline if row.is_baseline else "",
                             _blank(row.reference_label), _blank(row.delta),
                             *[_blank(verdict[k]) for k in VERDICT_FIELDS], _blank(row.test), _blank(row.p_value),
                             _blank(row.p_adjusted), _blank(row.p_improvement),
                             row.chosen.label if row.chosen and c.tuning else "", len(row.not_completed),
                             *[_blank(row.metrics.get(m, (None,))[0]) for m in metrics],
                             *[_blank(row.metrics.get(m, (None, None))[1]) for m in metrics],
                             *[_blank(row.cost.get(k)) for k in COST], row.attention,
                             row.mark or ("undertrained" if row.undertrained else "")])
    return buffer.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def render(report: Report, fmt: str, color: bool = False, width: int | None = None) -> str:
    if fmt == "table":
        return render_table(report, width=width, color=color)
    return {"markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt](report)
