"""Runs grouped into rows and compared per data set.

A row is one variant: every setting equal but the seed and the tuning keys. When tuning keys vary (``trainer.*``
by default: ``trainer.lr``, ``trainer.weight_decay``…), each of a row's tuning settings is a trial; the row keeps
the trial with the best mean *validation* metric over its seeds and reports that trial's test figures, so the
test metrics never enter the choice, and every variant should get the same number of trials.

Each row is measured against its reference: its matched control when it has one (``model.reweight=true``
against ``false``: the same variant with its attention off), else the baseline row (``model=none`` by default)
equal in every other setting. The statistics: the mean over seeds with a 95% t-interval clipped to the metric's
range; Δ and a paired t-test over the seeds both rows share (Welch's t-test when they share fewer than two);
the p-values of a table corrected together (Benjamini–Hochberg); P(improvement), the share of seed pairs in which
the row beats its reference. Runs that did not complete, or whose primary value is not finite, are kept apart,
never averaged in.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from .runs import Loaded, RunRecord

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
COST = ("params", "attention_params", "head_params", "flops_per_sample", "train_samples_per_s",
        "eval_samples_per_s", "peak_memory_mb", "wall_time_s")
# the range of a metric (by its name after the split), which its confidence interval never leaves
BOUNDS = {
    **dict.fromkeys(("acc", "f1", "macro_f1", "bleu1", "bleu2", "bleu3", "bleu4", "greedy_bleu4", "meteor",
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
    runs: list[RunRecord]
    score: float | None = None  # mean of the selection metric over the trial's seeds

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
    delta: float | None = None
    test: str | None = None  # "paired t" | "Welch t"
    p_value: float | None = None
    p_adjusted: float | None = None
    p_improvement: float | None = None
    is_baseline: bool = False
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # name -> (mean, std)
    cost: dict[str, float | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

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
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names = {name for row in self.rows for name in row.metrics}
        return sorted(names, key=lambda n: (not n.startswith("test/"), n))

    @property
    def n_runs(self) -> int:
        return sum(len(t.runs) for row in self.rows for t in row.trials) + len(self.not_completed)

    @property
    def n_tests(self) -> int:
        return sum(row.p_value is not None for row in self.rows)


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


def welch(a: list[float], b: list[float]) -> float | None:
    """Welch's t-test p-value (two-sided); None when either side has fewer than two seeds or neither varies."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    if _std(a) == 0 and _std(b) == 0:  # neither varies: certain when the means differ, no evidence when they do not
        return None if _mean(a) == _mean(b) else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def paired(differences: list[float]) -> float | None:
    """The paired t-test's p-value (two-sided) on the per-seed differences; None below two pairs."""
    if len(differences) < 2:
        return None
    from scipy.stats import ttest_1samp  # ttest_rel(a, b) is this test on a − b

    if _std(differences) == 0:  # every seed moved by the same amount
        return None if differences[0] == 0 else 0.0
    return float(ttest_1samp(differences, 0.0).pvalue)


def _better(a: float, b: float, higher: bool) -> float:
    """1 when ``a`` beats ``b``, ½ for a tie, else 0."""
    return 0.5 if a == b else float(a > b if higher else a < b)


def measure_against(row: Row, ref: Row, higher: bool) -> None:
    """Δ, the test, its p-value and P(improvement) of ``row`` against its reference."""
    row.reference = ref
    mine = {r.seed: float(r.summary["primary"]["value"]) for r in row.runs}
    theirs = {r.seed: float(r.summary["primary"]["value"]) for r in ref.runs}
    shared = [s for s in mine if s in theirs] if len(mine) == row.n and len(theirs) == ref.n else []
    if len(shared) >= 2:  # the same seeds: the same split and data order, so compare seed by seed
        differences = [mine[s] - theirs[s] for s in shared]
        row.delta, row.test = sum(differences) / len(differences), "paired t"
        row.p_value = paired(differences)
        row.p_improvement = sum(_better(mine[s], theirs[s], higher) for s in shared) / len(shared)
        return
    row.delta, row.test = row.mean - ref.mean, "Welch t"
    row.p_value = welch(row.scores, ref.scores)
    row.p_improvement = sum(_better(a, b, higher) for a in row.scores for b in ref.scores) / (row.n * ref.n)


def parse_baseline(text: str | None) -> tuple[str, str] | None:
    """``KEY=VALUE``, or a bare VALUE meaning ``model=VALUE``."""
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if not sep:
        return "model", text
    if not key or not value:
        raise UserError(f"--baseline {text}: expected KEY=VALUE, e.g. --baseline model=se")
    return key, value


