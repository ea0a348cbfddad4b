"""attnbench compare: which variant won, by how much, with what confidence and at what cost.

Runs are grouped by every setting that differs between them except the seed — the group choices (``model=se``)
and the config values under them that differ for the same choice (``model.reduction=8``, ``trainer.lr=0.1``) —
and compared per data set (see ``analysis``). ``runs`` reads run directories, ``formats`` writes the table,
``plot`` draws it. Also used when a multirun ends (``callbacks.SweepSummary``): ``sweep_report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import CommandParser, UserError
from ..printable import markup, printable
from .analysis import COST, Comparison, Report, build_report, parse_baseline, parse_selection
from .formats import FORMATS, render, render_markdown, render_table
from .plot import plot
from .runs import check_targets, load_runs
from .verdict import parse_margins

# ---------------------------------------------------------------------------------------- the command

DESCRIPTION = """Put the runs under PATH side by side: each variant's primary metric over seeds, Δ against its
matched control or the baseline with an interval and a verdict (better, worse, equivalent, inconclusive with
the seeds that would decide it), and the cost."""

EPILOG = """PATH: sweep directories, run directories or globs of them (outputs/multirun/2026-11-23/*). Runs are
grouped by every setting that differs between them except the seed and the tuning keys, and compared per data
set. A row with a matched control (model.reweight=true) is measured against it, the others against the baseline.
The Δ intervals of a table share α = 0.05 (Bonferroni; a sequential grid's looks too): docs/compare.md."""

SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json"}


def parser() -> argparse.ArgumentParser:
    """compare's options (argparse, as every attnbench command); an error is one line, exit status 2."""
    out = CommandParser(prog="attnbench compare", description=DESCRIPTION, epilog=EPILOG,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("paths", nargs="*", metavar="PATH", help="sweep directories, run directories or globs")
    out.add_argument("--baseline", metavar="KEY=VALUE[,KEY=VALUE]",
                     help="the row the others are measured against (default model=none; a bare VALUE means "
                          "model=VALUE; add KEY=VALUE pairs when the baseline has several settings)")
    out.add_argument("--tune", metavar="KEY,...|none",
                     help="the settings tuned within each variant (default: the trainer.* keys that vary, budgets "
                          "such as trainer.epochs excepted); each row keeps the setting with the best mean "
                          "validation metric; none: every setting is a row")
    out.add_argument("--select", metavar="METRIC[:max|min]",
                     help="the validation metric that chooses (default val/<primary>, in the primary's direction)")
    out.add_argument("--delta", metavar="DELTA",
                     help="δ, the smallest effect worth deciding: in the metric's units (0.02) or a share of the "
                          "reference's mean (2%%); default per metric: one point of an accuracy, 0.01 Pearson r, "
                          "2%% of an error or loss (docs/compare.md)")
    out.add_argument("--format", choices=FORMATS, help="table (default, or from --out's suffix: .md, .csv, .json)")
    out.add_argument("--out", metavar="FILE", help="write the comparison to FILE instead of the terminal")
    out.add_argument("--plot", metavar="FILE.png", help="the metric per variant with 95%% CI bars, and against "
                                                        "parameters and throughput")
    return out


def parse_args(args: list[str]) -> dict[str, Any]:
    """PATH... and the options; the format comes from --out's suffix when --format is not given."""
    options = vars(parser().parse_args(args))
    if not options["paths"]:
        raise UserError("compare needs at least one PATH: a sweep directory, a run directory or a glob "
                        "(`attnbench compare --help`)")
    fmt = options["format"]
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(Path(options["out"]).suffix.lower(), "table") if options["out"] else "table"
    options["format"] = fmt
    if options["tune"] is not None:
        options["tune"] = [] if options["tune"] == "none" else [k for k in options["tune"].split(",") if k]
    if options["plot"] and Path(options["plot"]).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {options['plot']}: give a .png (or .pdf, .svg) file name")
    return options


def run_compare(args: list[str]) -> int:
    """``attnbench compare``: the exit status is 0 when a table was produced, 2 when nothing could be compared."""
    import os
    import sys

    from ..track.run import atomic_write

    def warn(message: str) -> None:  # stderr, so the csv and json on stdout stay machine-readable
        print(f"warning: {printable(message)}", file=sys.stderr, flush=True)

    def error(message: str) -> None:  # as cli.fail, without importing track/ (and torch with it)
        print(f"error: {printable(message)}", file=sys.stderr, flush=True)

    if any(a in ("-h", "--help") for a in args):
        print(parser().format_help(), end="")
        return 0
    try:
        options = parse_args(args)
        check_targets(options["out"], options["plot"])
        margins = parse_margins(options["delta"])
        loaded = load_runs(options["paths"])
        for path in loaded.empty if loaded.runs or loaded.skipped else ():  # else the error says it
            warn(f"no runs in {path}")
        for path, why in loaded.skipped:
            warn(f"skipped {path}: {why}")
        report = build_report(loaded, parse_baseline(options["baseline"]), options["tune"],
                              parse_selection(options["select"]), margins=margins or None)
    except UserError as e:
        error(str(e))
        return 2
    out, picture = options["out"], options["plot"]
    for problem in report.problems:
        warn(problem)
    try:
        if out:
            atomic_write(Path(out), lambda f: f.write(render(report, options["format"], color=False).encode()))
            print(f"wrote {printable(out)}", file=sys.stderr)
        elif options["format"] == "table":
            from rich.console import Console

            console = Console(highlight=False)
            # a pipe or a file: no squeezed columns, unless COLUMNS says how wide the reader is
            width = console.width if console.is_terminal or "COLUMNS" in os.environ else None
            sys.stdout.write(render(report, "table", color=console.is_terminal, width=width))
        else:
            sys.stdout.write(render(report, options["format"]))
        if picture:
            plot(report, Path(picture))
            print(f"wrote {printable(picture)}", file=sys.stderr)
    except OSError as e:
        error(f"cannot write {e.filename or out or picture}: {e.strerror or e}")
        return 2
    return 0


# ---------------------------------------------------------------------------------------- after a sweep


def wandb_rows(c: Comparison) -> tuple[list[str], list[list[Any]]]:
    """A data set's comparison as W&B Table columns and rows: raw numbers, so W&B can sort and chart them."""
    names = [n for n in c.metric_names if n != c.primary]
    columns = ["rank", *c.keys, "chosen", "n", f"{c.primary} mean", f"{c.primary} std", "ci95 low", "ci95 high",
               "vs", "Δ", "Δ low", "Δ high", "verdict", "seeds needed", "test", "p", "p (adj)", "P(>)",
               *[f"{n} mean" for n in names], *COST, "runs"]
    rows = [[rank, *[row.values[k] for k in c.keys], row.chosen.label if row.chosen else "", row.n, row.mean,
             row.std, row.ci95[0] if row.ci95 else None, row.ci95[1] if row.ci95 else None, row.reference_label,
             row.delta, *(row.verdict.interval if row.verdict else (None, None)),
             row.verdict.word if row.verdict else None, row.verdict.seeds_needed if row.verdict else None,
             row.test, row.p_value, row.p_adjusted, row.p_improvement,
             *[row.metrics.get(n, (None,))[0] for n in names], *[row.cost.get(k) for k in COST],
             ",".join(r.summary.get("wandb_id") or "-" for r in row.runs)]
            for rank, row in enumerate(c.rows, 1)]
    return columns, rows


def log_to_wandb(report: Report, logger_cfg: Any, sweep_dir: Path, plot_path: Path | None,
                 overrides: list[str] = ()) -> None:
    """A summary run of the sweep (job_type compare), holding one Table per data set, each row with the W&B
    run ids of its jobs, and the plot. Its group is what every job of the sweep shares (the jobs' own groups
    differ by variant, so that W&B aggregates their seeds); its config holds the sweep id the jobs carry."""
    from ..track import create_logger, explicit_keys

    runs = [row_run for c in report.comparisons for row in c.rows for row_run in row.runs]
    shared = set.intersection(*[
        {f"{k}={r.choices[k]}" for k in ("data", "backbone", "model") if k in r.choices}
        | {o for o in r.summary.get("overrides", []) if "=" in o and not o.startswith(("seed=", "resume="))}
        for r in runs])
    name = f"compare {sweep_dir.parent.name}/{sweep_dir.name}"
    where = sweep_dir.resolve()  # the jobs' config names their sweep the same way (job.py)
    logger = create_logger(logger_cfg, run_dir=sweep_dir, name=name, group=",".join(sorted(shared)) or "sweep",
                           tags=["compare", *sorted({f"data={c.data}" for c in report.comparisons})],
                           job_type="compare", explicit=explicit_keys(overrides),
                           config={"sweep": {"id": f"{where.parent.name}/{where.name}", "dir": str(where)},
                                   "baseline": [c.baseline for c in report.comparisons],
                                   "keys": sorted({k for c in report.comparisons for k in c.keys})})
    try:
        if plot_path is not None:  # first: the tables are logged at the next steps, and W&B drops earlier ones
            logger.log_images({"compare/plot": plot_path}, step=0)
        for c in report.comparisons:
            columns, rows = wandb_rows(c)
            logger.log_table(f"compare/{c.data}", columns, rows)
        logger.set_summary({f"best/{c.data}": c.rows[0].label for c in report.comparisons})
    finally:
        logger.finish()


def sweep_report(sweep_dir: Path, logger_cfg: Any = None, overrides: list[str] = ()) -> None:
    """What a multirun prints when it ends: the comparison table, also written as compare.md and compare.png
    in the sweep directory, and logged to W&B when the sweep's logger is W&B."""
    import sys

    from ..track.console import console, fitted, info, shown
    from ..track.run import atomic_write

    def warn(message: str) -> None:  # the console only: Hydra's own logging would print it a second time
        console.print(f"[yellow]warning:[/yellow] {markup(message)}", soft_wrap=True)

    loaded = load_runs([str(sweep_dir)])
    for path, why in loaded.skipped:
        warn(f"skipped {path}: {why}")
    try:
        report = build_report(loaded)
    except UserError as e:
        warn(f"no comparison: {e}")
        return
    for problem in report.problems:
        warn(problem)
    console.file.flush()
    sys.stdout.write(render_table(report, width=console.width if fitted() else None, color=console.is_terminal))
    atomic_write(sweep_dir / "compare.md", lambda f: f.write(render_markdown(report).encode()))
    plot_path = plot(report, sweep_dir / "compare.png")
    info("comparison written to compare.md and compare.png in the sweep directory; "
         f"`attnbench compare {shown(sweep_dir)}` prints it again (--help: formats)")
    if logger_cfg is not None:
        log_to_wandb(report, logger_cfg, sweep_dir, plot_path, overrides)  # a Logger that does nothing when off
