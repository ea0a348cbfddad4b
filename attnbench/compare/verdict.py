"""The verdict on one Δ: its interval, and the one word that follows from it.

Each row of a table that is measured against a reference is one test of the table's *family*; the family's
error rate α (0.05) is shared out by Bonferroni: each interval is a (1 − α/m) interval for m tests, so all m
intervals hold together with probability at least 1 − α. A grid that looks at its results several times
(``hydra/sweeper=decide``) shares α out over its planned looks too (α/(m·K) for K looks), which keeps every
word valid however the grid stopped. Then, from the printed interval alone:

- ``better`` / ``worse``: the interval excludes 0;
- ``equivalent``: the interval lies inside ±δ, the smallest effect worth deciding (``MARGINS``, or ``--delta``);
- ``inconclusive``: neither; with the seeds that would decide it at the observed Δ and spread (80% power).

Intervals are Student t: paired over the seeds both rows share (the per-seed differences), Welch's otherwise.
Where the differences do not vary at all the t-interval has no width to give; the exact sign-flip test then
decides alone: its interval is the single difference once 2/2ⁿ ≤ α/m, and unbounded before (two seeds with
the same difference give p = 0.5, not 0).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

from ..errors import UserError

ALPHA = 0.05  # the family's error rate: every interval of a table (and of every look of a sequential grid)
POWER = 0.8  # seeds needed: the count at which the interval would decide with this probability
MOST_SEEDS = 10_000  # beyond this, "seeds needed" says "more than"

Word = Literal["better", "worse", "equivalent", "inconclusive"]

# δ, the smallest effect worth deciding, per metric (the name after the split). Bounded scores take an absolute
# margin in their own units; errors and losses a share of the reference's mean (RELATIVE).
MARGINS: dict[str, float] = {
    **dict.fromkeys(("acc", "f1", "macro_f1", "error", "bleu1", "bleu2", "bleu3", "bleu4", "greedy_bleu4",
                     "meteor", "rouge_l", "grounding", "evidence_mass"), 0.01),  # one point
    "pearson": 0.01,
    **dict.fromkeys(("cider", "greedy_cider"), 0.05),  # CIDEr-D runs 0…10: half a point of its ×10 scale
}
RELATIVE: dict[str, float] = dict.fromkeys(("rmse", "mse", "mae", "mae_stars", "loss"), 0.02)  # 2% of the reference


@dataclass(frozen=True)
class Margin:
    """δ for one metric: ``value`` in the metric's units, or a ``share`` of the reference's mean."""

    value: float | None = None
    share: float | None = None

    def resolve(self, reference_mean: float) -> float | None:
        if self.value is not None:
            return self.value
        if self.share is not None and math.isfinite(reference_mean):
            return self.share * abs(reference_mean)
        return None

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.value:g}"
        return f"{self.share * 100:g}% of the reference's mean" if self.share is not None else "none"


def default_margin(metric: str) -> Margin:
    name = metric.split("/")[-1]
    if name in MARGINS:
        return Margin(value=MARGINS[name])
    return Margin(share=RELATIVE.get(name))


def parse_margin(text: str) -> Margin:
    """``0.02`` (the metric's units) or ``2%`` (of the reference's mean); refused when negative or not a number."""
    share = text.endswith("%")
    try:
        value = float(text[:-1] if share else text)
    except ValueError:
        raise UserError(f"--delta {text}: not a number (give e.g. 0.01, or 2% of the reference's mean)") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--delta {text}: δ must be a positive, finite number")
    return Margin(share=value / 100) if share else Margin(value=value)


def parse_margins(text: str | None) -> dict[str, Margin]:
    """``--delta``: one margin for every table's primary metric (key ``*``), or ``METRIC=VALUE,...`` per metric."""
    if text is None:
        return {}
    if "=" not in text:
        return {"*": parse_margin(text)}
    margins = {}
    for item in text.split(","):
        metric, sep, value = item.partition("=")
        if not sep or not metric:
            raise UserError(f"--delta {text}: expected VALUE or METRIC=VALUE,... (e.g. test/acc=0.02)")
        margins[metric] = parse_margin(value)
    return margins


@dataclass
class Verdict:
    """What one row against its reference concludes, and how."""

    word: Word
    delta: float  # the mean per-seed difference (paired) or the difference of means (Welch)
    interval: tuple[float, float]
    level: float  # the interval's confidence, 1 − α/(m·K)
    test: str  # "paired t" | "Welch t" | "sign-flip" (differences without spread)
    p_value: float | None
    margin: float | None  # δ in the metric's units
    spread: float  # the standard deviation of one per-seed difference (Welch: sqrt(s_a² + s_b²))
    pairs: int = 0  # shared seeds (paired) or the smaller side's seeds (Welch)

    @property
    def decided(self) -> bool:
        return self.word != "inconclusive"

    @functools.cached_property
    def seeds_needed(self) -> int | None:
        """An inconclusive row: the seeds per row at which its interval would decide with 80% power, if the
        observed Δ and spread held (None: more than MOST_SEEDS). Without spread, where the sign-flip test can."""
        if self.decided:
            return None
        if self.spread == 0:
            return next(k for k in range(self.pairs + 1, 64) if sign_flip_floor(k) <= 1 - self.level)
        return _seeds_for_power(self.delta, self.spread, self.margin, self.level)


