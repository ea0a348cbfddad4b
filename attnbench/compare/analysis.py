"""Runs grouped into rows and compared per data set.

A row is one variant: every setting equal but the seed and the tuning keys. When tuning keys vary (``trainer.*``
by default: ``trainer.lr``, ``trainer.weight_decay``…), each of a row's tuning settings is a trial; the row keeps
the trial with the best mean *validation* metric over its seeds and reports that trial's test figures, so the
test metrics never enter the choice, and every variant should get the same number of trials.

A trial's score counts every seed it was given: a trial with a failed, diverged or unfinished seed never
outranks a complete one. Budgets (``trainer.epochs``, episodes) and data keys (the split among them) are never
tuned: runs of different budgets are different rows.

Each row is measured against its reference: its matched control when it has one (``model.reweight=true``
against ``false``: the same variant with its attention off), else the baseline row (``model=none`` by default)
equal in every other setting. The statistics: the mean over seeds with a 95% t-interval clipped to the metric's
range; Δ with its interval and verdict (``verdict``: Bonferroni over the table's tests, paired over the seeds both
rows share, Welch's otherwise); P(improvement), the share of seed pairs in which the row beats its reference.
Runs that did not complete, or whose primary value is not finite, are kept apart, never averaged in.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from . import notes
from .notes import BUDGET_KEYS
from .runs import Loaded, RunRecord
from .verdict import (
    Design,
    Margin,
    Verdict,
    default_margin,
    paired_verdict,
    parse_margins,
    welch_verdict,
)

# settings that never make two runs different variants: the seed is what is averaged over; the others change
# where results go or how often progress is printed, not the results
IGNORED_SETTINGS = ("seed", "resume", "logger", "trainer.device", "trainer.log_every")
# group choices that are not compared as columns: data is the table itself; an experiment or a study arm only
# names settings (whatever it changes shows up as the config values it sets); the logger changes nothing
IGNORED_CHOICES = ("data", "experiment", "arm", "logger")
BASELINE = ("model", "none")
# a variant's switch for its own attention: rows with the first value are measured against the row with the second
CONTROLS = {"model.reweight": ("true", "false")}
# the settings that are tuned rather than compared, unless --tune names others
TUNING_PREFIX = "trainer."
# what the data is (the split among it) is never tuned either: a variant would keep its luckiest test set
DATA_PREFIXES = ("data.", "data", "split_by_seed")
COST = ("params", "attention_params", "head_params", "flops_per_sample", "train_samples_per_s",
        "eval_samples_per_s", "peak_memory_mb", "wall_time_s")
# the range of a metric (by its name after the split), which its confidence interval never leaves
BOUNDS = {
    **dict.fromkeys(("acc", "error", "f1", "macro_f1", "bleu1", "bleu2", "bleu3", "bleu4", "greedy_bleu4", "meteor",
                     "rouge_l", "grounding", "evidence_mass"), (0.0, 1.0)),
    "pearson": (-1.0, 1.0),
    **dict.fromkeys(("cider", "greedy_cider"), (0.0, 10.0)),  # CIDEr-D: ×10 of a cosine in [0, 1]
    **dict.fromkeys(("rmse", "mse", "mae", "loss", "mae_stars"), (0.0, math.inf)),
}
LOWER_IS_BETTER = ("loss", "rmse", "mse", "mae", "error")


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """The settings that tell the runs apart, except the seed: group choices that differ, then config values
    that differ between runs with the same choice of their group, then the device when runs used several.
    ``model`` always comes first: it is the variant."""
    choice_names = sorted({k for r in runs for k in r.choices if k not in IGNORED_CHOICES})
    keys = [k for k in choice_names if len({r.choices.get(k) for r in runs}) > 1]
    for leaf in sorted({k for r in runs for k in r.leaves}):
        if leaf.split(".")[0] in IGNORED_SETTINGS or leaf in IGNORED_SETTINGS:
            continue
        top = leaf.split(".")[0]
        seen: dict[str | None, set[str]] = defaultdict(set)
        for r in runs:
            seen[r.choices.get(top) if top in choice_names else None].add(r.leaves.get(leaf, "-"))
        if any(len(values) > 1 for values in seen.values()):
            keys.append(leaf)
    if len({r.summary.get("device") for r in runs if r.status == "completed"}) > 1:
        keys.append("device")  # throughput and memory from different devices are not one measurement
    return ["model", *[k for k in keys if k != "model"]]


def label(values: dict[str, str]) -> str:
    """A group's name: the variant alone when it is the only key, else every key=value."""
    if list(values) == ["model"]:
        return values["model"]
    return ", ".join(f"{k}={v}" for k, v in values.items())


