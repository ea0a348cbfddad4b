"""Hydra callbacks (named in conf/config.yaml): what happens when a multirun ends."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .printable import markup
from .track.console import console

# the outcome of the last multirun in this process, read by the CLI to set its exit status
last_sweep: dict[str, Any] = {}


def sweep_statuses(sweep_dir: Path) -> dict[Path, str]:
    """Each job folder under a sweep directory and the status its summary.json gives (``missing`` if none)."""
    statuses = {}
    for config in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        if run_dir == sweep_dir:
            continue
        try:
            statuses[run_dir] = json.loads((run_dir / "summary.json").read_text()).get("status", "missing")
        except (OSError, ValueError):
            statuses[run_dir] = "missing"
    return statuses


class SweepSummary(Callback):
    """Count the jobs of the sweep by status and say which failed, then print the comparison table (also
    written to the sweep directory and, when the sweep logs to W&B, to a summary run there)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = sweep_statuses(sweep_dir)
        counts = Counter(statuses.values())
        failed = [d for d, s in statuses.items() if s != "completed"]
        last_sweep.clear()
        last_sweep.update(dir=sweep_dir, counts=dict(counts), failed=failed)
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        console.print(markup(f"sweep {sweep_dir}: {len(statuses)} jobs, {tally}"))
        for run_dir in failed:
            console.print(f"[yellow]not completed:[/yellow] {markup(f'{run_dir} ({statuses[run_dir]})')}")
        try:
            from .compare import sweep_report

            sweep_report(sweep_dir, config.get("logger"), list(OmegaConf.select(config, "hydra.overrides.task") or []))
        except Exception as e:  # the jobs are done and counted: a failed summary must not lose that
            logging.getLogger("attnbench").exception("sweep comparison failed")
            console.print("[yellow]warning:[/yellow] " + markup(f"no comparison table: {type(e).__name__}: {e} "
                                                                 f"(`attnbench compare {sweep_dir}` tries again)"))
