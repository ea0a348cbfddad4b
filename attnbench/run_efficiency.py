"""``attnbench bench --runs``: where the wall time of real ``attnbench train`` processes goes.

Each run is the command a user types, in a subprocess of its own. Its wall time is measured from outside
(``Popen`` to exit) and split with the ``phases_s`` of each job's summary.json: start-up (imports, Hydra; in a
grid the launch of the next job), data, model, probe, setup (W&B, placing the model), training steps,
validation, epoch records (metrics, checkpoints), test, figures, cost (FLOPs, inference timing); what is left
after the summary is written (W&B's close, the interpreter's exit) is ``exit``. **Run efficiency** is training
step time ÷ process wall time, and each job's time outside its training steps is held against the target
``TARGET_FIXED_S + TARGET_SHARE × training time``.

While it runs, the process's resident set is sampled from outside (``/proc/<pid>/status``), so the run's own
``peak_memory_mb`` (the peak of its training steps) is checked against an independent figure: the highest
sample inside the job's training-step windows (summary.json's ``timeline.train_steps``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_FIXED_S = 5.0  # time outside the training steps: at most this ...
TARGET_SHARE = 0.10  # ... plus this share of the training time
SAMPLE_INTERVAL_S = 0.05
COMMON = ["logger=none"]  # the bench measures attnbench, not W&B's servers


@dataclass
class RunSpec:
    label: str
    overrides: list[str]
    grid: bool = False


# the default run of each task family, the text run of issue 19, and a 4-job grid
RUNS = [
    RunSpec("classify (default: digits)", []),
    RunSpec("rate (default: reviews)", ["data=reviews"]),
    RunSpec("caption (default: shapes)", ["data=shapes"]),
    RunSpec("fewshot (default: glyphs)", ["data=glyphs"]),
    RunSpec("reviews, mha, 2 epochs", ["data=reviews", "model=mha", "trainer.epochs=2"]),
    RunSpec("grid: model=none,cbam seed=0,1", ["model=none,cbam", "seed=0,1"], grid=True),
]
# --quick: seconds, for the test that keeps this section working
QUICK_RUNS = [
    RunSpec("classify (digits, 1 epoch)", ["trainer.epochs=1", "backbone.widths=[8,16]"]),
    RunSpec("grid: model=none,se", ["trainer.epochs=1", "backbone.widths=[8,16]", "model=none,se"], grid=True),
]


def resident_mb(pid: int) -> float | None:
    """Another process's resident set now (Linux), None when it has gone or /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ResidentSampler(threading.Thread):
    """(Unix time, resident MiB) of a process every SAMPLE_INTERVAL_S until it exits."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_INTERVAL_S):
            rss = resident_mb(self.pid)
            if rss is not None:
                self.samples.append((time.time(), rss))

    def peak_within(self, windows: list[list[float]]) -> float | None:
        """The highest sample inside any of the (start, end) windows."""
        inside = [rss for t, rss in self.samples if any(start <= t <= end for start, end in windows)]
        return max(inside) if inside else None


def run_one(spec: RunSpec, folder: Path, extra: list[str]) -> dict[str, Any]:
    """Run one ``attnbench train`` command; its process wall time split into phases, per job."""
    where = "hydra.sweep.dir" if spec.grid else "hydra.run.dir"
    command = [sys.executable, "-m", "attnbench", "train", *(["-m"] if spec.grid else []), *spec.overrides,
               *COMMON, *extra, f"{where}={folder}"]
    log = folder.with_suffix(".log")
    with log.open("w") as out:
        started = time.time()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        sampler = ResidentSampler(process.pid)
        sampler.start()
        code = process.wait()
        ended = time.time()
        sampler.done.set()
        sampler.join()
    shown = " ".join(["attnbench train", *(["-m"] if spec.grid else []), *spec.overrides, *COMMON, *extra])
    # what tells a grid's jobs apart: the overrides with a comma outside brackets (a list value is one value)
    swept = [o.split("=", 1)[0] for o in spec.overrides if "," in re.sub(r"\[[^]]*\]", "", o)]
    row: dict[str, Any] = {"label": spec.label, "command": shown, "wall_s": ended - started, "exit_status": code}
    if code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        row["error"] = lines[-1] if lines else f"exit status {code}"
        return row
    summaries = sorted((json.loads(p.read_text()) for p in folder.rglob("summary.json")),
                       key=lambda s: s["timeline"]["job_started"])
    jobs = []
    for i, s in enumerate(summaries):
        phases = s["phases_s"]
        begin = s["timeline"]["job_started"] - phases.get("startup", 0.0)
        if i == 0:
            begin = started  # the first job's start-up runs from the Popen, as the user waits for it
            phases = {**phases, "startup": s["timeline"]["job_started"] - started}
        end = ended if i + 1 == len(summaries) else (
            summaries[i + 1]["timeline"]["job_started"] - summaries[i + 1]["phases_s"].get("startup", 0.0))
        span = end - begin
        training = phases.get("train_steps", 0.0)
        outside = span - training
        target = TARGET_FIXED_S + TARGET_SHARE * training
        resident = sampler.peak_within(s["timeline"]["train_steps"])
        jobs.append({"overrides": s["overrides"], "span_s": span,
                     "job": ",".join(o for o in s["overrides"] if o.split("=", 1)[0] in swept),
                     "phases_s": {**phases, "exit": span - sum(phases.values())},
                     "train_steps_s": training, "outside_s": outside, "target_s": target,
                     "meets_target": outside <= target, "efficiency": training / span if span > 0 else None,
                     "peak_memory_mb": s.get("peak_memory_mb"), "eval_peak_memory_mb": s.get("eval_peak_memory_mb"),
                     "resident_peak_training_mb": resident,
                     "memory_ratio": s["peak_memory_mb"] / resident if resident and s.get("peak_memory_mb") else None})
    training = sum(j["train_steps_s"] for j in jobs)
    row.update(jobs=jobs, train_steps_s=training, efficiency=training / row["wall_s"])
    return row


def run_section(quick: bool = False, extra: list[str] | None = None,
                progress: Any = print) -> list[dict[str, Any]]:
    """Every run of RUNS (QUICK_RUNS with ``quick``), in a temporary folder removed afterwards."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="attnbench-runs-") as tmp:
        for i, spec in enumerate(QUICK_RUNS if quick else RUNS):
            progress(f"run efficiency {i + 1}/{len(QUICK_RUNS if quick else RUNS)}: {spec.label}")
            rows.append(run_one(spec, Path(tmp) / f"run{i}", extra or []))
    return rows