def _t_quantile(df: float, level: float) -> float:
    from scipy.special import stdtrit  # scipy.special loads in a third of scipy.stats' time

    return float(stdtrit(df, 1 - (1 - level) / 2))


def word_for(interval: tuple[float, float], margin: float | None, higher_is_better: bool) -> Word:
    """The word the interval says: the only place a verdict is made."""
    lo, hi = interval
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == higher_is_better else "worse"
    if margin is not None and -margin <= lo and hi <= margin:
        return "equivalent"
    return "inconclusive"


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test can give with n pairs: every sign the same."""
    return min(1.0, 2.0 / 2**n)


def _seeds_for_power(effect: float, spread: float, margin: float | None, level: float) -> int | None:
    """The fewest seeds at which a paired t-interval at ``level`` would, with probability POWER, exclude 0
    (true difference ``effect``) or lie inside ±margin (when |effect| < margin); None beyond MOST_SEEDS."""
    import numpy as np
    from scipy.special import stdtrit
    from scipy.stats import nct

    n = np.arange(2, MOST_SEEDS + 1)
    df = n - 1
    critical = stdtrit(df, 1 - (1 - level) / 2)
    root = np.sqrt(n)
    reach = np.zeros(len(n), dtype=bool)
    if spread > 0 and effect != 0:  # the interval excludes 0: |T| > t_crit, T noncentral t
        shift = abs(effect) * root / spread
        reach |= nct.sf(critical, df, shift) + nct.cdf(-critical, df, shift) >= POWER
    if spread > 0 and margin is not None and abs(effect) < margin:  # inside ±δ: the nearer bound binds
        shift = (margin - abs(effect)) * root / spread
        reach |= nct.sf(critical, df, shift) >= POWER
    found = np.flatnonzero(reach)
    return int(n[found[0]]) if len(found) else None


def paired_verdict(differences: list[float], level: float, margin: float | None, higher_is_better: bool,
                   span: tuple[float, float] = (-math.inf, math.inf)) -> Verdict:
    """The verdict on per-seed differences (row − reference, at least two), at ``level``; ``span`` is the
    range a difference can take (±1 for an accuracy), which the interval never leaves."""
    n = len(differences)
    mean = sum(differences) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    if spread == 0:  # every seed moved by the same amount: the exact sign-flip test alone can speak
        p = 1.0 if mean == 0 else sign_flip_floor(n)
        certain = sign_flip_floor(n) <= 1 - level
        interval = (mean, mean) if certain else span
        return Verdict(word_for(interval, margin, higher_is_better), mean, interval, level, "sign-flip", p, margin,
                       0.0, n)
    from scipy.special import stdtr

    half = _t_quantile(n - 1, level) * spread / math.sqrt(n)
    interval = (max(span[0], mean - half), min(span[1], mean + half))
    t = mean / (spread / math.sqrt(n))
    p = float(2 * stdtr(n - 1, -abs(t)))
    return Verdict(word_for(interval, margin, higher_is_better), mean, interval, level, "paired t", p, margin,
                   spread, n)


def welch_verdict(mine: list[float], theirs: list[float], level: float, margin: float | None,
                  higher_is_better: bool, span: tuple[float, float] = (-math.inf, math.inf)) -> Verdict | None:
    """The verdict on two independent samples (Welch's t); None below two runs a side or without spread."""
    if len(mine) < 2 or len(theirs) < 2:
        return None
    from scipy.special import stdtr

    def var(xs: list[float]) -> float:
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    va, vb = var(mine) / len(mine), var(theirs) / len(theirs)
    delta = sum(mine) / len(mine) - sum(theirs) / len(theirs)
    if va + vb == 0:
        return None
    df = (va + vb) ** 2 / (va**2 / (len(mine) - 1) + vb**2 / (len(theirs) - 1)) if va and vb else \
        (len(mine) - 1 if va else len(theirs) - 1)
    se = math.sqrt(va + vb)
    half = _t_quantile(df, level) * se
    interval = (max(span[0], delta - half), min(span[1], delta + half))
    p = float(2 * stdtr(df, -abs(delta) / se))
    # seeds per side: the difference of two means of n seeds each has the variance of one of n paired
    # differences whose spread is sqrt(s_a² + s_b²)
    return Verdict(word_for(interval, margin, higher_is_better), delta, interval, level, "Welch t", p, margin,
                   math.sqrt(var(mine) + var(theirs)), min(len(mine), len(theirs)))


@dataclass(frozen=True)
class Design:
    """How a table's intervals share the error rate: α over every test of the table and every planned look."""

    alpha: float = ALPHA
    looks: int = 1  # planned looks of a sequential grid (hydra/sweeper=decide); 1 for a fixed grid

    def level(self, tests: int) -> float:
        return 1 - self.alpha / (max(tests, 1) * self.looks)

    def describe(self, tests: int) -> str:
        looks = f" × {self.looks} planned looks" if self.looks > 1 else ""
        return (f"{self.level(tests) * 100:.4g}% intervals (Bonferroni: α = {self.alpha:g} over {tests} "
                f"test{'s' if tests != 1 else ''}{looks})")