@dataclass
class Trial:
    """One tuning setting of a row: its runs, and the mean validation metric that chose (or did not choose) it."""

    setting: dict[str, str]
    runs: list[RunRecord]  # the completed runs
    given: list[RunRecord] = field(default_factory=list)  # every run the trial was given, completed or not
    score: float | None = None  # mean of the selection metric over the trial's seeds
    failures: int = 0  # seeds that did not complete or whose selection metric is not finite

    @property
    def seeds(self) -> set[Any]:
        return {r.seed for r in self.given}

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.setting.items())


@dataclass
class Row:
    """One variant (every setting equal but the seed and the tuning keys), with its statistics."""

    values: dict[str, str]
    runs: list[RunRecord]  # the completed runs of the chosen trial
    not_completed: list[RunRecord]
    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None
    scores: list[float] = field(default_factory=list)
    mean: float = math.nan
    std: float | None = None
    ci95: tuple[float, float] | None = None
    reference: Row | None = None
    verdict: Verdict | None = None
    p_adjusted: float | None = None  # the test's p × the table's tests (× looks), so p (adj) < α ⇔ 0 is outside
    p_improvement: float | None = None
    is_baseline: bool = False
    no_control: bool = False  # a reweight=true row whose matched control is missing (measured against the baseline)
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # name -> (mean, std)
    cost: dict[str, float | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def delta(self) -> float | None:
        return self.verdict.delta if self.verdict else None

    @property
    def test(self) -> str | None:
        return self.verdict.test if self.verdict else None

    @property
    def p_value(self) -> float | None:
        return self.verdict.p_value if self.verdict else None

    @property
    def undertrained(self) -> bool:
        """Most of its runs had their best validation epoch at their last: more epochs might still help."""
        last = [r.summary.get("best_epoch") == r.summary.get("epochs") for r in self.runs
                if isinstance(r.summary.get("epochs"), int)]
        return bool(last) and sum(last) > len(last) / 2

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=str)

    @property
    def label(self) -> str:
        return label(self.values)

    @property
    def mark(self) -> str:
        """"degenerate" when any of its runs was, else "reduced" when any was, else "" (see RunRecord)."""
        marks = {r.attention_mark for r in self.runs}
        return next((m for m in ("degenerate", "reduced") if m in marks), "")

    @property
    def attention(self) -> str:
        """What its attention weighed over: the runs' shape summaries (one, unless seeds differ in shape)."""
        return " | ".join(dict.fromkeys(r.attention["summary"] for r in self.runs if r.attention.get("summary")))

    @property
    def reference_label(self) -> str | None:
        """What the reference differs in: ``model.reweight=false``, ``model=none``."""
        if self.reference is None:
            return None
        differ = [f"{k}={v}" for k, v in self.reference.values.items() if v != self.values.get(k) and v != "-"]
        return ", ".join(differ) or self.reference.label


@dataclass
class Comparison:
    """The comparison on one data set."""

    data: str
    task: str
    primary: str
    higher_is_better: bool
    keys: list[str]  # the settings that tell rows apart
    rows: list[Row]
    not_completed: list[RunRecord]
    baseline: str | None  # "model=none" when a baseline row exists
    tuning: list[str] = field(default_factory=list)  # the settings tuned within each row
    selection: str | None = None  # the validation metric that chose each row's trial, "val/acc (max)"
    design: Design = field(default_factory=Design)
    margin: Margin = field(default_factory=Margin)  # δ of the primary metric
    n_planned: int = 0  # the tests of the family: rows with a reference and enough seeds for an interval
    n_runs: int = 0  # every run of the data set, completed or not
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names = {name for row in self.rows for name in row.metrics}
        return sorted(names, key=lambda n: (not n.startswith("test/"), n))


    @property
    def n_tests(self) -> int:
        return sum(row.verdict is not None for row in self.rows)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values (and so its interval) lie in; unbounded when the name is unknown."""
    return BOUNDS.get(metric.split("/")[-1], (-math.inf, math.inf))


def confidence_interval(scores: list[float], metric: str) -> tuple[float, float] | None:
    """The 95% t-interval of the mean over seeds, clipped to the metric's range (None below two seeds)."""
    from scipy.special import stdtrit  # the t quantile; scipy.special loads in a third of scipy.stats' time

    std = _std(scores)
    if std is None:
        return None
    mean = sum(scores) / len(scores)
    half = float(stdtrit(len(scores) - 1, 0.975)) * std / math.sqrt(len(scores))
    lo, hi = bounds(metric)
    return max(lo, mean - half), min(hi, mean + half)


