"""``hydra/sweeper=decide``: a head-to-head grid that runs in rounds of seeds and stops each comparison once its
verdict is decided, or at its seed or time budget.

The procedure is group-sequential with the error rate shared out by Bonferroni over the planned looks: the grid
looks at its results after ``pilot`` seeds, then every ``step`` seeds up to ``max_seeds`` (K looks in all), and
every interval at every look is a (1 − α/(m·K)) interval for the m comparisons of its table. By the union bound
the chance that any interval at any look misses its true Δ is at most α, however the grid stops, so a verdict
reached at an early look is as valid as one at the last (docs/compare.md says why this procedure). A comparison
that is decided gets no more seeds; a reference gets them as long as one of its comparisons is open. The plan is
written to ``decide.json`` in the sweep directory, so that ``attnbench compare`` prints the same intervals later.

Each round is an ordinary batch of jobs for the configured launcher (basic, joblib, submitit). The rounds follow
from the results alone, so a grid started again with the same ``hydra.sweep.dir`` after an interruption replays
the finished rounds (their jobs are found completed and skipped) and goes on where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .compare.analysis import Report, build_report, parse_baseline
from .compare.runs import DESIGN_FILE, load_runs
from .compare.verdict import ALPHA, Design, parse_margins
from .errors import UserError


@dataclass(frozen=True)
class Plan:
    """The seeds of each look, and the error rate they share."""

    pilot: int = 3
    step: int = 2
    max_seeds: int = 10
    max_minutes: float | None = None
    alpha: float = ALPHA
    delta: str | None = None
    baseline: str | None = None

    def check(self) -> None:
        """One line for a plan that cannot run."""
        if self.pilot < 2:
            raise UserError(f"hydra.sweeper.pilot={self.pilot}: a pilot needs at least 2 seeds (an interval "
                            f"needs two)")
        if self.step < 1:
            raise UserError(f"hydra.sweeper.step={self.step}: each round adds at least one seed")
        if self.max_seeds < self.pilot:
            raise UserError(f"hydra.sweeper.max_seeds={self.max_seeds} is smaller than the pilot "
                            f"(hydra.sweeper.pilot={self.pilot}): the budget must hold the pilot")
        if not 0 < self.alpha < 1:
            raise UserError(f"hydra.sweeper.alpha={self.alpha}: an error rate between 0 and 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"hydra.sweeper.max_minutes={self.max_minutes}: a positive number of minutes, or null")
        parse_margins(self.delta)
        parse_baseline(self.baseline)

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Plan:
        """The plan in ``hydra.sweeper``'s settings (pilot, step, …; δ as text, whether YAML read it as a number)."""
        fields = {k: settings[k] for k in ("pilot", "step", "max_seeds", "max_minutes", "alpha", "baseline")
                  if k in settings}
        delta = settings.get("delta")
        return cls(**fields, delta=None if delta is None else str(delta))

    @property
    def seed_counts(self) -> list[int]:
        """The number of seeds at each look: pilot, pilot + step, …, max_seeds."""
        counts = list(range(self.pilot, self.max_seeds, self.step))
        return [*counts, self.max_seeds]

    @property
    def design(self) -> Design:
        return Design(alpha=self.alpha, looks=len(self.seed_counts))


def job_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's configuration without its seed: what several seeds of one configuration share."""
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"))