def parse_selection(text: str | None) -> tuple[str, bool | None] | None:
    """``METRIC`` or ``METRIC:max`` / ``METRIC:min`` (None: the direction follows the metric's name)."""
    if text is None:
        return None
    name, sep, mode = text.partition(":")
    if not name or (sep and mode not in ("max", "min")):
        raise UserError(f"--select {text}: expected METRIC or METRIC:max|min, e.g. --select val/acc")
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
    if name.startswith("test/"):
        raise UserError(f"--select {name}: choosing by a test metric would report a test figure that chose "
                        f"itself; select by a val/ metric")
    if direction is None:
        direction = higher if name.split("/")[-1] == primary.split("/")[-1] \
            else not any(word in name for word in LOWER_IS_BETTER)
    return name, direction


def tuning_keys(keys: list[str], tune: list[str] | None) -> list[str]:
    """The swept settings tuned within each row: ``trainer.*`` by default, or those of ``--tune``."""
    if tune is None:
        return [k for k in keys if k.startswith(TUNING_PREFIX)]
    unknown = [k for k in tune if k not in keys]
    if unknown:
        raise UserError(f"--tune {','.join(unknown)}: not a setting that varies between the runs (those are: "
                        f"{', '.join(k for k in keys if k != 'model') or 'none'})")
    return [k for k in keys if k in tune]


def _choose(row: Row, metric: str, higher: bool) -> None:
    """Every trial's mean validation score; the best becomes the row's runs. Ties go to the first setting."""
    for trial in row.trials:
        values = [v for r in trial.runs if (v := _number(r.summary["metrics"].get(metric))) is not None]
        trial.score = sum(values) / len(values) if values else None
    scored = [t for t in row.trials if t.score is not None and t.runs]
    if scored:
        row.chosen = max(scored, key=lambda t: t.score if higher else -t.score)
    else:  # no trial reports the metric: the first completed one, and the table notes it
        row.chosen = next((t for t in row.trials if t.runs), None)
    row.runs = row.chosen.runs if row.chosen else []


def _finite_primary(run: RunRecord) -> bool:
    return _number(run.summary["primary"].get("value")) is not None


def compare_data_set(runs: list[RunRecord], baseline: tuple[str, str] | None = None, tune: list[str] | None = None,
                     select: tuple[str, bool | None] | None = None) -> Comparison:
    """Group the runs of one data set into rows and trials, choose each row's trial, compute the statistics."""
    for run in runs:
        if run.status == "completed" and not _finite_primary(run):
            run.status = "not finite"  # a NaN or infinite primary value is never averaged or ranked
    completed = [r for r in runs if r.status == "completed"]
    primary = completed[0].summary["primary"]
    names = {r.summary["primary"]["name"] for r in completed}
    data = completed[0].data
    if len(names) > 1:
        raise UserError(f"runs of data={data} have different primary metrics ({', '.join(sorted(names))})"
                        f"; compare them separately")
    higher = bool(primary.get("higher_is_better", True))
    swept = swept_keys(runs)
    tuning = tuning_keys(swept, tune)
    keys = [k for k in swept if k not in tuning]
    rows: dict[tuple[str, ...], Row] = {}
    for run in runs:
        row = rows.setdefault(tuple(run.setting(k) for k in keys), Row(dict(zip(keys, (run.setting(k) for k in keys))),
                                                                        [], []))
        setting = {k: run.setting(k) for k in tuning}
        trial = next((t for t in row.trials if t.setting == setting), None)
        if trial is None:
            trial = Trial(setting, [])
            row.trials.append(trial)
        (trial.runs if run.status == "completed" else row.not_completed).append(run)
    comparison = Comparison(data=data, task=str(completed[0].summary.get("task", "-")), primary=primary["name"],
                            higher_is_better=higher, keys=keys, rows=[], not_completed=[], baseline=None,
                            tuning=tuning)
    if tuning:
        metric, direction = _selection(primary["name"], higher, select, completed)
        comparison.selection = f"{metric} ({'max' if direction else 'min'})"
    for row in rows.values():
        row.trials.sort(key=lambda t: t.label)
        if tuning:
            _choose(row, metric, direction)
        else:
            row.chosen = row.trials[0]
            row.runs = row.chosen.runs
        comparison.not_completed += row.not_completed
        if row.runs:
            comparison.rows.append(row)
    for row in comparison.rows:
        _statistics(row, primary["name"])
        if row.mark:
            why = next(r.attention.get(row.mark) for r in row.runs if r.attention_mark == row.mark)
            comparison.notes.append(f"{row.label} is marked {row.mark}: {why}")
        duplicates = [s for s, n in Counter(r.seed for r in row.runs).items() if n > 1]
        if duplicates:
            comparison.notes.append(f"{row.label}: seed {', '.join(map(str, duplicates))} appears in several runs "
                                    f"(the same run copied twice?); each is counted")
    if tuning:
        _check_budget(comparison)
    comparison.rows.sort(key=lambda row: (-row.mean if higher else row.mean, row.label))
    _apply_references(comparison, baseline)
    _correct(comparison)
    return comparison