def _statistics(row: Row, primary: str) -> None:
    row.scores = [float(r.summary["primary"]["value"]) for r in row.runs]
    row.mean = sum(row.scores) / row.n
    row.std = _std(row.scores)
    row.ci95 = confidence_interval(row.scores, primary)
    names = {name for r in row.runs for name in r.summary["metrics"]}
    for name in names:
        values = [v for r in row.runs if (v := _number(r.summary["metrics"].get(name))) is not None]
        if values:
            row.metrics[name] = (sum(values) / len(values), _std(values))
    for key in COST:
        row.cost[key] = _mean([v for r in row.runs if (v := _number(r.summary.get(key))) is not None])
        if key in ("params", "attention_params", "head_params") and row.cost[key] is not None:
            row.cost[key] = round(row.cost[key])  # the same for every seed: a count, not a mean


def _better(a: float, b: float, higher: bool) -> float:
    """1 when ``a`` beats ``b``, ½ for a tie, else 0."""
    return 0.5 if a == b else float(a > b if higher else a < b)


def _span(metric: str) -> tuple[float, float]:
    """The range a difference of two values of ``metric`` can take (±1 for an accuracy)."""
    lo, hi = bounds(metric)
    return lo - hi, hi - lo


def measure_against(row: Row, ref: Row, comparison: Comparison) -> None:
    """Δ, its interval and verdict, and P(improvement) of ``row`` against its reference, at the level the
    table's design gives its tests (set once every row's reference is known)."""
    higher, level = comparison.higher_is_better, comparison.design.level(comparison.n_planned)
    margin = comparison.margin.resolve(ref.mean)
    span = _span(comparison.primary)
    row.reference = ref
    mine = {r.seed: float(r.summary["primary"]["value"]) for r in row.runs}
    theirs = {r.seed: float(r.summary["primary"]["value"]) for r in ref.runs}
    shared = [s for s in mine if s in theirs] if len(mine) == row.n and len(theirs) == ref.n else []
    if len(shared) >= 2:  # the same seeds: the same data order (and split), so compare seed by seed
        differences = [mine[s] - theirs[s] for s in shared]
        row.verdict = paired_verdict(differences, level, margin, higher, span)
        row.p_improvement = sum(_better(mine[s], theirs[s], higher) for s in shared) / len(shared)
        return
    row.verdict = welch_verdict(row.scores, ref.scores, level, margin, higher, span)
    row.p_improvement = sum(_better(a, b, higher) for a in row.scores for b in ref.scores) / (row.n * ref.n)


def parse_baseline(text: str | None) -> dict[str, str] | None:
    """``KEY=VALUE[,KEY=VALUE...]``, or a bare VALUE meaning ``model=VALUE``."""
    if text is None:
        return None
    if "=" not in text:
        return {"model": text}
    settings = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"--baseline {text}: expected KEY=VALUE[,KEY=VALUE], e.g. --baseline model=se")
        settings[key] = value
    return settings


def parse_selection(text: str | None) -> tuple[str, bool | None] | None:
    """``METRIC`` or ``METRIC:max`` / ``METRIC:min`` (None: the direction follows the metric's name)."""
    if text is None:
        return None
    name, sep, mode = text.partition(":")
    if not name or (sep and mode not in ("max", "min")):
        raise UserError(f"--select {text}: expected METRIC or METRIC:max|min, e.g. --select val/acc")
    if name.startswith("test/"):
        raise UserError(f"--select {name}: choosing by a test metric would report a test figure that chose "
                        f"itself; select by a val/ metric")
    return name, (mode == "max") if sep else None