def open_configurations(report: Report, configurations: dict[Path, tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The configurations that need more seeds: every row whose verdict is not decided, and its reference."""
    wanted: set[tuple[str, ...]] = set()
    for comparison in report.comparisons:
        for row in comparison.rows:
            if row.is_baseline or row.reference is None or (row.verdict is not None and row.verdict.decided):
                continue
            for member in (row, row.reference):
                wanted |= {configurations[r.path.resolve()] for t in member.trials for r in t.given
                           if r.path.resolve() in configurations}
    return wanted


class DecideSweeper(Sweeper):
    """Runs the grid's configurations at seeds 0…pilot−1, then adds ``step`` seeds to every configuration whose
    comparison is still open, until each is decided or ``max_seeds``/``max_minutes`` is reached."""

    def __init__(self, params: dict[str, str] | None = None, max_batch_size: int | None = None, pilot: int = 3,
                 step: int = 2, max_seeds: int = 10, max_minutes: float | None = None, alpha: float = ALPHA,
                 delta: str | None = None, baseline: str | None = None) -> None:
        self.params = dict(params or {})
        self.max_batch_size = max_batch_size
        self.plan = Plan.of({"pilot": pilot, "step": step, "max_seeds": max_seeds, "max_minutes": max_minutes,
                             "alpha": alpha, "delta": delta, "baseline": baseline})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Any]:
        from .track.console import console  # here: Hydra imports every plugin module when it starts

        assert self.config is not None and self.hydra_context is not None
        self.plan.check()
        configurations = configurations_of([*[f"{k}={v}" for k, v in self.params.items()], *arguments],
                                           OverridesParser.create(config_loader=self.hydra_context.config_loader))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / DESIGN_FILE).write_text(json.dumps({
            "procedure": "group-sequential, Bonferroni over the planned looks (attnbench.sweeper)",
            **asdict(self.plan), "looks": len(self.plan.seed_counts), "seed_counts": self.plan.seed_counts,
        }, indent=2) + "\n")
        started, returns, done = time.monotonic(), [], 0
        wanted = set(configurations)
        where: dict[Path, tuple[str, ...]] = {}
        for look, seeds in enumerate(self.plan.seed_counts, 1):
            batch = [[*key, f"seed={seed}"] for key in configurations if key in wanted for seed in range(done, seeds)]
            console.print(f"decide: look {look} of {len(self.plan.seed_counts)}, seeds {done}–{seeds - 1} for "
                          f"{len({tuple(job[:-1]) for job in batch})} of {len(configurations)} configurations "
                          f"({len(batch)} jobs)", soft_wrap=True)
            results = self._launch(batch, sum(len(r) for r in returns))
            returns.append(results)
            done = seeds
            where.update(self._job_dirs(sweep_dir))
            report = self._report(sweep_dir)
            wanted = open_configurations(report, where) if report else set(configurations)
            if not wanted:
                console.print(f"decide: every comparison decided after {seeds} seeds", soft_wrap=True)
                break
            if self.plan.max_minutes is not None and time.monotonic() - started > self.plan.max_minutes * 60:
                console.print(f"decide: the time budget ({self.plan.max_minutes:g} min) is spent after {seeds} "
                              f"seeds; {len(wanted)} configurations still open", soft_wrap=True)
                break
        else:
            console.print(f"decide: the seed budget ({self.plan.max_seeds}) is spent; {len(wanted)} configurations "
                          f"still open", soft_wrap=True)
        return returns

    def _launch(self, batch: list[list[str]], first_index: int) -> list[Any]:
        chunk = self.max_batch_size or len(batch) or 1
        results = []
        for i in range(0, len(batch), chunk):
            part = batch[i:i + chunk]
            self.validate_batch_is_legal(part)
            results += list(self.launcher.launch(part, initial_job_idx=first_index + i))
        return results

    @staticmethod
    def _job_dirs(sweep_dir: Path) -> dict[Path, tuple[str, ...]]:
        """Each job folder of the sweep and its configuration, from the overrides attnbench wrote there."""
        import yaml

        found = {}
        for path in sweep_dir.rglob(".hydra/overrides.yaml"):
            try:
                overrides = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(overrides, list):
                found[path.parent.parent.resolve()] = job_key([str(o) for o in overrides])
        return found

    def _report(self, sweep_dir: Path) -> Report | None:
        from .track.console import console

        try:
            return build_report(load_runs([str(sweep_dir)]), parse_baseline(self.plan.baseline),
                                design=self.plan.design, margins=parse_margins(self.plan.delta))
        except UserError as e:
            console.print(f"[yellow]warning:[/yellow] decide: no comparison yet ({e})", soft_wrap=True)
            return None


def configurations_of(overrides: list[str], parser: OverridesParser) -> list[tuple[str, ...]]:
    """The grid's configurations (every sweep but the seed, expanded as the basic sweeper does); the seeds
    are the sweeper's own, so a seed sweep is refused."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = parser.parse_overrides(overrides)
    seeds = [o.input_line for o in parsed if o.get_key_element().lstrip("+~") == "seed"]
    if seeds:
        raise UserError(f"{seeds[0]}: hydra/sweeper=decide chooses the seeds itself (0, 1, … up to "
                        f"hydra.sweeper.max_seeds); drop the seed override")
    return [job_key(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]

