"""Reading run directories: only ``summary.json`` and ``.hydra/`` (config, choices), so compare works on sweeps
from any launcher, on copies of them, and on single runs gathered from several days."""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from .verdict import Design

NO_SUMMARY = "no summary"  # the status of a run that wrote no summary.json: still running, or killed hard


@dataclass
class RunRecord:
    """One run directory as compare sees it."""

    path: Path
    status: str  # completed | failed | interrupted | no summary
    data: str
    choices: dict[str, str]  # config group -> option, from .hydra/hydra.yaml (or the summary)
    leaves: dict[str, str]  # every config value, flattened to dotted keys, as text
    summary: dict[str, Any]

    @property
    def seed(self) -> Any:
        if "seed" in self.summary:
            return self.summary["seed"]
        text = self.leaves.get("seed", "-")
        return int(text) if text.lstrip("-").isdigit() else text

    @property
    def error(self) -> str:
        return str(self.summary.get("error") or "")

    @property
    def attention(self) -> dict[str, Any]:
        """The run's ``attention`` record (what its attention weighed over); empty for runs made before it."""
        record = self.summary.get("attention")
        return record if isinstance(record, dict) else {}

    @property
    def attention_mark(self) -> str:
        """"degenerate" (run with allow_degenerate=true: its attention weighed nothing), "reduced" (its shapes
        made it equal a simpler variant) or ""."""
        return "degenerate" if self.attention.get("degenerate") else "reduced" if self.attention.get("reduced") else ""

    def setting(self, key: str) -> str:
        if key == "device":
            return str(self.summary.get("device") or "-")
        if key in self.choices:
            return self.choices[key]
        return self.leaves.get(key, "-")


@dataclass
class Loaded:
    runs: list[RunRecord] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    empty: list[str] = field(default_factory=list)  # paths given that hold no run
    design: Design | None = None  # a sequential grid's design (its sweep directory's decide.json)
    delta: str | None = None  # and the δ it decided with
    baseline: str | None = None  # and the baseline it measured against