def _selection(primary: str, higher: bool, select: tuple[str, bool | None] | None,
               runs: list[RunRecord]) -> tuple[str, bool]:
    """The validation metric that picks each row's trial, and whether higher is better."""
    present = sorted({name for r in runs for name in r.summary["metrics"]})
    if select is None:
        name = "val/" + primary.split("/", 1)[-1]
        if name not in present:
            validation = ", ".join(n for n in present if n.startswith("val/")) or "none"
            raise UserError(f"the runs vary tuning settings but report no {name} to choose by; name a validation "
                            f"metric with --select (they have: {validation})")
        return name, higher
    name, direction = select
    if name not in present:
        near = [n for n in present if n.startswith("val/")] or present
        raise UserError(f"--select {name}: not among the runs' metrics (they have: {', '.join(near) or 'none'})")
    if direction is None:
        direction = higher if name.split("/")[-1] == primary.split("/")[-1] \
            else not any(word in name for word in LOWER_IS_BETTER)
    return name, direction


def tuning_keys(keys: list[str], tune: list[str] | None) -> list[str]:
    """The swept settings tuned within each row: ``trainer.*`` but the budgets by default, or those of
    ``--tune``, which never names a budget or a data key."""
    if tune is None:
        return [k for k in keys if k.startswith(TUNING_PREFIX) and k not in BUDGET_KEYS]
    budgets = [k for k in tune if k in BUDGET_KEYS]
    if budgets:
        raise UserError(f"--tune {','.join(budgets)}: a budget, not a tuning key (a longer run is another "
                        f"experiment, so each budget is a row of its own)")
    data = [k for k in tune if k.startswith(DATA_PREFIXES)]
    if data:
        raise UserError(f"--tune {','.join(data)}: data and split keys are never tuned (each variant would keep "
                        f"its luckiest data, and runs on different test sets would be paired)")
    unknown = [k for k in tune if k not in keys]
    if unknown:
        raise UserError(f"--tune {','.join(unknown)}: not a setting that varies between the runs (those are: "
                        f"{', '.join(k for k in keys if k != 'model') or 'none'})")
    return [k for k in keys if k in tune]


def _choose(row: Row, metric: str, higher: bool) -> None:
    """Score every trial on the validation metric over every seed it was given, and keep the best: fewest
    failed seeds first (a diverged or unfinished seed counts against its trial), then the best mean over the
    seeds that finished. Ties go to the first setting. Test values play no part."""
    for trial in row.trials:
        values = [_number(r.summary["metrics"].get(metric)) for r in trial.runs]
        finite = [v for v in values if v is not None]
        trial.failures = len(trial.given) - len(finite)
        trial.score = sum(finite) / len(finite) if finite else None
    scored = [t for t in row.trials if t.score is not None]
    if scored:
        row.chosen = min(scored, key=lambda t: (t.failures, -t.score if higher else t.score))
    else:  # no trial reports the metric: the first completed one, and the table notes it
        row.chosen = next((t for t in row.trials if t.runs), None)


def _finite_primary(run: RunRecord) -> bool:
    return _number(run.summary["primary"].get("value")) is not None


def compare_data_set(runs: list[RunRecord], baseline: dict[str, str] | None = None, tune: list[str] | None = None,
                     select: tuple[str, bool | None] | None = None, design: Design | None = None,
                     margins: dict[str, Margin] | None = None) -> Comparison:
    """Group the runs of one data set into rows and trials, choose each row's trial, compute the statistics."""
    completed = [r for r in runs if r.status == "completed"]
    primary = next((r for r in completed if _finite_primary(r)), completed[0]).summary["primary"]
    names = {r.summary["primary"]["name"] for r in completed}
    data = completed[0].data
    if len(names) > 1:
        raise UserError(f"runs of data={data} have different primary metrics ({', '.join(sorted(names))})"
                        f"; compare them separately")
    higher = primary.get("higher_is_better", True)
    swept = swept_keys(runs)
    tuning = tuning_keys(swept, tune)
    keys = [k for k in swept if k not in tuning]
    rows = group(runs, keys, tuning)
    margins = margins or {}
    comparison = Comparison(data=data, task=str(completed[0].summary.get("task", "-")), primary=primary["name"],
                            higher_is_better=higher, keys=keys, rows=[], not_completed=[], baseline=None,
                            tuning=tuning, design=design or Design(), n_runs=len(runs),
                            margin=margins.get(primary["name"], margins.get("*", default_margin(primary["name"]))))
    if tuning:
        metric, direction = _selection(primary["name"], higher, select, completed)
        comparison.selection = f"{metric} ({'max' if direction else 'min'})"
    elif select is not None:
        raise UserError(f"--select {select[0]}: nothing is tuned here (no trainer.* setting varies within a "
                        f"variant), so there is no trial to choose")
    for row in rows:
        if tuning:
            _choose(row, metric, direction)
        else:
            row.chosen = row.trials[0]
        _settle(row)
        comparison.not_completed += row.not_completed
        if row.runs:
            comparison.rows.append(row)
        else:
            comparison.notes.append(notes.never_completed(row))
    for row in comparison.rows:
        _statistics(row, primary["name"])
        if row.mark:
            why = next(r.attention.get(row.mark) for r in row.runs if r.attention_mark == row.mark)
            comparison.notes.append(f"{row.label} is marked {row.mark}: {why}")
        duplicates = [s for s, n in Counter(r.seed for r in row.runs).items() if n > 1]
        if duplicates:
            comparison.notes.append(f"{row.label}: seed {', '.join(map(str, duplicates))} appears in several runs "
                                    f"(the same run copied twice?); each is counted")
    comparison.rows.sort(key=lambda row: (-row.mean if higher else row.mean, row.label))
    _apply_references(comparison, baseline)
    _correct(comparison)
    for check in (notes.tuning if tuning else None, notes.budgets, notes.variance, notes.normality,
                  notes.undertrained):
        if check is not None:
            comparison.notes += check(comparison)
    return comparison