PHASE_COLUMNS = ("startup", "data", "model", "probe", "setup", "train_steps", "validation", "epoch_records",
                 "test", "figures", "cost", "exit")


def print_section(rows: list[dict[str, Any]], console: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:  # a pipe or a log file: the table's full width rather than rich's 80 columns
        console = Console(highlight=False, width=180)

    table = Table(title=f"4 · run efficiency: training-step time ÷ process wall time; outside training ≤ "
                        f"{TARGET_FIXED_S:g} s + {TARGET_SHARE:.0%} of training wanted (seconds)")
    for column in ("run", "wall", *PHASE_COLUMNS, "efficiency", "outside", "target", ""):
        table.add_column(column.replace("_", " "), justify="left" if column == "run" else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["label"], f"{row['wall_s']:.1f}", *["-"] * (len(PHASE_COLUMNS) + 3),
                          f"[red]failed: {row['error']}[/red]")
            continue
        grid = len(row["jobs"]) > 1
        for i, job in enumerate(row["jobs"]):
            label = f"  job {i + 1}: {job['job']}" if grid else row["label"]
            table.add_row(label, f"{job['span_s']:.1f}", *(f"{job['phases_s'].get(p, 0.0):.1f}" for p in PHASE_COLUMNS),
                          f"{job['efficiency']:.2f}", f"{job['outside_s']:.1f}", f"{job['target_s']:.1f}",
                          "[green]ok[/green]" if job["meets_target"] else "[red]over[/red]")
        if grid:
            table.add_row(f"{row['label']} (whole process)", f"{row['wall_s']:.1f}", *[""] * len(PHASE_COLUMNS),
                          f"{row['efficiency']:.2f}", f"{row['wall_s'] - row['train_steps_s']:.1f}", "", "")
    console.print(table)
    for row in rows:
        for job in row.get("jobs", []):
            if job["memory_ratio"] is not None:
                console.print(f"{row['label']}{', job ' + job['job'] if len(row['jobs']) > 1 else ''}: "
                              f"peak_memory_mb {job['peak_memory_mb']:,.0f} (training steps), resident peak sampled "
                              f"from outside during the training steps {job['resident_peak_training_mb']:,.0f} MiB "
                              f"(ratio {job['memory_ratio']:.3f}); eval_peak_memory_mb "
                              f"{job['eval_peak_memory_mb'] or 0:,.0f}",
                              soft_wrap=True)