def _check_budget(comparison: Comparison) -> None:
    """Every variant should have had as many trials: a note names those with fewer."""
    counts = {row.label: len(row.trials) for row in comparison.rows}
    most = max(counts.values())
    fewer = sorted(label for label, n in counts.items() if n < most)
    if fewer:
        comparison.notes.append(f"unequal tuning budget: {', '.join(f'{x} ({counts[x]})' for x in fewer)} had fewer "
                                f"trials than the {most} of the others; their chosen settings had less to choose from")


def _apply_references(comparison: Comparison, baseline: tuple[str, str] | None) -> None:
    """Each row against its matched control, else against the baseline row equal in every other setting."""
    key, value = baseline or BASELINE
    if key not in comparison.keys:
        if baseline is not None:
            others = ", ".join(comparison.keys)
            raise UserError(f"baseline {key}={value}: {key} is not a setting that differs between the runs of "
                            f"data={comparison.data} (those are: {others})")
    present = sorted({row.values[key] for row in comparison.rows}) if key in comparison.keys else []
    if baseline is not None and value not in present:
        raise UserError(f"baseline {key}={value} is not among the completed runs of data={comparison.data} "
                        f"({key} there: {', '.join(present)})")
    by_values = {tuple(row.values.items()): row for row in comparison.rows}
    # the baseline's own settings (model.* under model=none) are not the other rows': leave them out of the match
    shared = [k for k in comparison.keys if k != key and not k.startswith(f"{key}.")]
    references = {tuple(row.values[k] for k in shared): row for row in comparison.rows
                  if key in row.values and row.values[key] == value}
    if value in present:
        comparison.baseline = f"{key}={value}"
    elif baseline is None and comparison.rows:
        comparison.notes.append(f"no completed {key}={value} runs: rows without a matched control have no Δ "
                                f"(pick a baseline with --baseline KEY=VALUE)")
    for row in comparison.rows:
        control = next((by_values.get(tuple({**row.values, k: off}.items())) for k, (on, off) in CONTROLS.items()
                        if row.values.get(k) == on), None)
        ref = control or references.get(tuple(row.values[k] for k in shared))
        if ref is row:
            row.is_baseline = True
        elif ref is not None:
            measure_against(row, ref, comparison.higher_is_better)


def _correct(comparison: Comparison) -> None:
    """Benjamini–Hochberg across every test of the table (each row against its reference is one test)."""
    tested = [row for row in comparison.rows if row.p_value is not None]
    if not tested:
        return
    from scipy.stats import false_discovery_control

    for row, adjusted in zip(tested, false_discovery_control([row.p_value for row in tested], method="bh")):
        row.p_adjusted = float(adjusted)


@dataclass
class Report:
    comparisons: list[Comparison]
    loaded: Loaded
    notes: list[str] = field(default_factory=list)  # for the whole report
    problems: list[str] = field(default_factory=list)  # data sets that could not be compared (baseline absent)


def build_report(loaded: Loaded, baseline: tuple[str, str] | None = None, tune: list[str] | None = None,
                 select: tuple[str, bool | None] | None = None) -> Report:
    """Every data set's comparison; raises UserError when nothing at all can be compared."""
    if not loaded.runs:
        if loaded.skipped:
            raise UserError(f"no usable runs: every run directory found was skipped ({len(loaded.skipped)}; "
                            f"see the warnings)")
        raise UserError(f"no runs in {', '.join(loaded.empty)} (a run directory holds .hydra/config.yaml and "
                        f"summary.json; pass a sweep directory, a run directory or a glob of them)")
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
            report.comparisons.append(compare_data_set(runs, baseline, tune, select))
        except UserError as e:
            if select is not None or tune is not None or baseline is not None:
                raise  # the user's own option is wrong: one line, not a warning
            report.problems.append(str(e))
    if not report.comparisons:
        raise UserError("; ".join(report.problems) or "nothing to compare")
    if not_compared:  # data sets where every run failed: listed with the first table's incomplete runs
        report.comparisons[0].not_completed += not_compared
    return report