def group(runs: list[RunRecord], keys: list[str], tuning: list[str]) -> list[Row]:
    """Runs into rows (equal in every key) and each row's runs into trials (equal in every tuning key)."""
    rows: dict[tuple[str, ...], Row] = {}
    for run in runs:
        values = {k: run.setting(k) for k in keys}
        row = rows.setdefault(tuple(values.values()), Row(values, [], []))
        setting = {k: run.setting(k) for k in tuning}
        trial = next((t for t in row.trials if t.setting == setting), None)
        if trial is None:
            trial = Trial(setting, [])
            row.trials.append(trial)
        trial.given.append(run)
        if run.status == "completed":
            trial.runs.append(run)
    for row in rows.values():
        row.trials.sort(key=lambda t: t.label)
    return list(rows.values())


def _settle(row: Row) -> None:
    """The chosen trial's completed runs become the row's. Those whose test value is not finite are set apart
    only now, after the choice, so that a test value can never change which trial is chosen."""
    for run in row.chosen.given if row.chosen else []:
        if run.status == "completed" and not _finite_primary(run):
            run.status = "not finite"
    row.runs = [r for r in row.chosen.given if r.status == "completed"] if row.chosen else []
    row.not_completed = [r for t in row.trials for r in t.given if r.status != "completed"]


def _matches(row: Row, settings: dict[str, str]) -> bool:
    return all(row.values.get(k) == v for k, v in settings.items())


def _apply_references(comparison: Comparison, baseline: dict[str, str] | None) -> None:
    """Each row against its matched control, else against the baseline row equal in every other setting."""
    settings = baseline or dict([BASELINE])
    missing = [k for k in settings if k not in comparison.keys]
    if missing and baseline is not None:
        others = ", ".join(comparison.keys)
        raise UserError(f"baseline {','.join(missing)}: not a setting that differs between the runs of "
                        f"data={comparison.data} (those are: {others})")
    candidates = [row for row in comparison.rows if not missing and _matches(row, settings)]
    wanted = ",".join(f"{k}={v}" for k, v in settings.items())
    if baseline is not None and not candidates:
        key = next(iter(settings))
        present = sorted({row.values[key] for row in comparison.rows})
        raise UserError(f"baseline {wanted} is not among the completed runs of data={comparison.data} "
                        f"({key} there: {', '.join(present)})")
    # the baseline's own settings (model.* under model=none) are not the other rows': leave them out of the match
    shared = [k for k in comparison.keys if k not in settings and not any(k.startswith(f"{b}.") for b in settings)]
    references: dict[tuple[str, ...], Row] = {}
    for row in candidates:
        match = tuple(row.values[k] for k in shared)
        if match in references:
            apart = [k for k in comparison.keys if k not in shared and references[match].values[k] != row.values[k]]
            options = " and ".join(",".join(f"{k}={r.values[k]}" for k in apart) for r in (references[match], row))
            raise UserError(f"baseline {wanted} matches several rows of data={comparison.data} ({options}); name "
                            f"one with --baseline {wanted},{apart[0]}=VALUE")
        references[match] = row
    if candidates:
        comparison.baseline = wanted
    elif comparison.rows:
        comparison.notes.append(f"no completed {wanted} runs: rows without a matched control have no Δ "
                                f"(pick a baseline with --baseline KEY=VALUE)")
    by_values = {tuple(row.values.items()): row for row in comparison.rows}
    pairs = []
    for row in comparison.rows:
        control = None
        for key, (on, off) in CONTROLS.items():
            # the switch may be on in every run (then it is no column): read it from the runs themselves
            if row.values.get(key, row.runs[0].leaves.get(key)) == on:
                control = by_values.get(tuple({**row.values, key: off}.items()))
                row.no_control = control is None
        ref = control or references.get(tuple(row.values[k] for k in shared))
        if ref is row:
            row.is_baseline = True
        elif ref is not None:
            pairs.append((row, ref))
    comparison.n_planned = sum(1 for row, ref in pairs if _testable(row, ref))
    for row, ref in pairs:
        measure_against(row, ref, comparison)
        if row.no_control:
            switch = ", ".join(f"{k}={off}" for k, (_, off) in CONTROLS.items())
            comparison.notes.append(f"{row.label} has no matched control ({switch} is not among the runs): "
                                    f"measured against {row.reference_label}, so its Δ "
                                    f"includes what the variant adds besides its attention")