def _is_run_dir(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file() or (path / "summary.json").is_file()


def run_dir_holding(path: Path) -> Path | None:
    """The run directory that ``path`` lies inside, at any depth (its summary, metrics, .hydra/, checkpoints,
    figures or a new file there), the folders it goes through resolved; None when it is outside every run."""
    where = path.expanduser().parent.resolve() / path.name
    return next((folder for folder in where.parents if _is_run_dir(folder)), None)


def check_targets(out: str | None, picture: str | None) -> None:
    """Refuse (UserError) an --out or --plot that would replace a run's own files or write into a run."""
    if out and picture and Path(out).expanduser().resolve() == Path(picture).expanduser().resolve():
        raise UserError(f"--out and --plot name the same file ({out}); give each its own")
    for option, target in (("--out", out), ("--plot", picture)):
        inside = run_dir_holding(Path(target)) if target else None
        if inside:
            raise UserError(f"{option} {target}: inside the run directory {inside}; compare never writes into a "
                            f"run (write the comparison beside the runs)")


def find_run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a run directory, else every run directory below it (a sweep, a day of
    runs, a whole outputs/ folder). W&B, checkpoint and figure folders are not searched."""
    if _is_run_dir(path):
        return [path]
    found = []
    for root, dirs, _ in os.walk(path):
        here = Path(root)
        if here != path and _is_run_dir(here):
            found.append(here)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoints", "figures", ".hydra"))
    return found


def expand_paths(paths: Iterable[str]) -> list[Path]:
    """The paths as given, with glob patterns expanded (for when the shell did not); a path that does not
    exist is a user error: a comparison silently missing a sweep would mislead. A path that exists is taken
    literally, glob characters and all: Hydra names a job folder for a list override ``betas=[0.9,0.99]``."""
    out: list[Path] = []
    for given in paths:
        if any(c in given for c in "*?[") and not Path(given).expanduser().exists():
            matches = sorted(glob.glob(os.path.expanduser(given)))
            if not matches:
                raise UserError(f"{given} matches nothing")
            out += [Path(m) for m in matches]
            continue
        path = Path(given).expanduser()
        if not path.exists():
            raise UserError(f"{given}: no such file or directory")
        out.append(path)
    return out


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(node) if isinstance(node, (list, bool)) or node is None else str(node)
    return {prefix[:-1]: text}


# How deep a summary.json or a .hydra YAML may nest: attnbench writes a few levels; a file nested past this
# is not a run's (and parsing or flattening it without a bound ends in a RecursionError).
MAX_DEPTH = 32
# The largest magnitude a metric, a cost or a primary value may have: the statistics square deviations
# (1e154 squared leaves float range), and no metric, count or rate comes near it.
MAX_MAGNITUDE = 1e100


class _SafeLoader(yaml.SafeLoader):
    """safe_load without aliases (an alias is a reference: a few hundred bytes of them expand to billions of
    nodes) and with a bounded nesting depth. OmegaConf, which writes .hydra/*.yaml, never writes an alias."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"it uses a YAML alias (line {self.peek_event().start_mark.line + 1}), which "
                                 f"attnbench does not read")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.YAMLError(f"it nests deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# The largest summary.json or .hydra YAML read: attnbench writes a few kilobytes; a bigger file is not a run's
MAX_BYTES = 16 * 2**20


def _read_text(path: Path) -> str:
    """The text of a run's file, refused (ValueError) when it is larger than any run writes."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"it is {size / 2**20:.0f} MB, more than the {MAX_BYTES // 2**20} MB a run's file has")
    return path.read_text()


def _read_yaml(path: Path) -> Any:
    return yaml.load(_read_text(path), Loader=_SafeLoader)  # noqa: S506 - a SafeLoader, stricter still


def _shape_problem(summary: Any) -> str | None:
    """Why a parsed summary cannot be walked safely: nested past MAX_DEPTH, or a number past MAX_MAGNITUDE
    (the statistics would overflow; a huge integer does not even convert to a float). NaN and infinity pass:
    they mark a run not finite. Without recursion, so any depth json.loads returns is walked."""
    stack: list[tuple[str, Any, int]] = [("", summary, 0)]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"it nests deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack += [(f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (isinstance(value, int) or math.isfinite(value)) and abs(value) > MAX_MAGNITUDE:
            return f"its {where} {_shown(value)} is out of range"
    return None


REQUIRED = ("status", "data", "model", "seed", "primary", "metrics")


def _summary_problem(summary: Any) -> str | None:
    """Why a summary.json cannot be used (None when it can)."""
    if not isinstance(summary, dict):
        return "it is not a JSON object"
    missing = [k for k in REQUIRED if k not in summary]
    if missing:
        return f"it lacks {', '.join(missing)}"
    shape = _shape_problem(summary)
    if shape:
        return shape
    for key, kind, what in (("status", str, "a string"), ("data", str, "a string"), ("model", str, "a string"),
                            ("seed", int, "a whole number"), ("backbone", str, "a string"),
                            ("task", str, "a string"), ("device", str, "a string"), ("error", str, "a string"),
                            ("wandb_id", str, "a string"), ("attention", dict, "a JSON object"),
                            ("overrides", list, "a list")):
        if key in summary and (summary[key] is not None or key in REQUIRED) \
                and (not isinstance(summary[key], kind) or isinstance(summary[key], bool)):
            return f"its {key} is {_shown(summary[key])}, not {what}"
    if any(not isinstance(o, str) for o in summary.get("overrides") or []):
        return "its overrides are not all strings"
    for key, value in (summary.get("attention") or {}).items():
        if key in ("summary", "reduced", "degenerate") and not isinstance(value, (str, bool)) and value is not None:
            return f"its attention.{key} is {_shown(value)}, not a string"
    primary = summary["primary"]
    if summary["status"] == "completed":
        if not isinstance(primary, dict) or "value" not in primary or not primary.get("name"):
            return "it is completed but has no primary metric value"
        if not isinstance(summary["metrics"], dict):
            return "its metrics are not a JSON object"
    if isinstance(primary, dict):
        # a run that failed before its task existed writes null for each: it is still listed as failed
        if primary.get("name") is not None and not isinstance(primary["name"], str):
            return f"its primary.name is {_shown(primary['name'])}, not a string"
        if primary.get("higher_is_better") is not None and not isinstance(primary["higher_is_better"], bool):
            return (f"its primary.higher_is_better is {_shown(primary['higher_is_better'])}, not true or false "
                    f"(a JSON boolean, unquoted)")
        value = primary.get("value")
        if summary["status"] == "completed" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"its primary.value is {_shown(value)}, not a number"
    return None


def _shown(value: Any) -> str:
    """A value from a file, in a message: JSON, cut to 40 characters."""
    text = f"{str(value)[:20]}…" if isinstance(value, int) and abs(value) > 10**40 else json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"


def load_run(path: Path) -> RunRecord | tuple[Path, str]:
    """The run at ``path``, or (file, why) when it cannot be used."""
    config_path = path / ".hydra" / "config.yaml"
    summary_path = path / "summary.json"
    if not config_path.is_file():
        return config_path, "missing: not an attnbench run directory (Hydra writes it when a run starts)"
    try:
        config = _read_yaml(config_path)
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
        return config_path, f"unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            summary = json.loads(_read_text(summary_path))
        except RecursionError:
            return summary_path, f"unusable: it nests deeper than {MAX_DEPTH} levels"
        except (OSError, ValueError) as e:
            return summary_path, f"corrupt or half-written ({str(e).splitlines()[0]})"
        problem = _summary_problem(summary)
        if problem:
            return summary_path, f"unusable: {problem}"
    choices: dict[str, str] = {}
    try:
        hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml") if (path / ".hydra" / "hydra.yaml").is_file() else {}
        choices = {str(k): str(v) for k, v in hydra_cfg["hydra"]["runtime"]["choices"].items()
                   if not str(k).startswith("hydra/") and v is not None}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        pass  # without hydra.yaml the summary still names the data set, backbone and variant
    for key in ("data", "backbone", "model"):
        if key in summary:
            choices[key] = str(summary[key])
    leaves = _flatten(config)
    data = choices.get("data") or leaves.get("data.name") or "-"
    status = str(summary.get("status", NO_SUMMARY)) if summary else NO_SUMMARY
    return RunRecord(path=path, status=status, data=data, choices=choices, leaves=leaves, summary=summary)


DESIGN_FILE = "decide.json"  # what a sequential grid (hydra/sweeper=decide) planned: α and its looks


def read_design(path: Path) -> tuple[Design, str | None, str | None] | None:
    """The design a sequential grid wrote into its sweep directory, which its intervals must keep, with the δ
    and the baseline it decided with."""
    try:
        plan = json.loads((path / DESIGN_FILE).read_text())
        delta, baseline = plan.get("delta"), plan.get("baseline")
        return (Design(alpha=float(plan["alpha"]), looks=int(plan["looks"])), None if delta is None else str(delta),
                None if baseline is None else str(baseline))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_runs(paths: Iterable[str]) -> Loaded:
    loaded = Loaded()
    seen: set[Path] = set()
    for path in expand_paths(paths):
        planned = read_design(path)
        if planned is not None and (loaded.design is None or planned[0].looks > loaded.design.looks):
            loaded.design, loaded.delta, loaded.baseline = planned  # several: the most looks, the stricter level
        dirs = find_run_dirs(path)
        if not dirs:
            loaded.empty.append(str(path))
        for run_dir in dirs:
            if run_dir.resolve() in seen:  # overlapping paths or globs: each run counts once
                continue
            seen.add(run_dir.resolve())
            result = load_run(run_dir)
            if isinstance(result, RunRecord):
                loaded.runs.append(result)
            else:
                loaded.skipped.append(result)
    return loaded
