"""Runs grouped into rows (every setting equal but the seed) and compared per data set: mean over seeds with its
95% confidence interval (t-distribution), the difference to a baseline row with Welch's t-test, the other final
metrics and the cost. Runs that did not complete are kept apart, never averaged in."""

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
# group choices that are not compared as columns: data is the table itself; an experiment only names a study
# (whatever it changes shows up as the config values it sets); the logger changes nothing in a result
IGNORED_CHOICES = ("data", "experiment", "logger")
BASELINE = ("model", "none")
COST = ("params", "attention_params", "head_params", "flops_per_sample", "train_samples_per_s", "eval_samples_per_s",
        "peak_memory_mb", "wall_time_s")


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
class Row:
    """One group of runs (every setting equal but the seed), with its statistics."""

    values: dict[str, str]
    runs: list[RunRecord]
    not_completed: list[RunRecord]
    scores: list[float] = field(default_factory=list)
    mean: float = math.nan
    std: float | None = None
    ci95: tuple[float, float] | None = None
    delta: float | None = None
    p_value: float | None = None
    is_baseline: bool = False
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # name -> (mean, std)
    cost: dict[str, float | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[Any]:
        return sorted(r.seed for r in self.runs)

    @property
    def label(self) -> str:
        return label(self.values)


@dataclass
class Comparison:
    """The comparison on one data set."""

    data: str
    task: str
    primary: str
    higher_is_better: bool
    keys: list[str]
    rows: list[Row]
    not_completed: list[RunRecord]
    baseline: str | None  # "model=none" when a baseline row exists
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names = {name for row in self.rows for name in row.metrics}
        return sorted(names, key=lambda n: (not n.startswith("test/"), n))

    @property
    def n_runs(self) -> int:
        return sum(row.n for row in self.rows) + len(self.not_completed)


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


def _statistics(row: Row) -> None:
    from scipy.special import stdtrit  # the t quantile; scipy.special loads in a third of scipy.stats' time

    row.scores = [float(r.summary["primary"]["value"]) for r in row.runs]
    row.mean = sum(row.scores) / row.n
    row.std = _std(row.scores)
    if row.std is not None:
        half = float(stdtrit(row.n - 1, 0.975)) * row.std / math.sqrt(row.n)
        row.ci95 = (row.mean - half, row.mean + half)
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
    from scipy.special import stdtr

    va, vb = _std(a) ** 2 / len(a), _std(b) ** 2 / len(b)
    diff = sum(a) / len(a) - sum(b) / len(b)
    if va + vb == 0:  # neither varies: certain when the means differ, no evidence when they do not
        return None if diff == 0 else 0.0
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch–Satterthwaite
    return float(2 * stdtr(df, -abs(t)))


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


def compare_data_set(runs: list[RunRecord], baseline: tuple[str, str] | None) -> Comparison:
    """Group the runs of one data set and compute every row's statistics."""
    keys = swept_keys(runs)
    groups: dict[tuple[str, ...], Row] = {}
    for run in runs:
        values = tuple(run.setting(k) for k in keys)
        row = groups.setdefault(values, Row(dict(zip(keys, values)), [], []))
        (row.runs if run.status == "completed" else row.not_completed).append(run)
    rows = [row for row in groups.values() if row.runs]
    not_completed = [r for row in groups.values() for r in row.not_completed]
    completed = [r for row in rows for r in row.runs]
    primary = completed[0].summary["primary"]
    higher = bool(primary.get("higher_is_better", True))
    comparison = Comparison(data=completed[0].data, task=str(completed[0].summary.get("task", "-")),
                            primary=primary["name"], higher_is_better=higher, keys=keys, rows=rows,
                            not_completed=not_completed, baseline=None)
    names = {r.summary["primary"]["name"] for r in completed}
    if len(names) > 1:
        raise UserError(f"runs of data={comparison.data} have different primary metrics ({', '.join(sorted(names))})"
                        f"; compare them separately")
    for row in rows:
        _statistics(row)
        duplicates = [s for s, n in Counter(row.seeds).items() if n > 1]
        if duplicates:
            comparison.notes.append(f"{row.label}: seed {', '.join(map(str, duplicates))} appears in several runs "
                                    f"(the same run copied twice?); each is counted")
    rows.sort(key=lambda row: (-row.mean if higher else row.mean, row.label))
    _apply_baseline(comparison, baseline)
    return comparison


def _apply_baseline(comparison: Comparison, baseline: tuple[str, str] | None) -> None:
    """Δ and p against the baseline row that matches each row in every other key."""
    key, value = baseline or BASELINE
    if key not in comparison.keys:
        others = ", ".join(comparison.keys)
        raise UserError(f"baseline {key}={value}: {key} is not a setting that differs between the runs of "
                        f"data={comparison.data} (those are: {others})")
    present = sorted({row.values[key] for row in comparison.rows})
    if value not in present:
        if baseline is None:
            comparison.notes.append(f"no completed {key}={value} runs: no Δ column (pick a baseline with "
                                    f"--baseline KEY=VALUE)")
            return
        raise UserError(f"baseline {key}={value} is not among the completed runs of data={comparison.data} "
                        f"({key} there: {', '.join(present)})")
    comparison.baseline = f"{key}={value}"
    others = [k for k in comparison.keys if k != key]
    reference = {tuple(row.values[k] for k in others): row for row in comparison.rows if row.values[key] == value}
    for row in comparison.rows:
        ref = reference.get(tuple(row.values[k] for k in others))
        if ref is None:
            continue
        if ref is row:
            row.is_baseline = True
            continue
        row.delta = row.mean - ref.mean
        row.p_value = welch(row.scores, ref.scores)


@dataclass
class Report:
    comparisons: list[Comparison]
    loaded: Loaded
    notes: list[str] = field(default_factory=list)  # for the whole report
    problems: list[str] = field(default_factory=list)  # data sets that could not be compared (baseline absent)


def build_report(loaded: Loaded, baseline: tuple[str, str] | None = None) -> Report:
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
        if not any(r.status == "completed" for r in runs):
            report.problems.append(f"data={data}: no completed run to compare")
            not_compared += runs
            continue
        try:
            report.comparisons.append(compare_data_set(runs, baseline))
        except UserError as e:
            report.problems.append(str(e))
    if not report.comparisons:
        raise UserError("; ".join(report.problems) or "nothing to compare")
    if not_compared:  # data sets where every run failed: listed with the first table's incomplete runs
        report.comparisons[0].not_completed += not_compared
    return report