def _testable(row: Row, ref: Row) -> bool:
    """Whether ``row`` against ``ref`` gives an interval: two shared seeds, or two runs a side."""
    shared = {r.seed for r in row.runs} & {r.seed for r in ref.runs}
    return len(shared) >= 2 or (row.n >= 2 and ref.n >= 2)


def _correct(comparison: Comparison) -> None:
    """Each p-value × the tests of the family (Bonferroni), the correction the intervals were built with: a row's
    p (adj) is below α exactly when its interval excludes 0."""
    family = max(comparison.n_planned, 1) * comparison.design.looks
    for row in comparison.rows:
        if row.p_value is not None:
            row.p_adjusted = min(1.0, row.p_value * family)


@dataclass
class Report:
    comparisons: list[Comparison]
    loaded: Loaded
    notes: list[str] = field(default_factory=list)  # for the whole report
    problems: list[str] = field(default_factory=list)  # data sets that could not be compared (baseline absent)


def build_report(loaded: Loaded, baseline: dict[str, str] | None = None, tune: list[str] | None = None,
                 select: tuple[str, bool | None] | None = None, design: Design | None = None,
                 margins: dict[str, Margin] | None = None) -> Report:
    """Every data set's comparison; raises UserError when nothing at all can be compared. ``design``: the
    sequential grid's (read from its sweep directory) unless given."""
    if not loaded.runs:
        if loaded.skipped:
            raise UserError(f"no usable runs: every run directory found was skipped ({len(loaded.skipped)}; "
                            f"see the warnings)")
        raise UserError(f"no runs in {', '.join(loaded.empty)} (a run directory holds .hydra/config.yaml and "
                        f"summary.json; pass a sweep directory, a run directory or a glob of them)")
    design = design or loaded.design or Design()
    margins = margins or parse_margins(loaded.delta)
    baseline = baseline or parse_baseline(loaded.baseline)
    by_data: dict[str, list[RunRecord]] = defaultdict(list)
    for run in loaded.runs:
        by_data[run.data].append(run)
    report = Report([], loaded)
    if len(by_data) > 1:
        report.notes.append(f"runs of {len(by_data)} data sets ({', '.join(sorted(by_data))}): each is compared on "
                            f"its own")
    not_compared: list[RunRecord] = []
    for data in sorted(by_data):
        runs = by_data[data]
        if not any(r.status == "completed" and _finite_primary(r) for r in runs):
            report.problems.append(f"data={data}: no completed run to compare")
            not_compared += runs
            continue
        try:
            report.comparisons.append(compare_data_set(runs, baseline, tune, select, design, margins))
        except UserError as e:
            if select is not None or tune is not None or baseline is not None:
                raise  # the user's own option is wrong: one line, not a warning
            report.problems.append(str(e))
    if not report.comparisons:
        raise UserError("; ".join(report.problems) or "nothing to compare")
    if not_compared:  # data sets where every run failed: listed with the first table's incomplete runs
        report.comparisons[0].not_completed += not_compared
        report.comparisons[0].n_runs += len(not_compared)
    return report
