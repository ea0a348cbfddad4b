"""The notes under a comparison's table: what could make a row's figure a matter of luck, of budget or of an
assumption, each said in one sentence. Each function takes a ``Comparison`` (``analysis``) and returns its notes."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from .verdict import sign_flip_floor

# budgets: a longer schedule is another experiment, not a luckier trial, so these are rows, never tuned
BUDGET_KEYS = ("trainer.epochs", "data.train_episodes", "task.episodes_per_step")


def never_completed(row: Any) -> str:
    """A variant whose runs all failed: named, since it has no row of its own."""
    counts = Counter(r.status for r in row.not_completed)
    return (f"{row.label}: no run completed ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}), so it is "
            f"not in the table")


def tuning(comparison: Any) -> list[str]:
    """What could make a chosen setting a matter of luck or of budget, each in a note."""
    out: list[str] = []
    counts = {row.label: len(row.trials) for row in comparison.rows}
    most = max(counts.values())
    fewer = sorted(label for label, n in counts.items() if n < most)
    if fewer:
        out.append(f"unequal tuning budget: {', '.join(f'{x} ({counts[x]})' for x in fewer)} had fewer "
                   f"trials than the {most} of the others; their chosen settings had less to choose from")
    for row in comparison.rows:
        unfinished = [t for t in row.trials if len(t.runs) < len(t.given)]
        for trial in unfinished:
            out.append(f"{row.label}: trial {trial.label} did not finish every seed ({len(trial.runs)} "
                       f"of {len(trial.given)} completed); each missing seed counts against it")
        seed_sets = {frozenset(map(str, t.seeds)) for t in row.trials}
        if len(seed_sets) > 1:
            out.append(f"{row.label}: its trials were given different seeds "
                       f"({'; '.join(f'{t.label}: {sorted(t.seeds, key=str)}' for t in row.trials)}); "
                       f"their scores are not over the same seeds")
        edges = []
        for key in comparison.tuning:
            values = {_as_number(t.setting[key]) for t in row.trials}
            chosen = _as_number(row.chosen.setting[key]) if row.chosen else None
            if None in values or chosen is None or len(values) < 2:
                continue
            if chosen in (min(values), max(values)):
                edges.append(f"{key}={row.chosen.setting[key]} ({'largest' if chosen == max(values) else 'smallest'}"
                             f" tried)")
        if edges:
            out.append(f"{row.label}: chosen at the edge of the swept range, {', '.join(edges)}; the "
                       f"best setting may lie beyond it")
    return out


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def budgets(comparison: Any) -> list[str]:
    """Rows of different budgets side by side: say so (a Δ is only measured between rows of one budget)."""
    out: list[str] = []
    for key in BUDGET_KEYS:
        if key in comparison.keys:
            values = sorted({row.values[key] for row in comparison.rows}, key=lambda v: (_as_number(v) or 0, v))
            if len(values) > 1:
                out.append(f"rows of different budgets side by side ({key}: {', '.join(values)}): "
                           f"rank them with care; each Δ is measured against a reference of the same "
                           f"budget only")
    return out


def variance(comparison: Any) -> list[str]:
    """Where the seeds' spread is not the whole uncertainty: a fixed split, a test set of a few items."""
    out: list[str] = []
    bounded = comparison.primary.split("/")[-1] in ("acc", "error")
    sizes = {r.summary.get("test_items") for row in comparison.rows for r in row.runs}
    items = min((s for s in sizes if isinstance(s, int) and s > 0), default=None)
    fixed = [row for row in comparison.rows if not any(r.leaves.get("split_by_seed") == "true" for r in row.runs)]
    margin = comparison.margin.resolve(comparison.rows[0].mean) if comparison.rows else None
    if bounded and items:
        if margin is not None and 1 / items >= margin / 2:
            out.append(f"{comparison.primary} is quantised: {items} test items, so it moves in steps of "
                       f"{1 / items:.4f}, and a few items decide an effect of δ = {margin:g}")
        noisy = [row.label for row in comparison.rows
                 if row.std is not None and math.sqrt(max(row.mean * (1 - row.mean), 0) / items) > row.std]
        if noisy:
            where = ("every seed is scored on the same test items, so the intervals leave out the test set's own "
                     "sampling error; split_by_seed=true draws a split per seed") if fixed else \
                "each seed draws its own split, so the intervals include it"
            out.append(f"the test set dominates the spread of {', '.join(noisy)}: its binomial error "
                       f"on {items} items is larger than the spread over seeds ({where})")
    if fixed and len(fixed) == len(comparison.rows):
        out.append("every seed used the same data split (split_by_seed=false): the intervals cover "
                   "initialisation and data order, not which items were drawn for training and test")
    return out


def normality(comparison: Any) -> list[str]:
    """Where an exact, distribution-free test could not decide at all: the t-interval alone, on its assumption."""
    out: list[str] = []
    level = comparison.design.level(comparison.n_planned)
    few = sorted({row.verdict.pairs for row in comparison.rows if row.verdict and row.verdict.test == "paired t"
                  and sign_flip_floor(row.verdict.pairs) > 1 - level})
    if few:
        n = few[-1]
        out.append(f"with {n} paired seeds or fewer an exact sign-flip test cannot go below p = 2/2^{n} "
                   f"= {sign_flip_floor(n):.3g}, above α/m = {1 - level:.3g}: these intervals rest on "
                   f"the t-distribution's assumption that the per-seed differences are normal")
    return out


def undertrained(comparison: Any) -> list[str]:
    """Rows most of whose runs peaked at their last epoch (``Row.undertrained``)."""
    rows = [row.label for row in comparison.rows if row.undertrained]
    if not rows:
        return []
    return [f"possibly undertrained: {', '.join(rows)} (most of their runs had their best validation epoch at the "
            f"last; more epochs might still change the order)"]
