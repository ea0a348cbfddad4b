"""attnbench train | eval | compare | list | bench — the command line.

``train`` is a Hydra application. Before Hydra creates any directory, every job of the command is composed
and checked, so a mistake (an unknown variant, a misspelt key, a variant with no slot in the task) ends with
one line on stderr and exit status 2, and nothing is written. ``HYDRA_FULL_ERROR=1`` shows tracebacks.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig

# OpenMP's idle threads spin by default. On a CPU shared with other jobs (CI, parallel sweeps, a laptop) the
# spinning threads take the cores the work needs and small models train many times slower (a caption step on
# a loaded 2-core machine: 0.28 s of CPU passive, 4.4 s spinning). Set before torch loads; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import launch  # noqa: E402  registers the config resolvers every process that runs jobs needs
from .config import conf_dir  # noqa: E402
from .errors import CommandParser  # noqa: E402

USAGE = """usage: attnbench <command> [arguments]

commands:
  train [overrides]    train one configuration (Hydra overrides, e.g. model=se data=cifar)
  train -m [overrides] a grid: comma-separated values sweep (model=none,se,cbam seed=0,1,2)
  train resume=DIR     continue an interrupted run in place, with its own configuration
  eval DIR             test metrics of a run directory's best checkpoint
  compare PATH...      variants side by side: mean ± 95% CI over seeds, Δ and p against model=none, cost
                       (--format table|markdown|csv|json, --out FILE, --plot FILE.png; see `compare --help`)
  list                 variants (slot, paper, task families), data sets and backbones
  bench [options]      step cost per variant, trainer overhead, module parity, attention scaling
  check-variant TARGET the slot protocol's checks on your class (pkg.mod:Class --slot feature), one line a failure

`attnbench COMMAND --help` describes each command; `attnbench train --help` lists the config groups.
Tab completion in bash: eval "$(attnbench -sc install=bash)"
`attnbench --version` prints the version."""

HYDRA_INFO_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-p", "--package",
                    "--shell-completion", "-sc")


def fail(message: str) -> int:
    from .track.console import error

    error(message)
    return 2


# ---------------------------------------------------------------------------------------- train


def quoted(key: str, value: str, sweep: bool = False) -> str:
    """``key=value`` as the shell must pass it for Hydra to read ``value`` as one string (``sweep``: each
    comma-separated value as one string)."""
    import shlex

    def one(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return shlex.quote(f"{key}=" + (",".join(one(v) for v in value.split(",")) if sweep else one(value)))


def _unreadable(overrides: list[str], multirun: bool) -> str | None:
    """The line for the first override Hydra's grammar cannot read, with the quoted form that it can."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            key, _, value = override.partition("=")
            if not value:
                return None
            return (f"{override} cannot be read as a Hydra override: a value with letters outside ASCII, spaces, "
                    f"commas, brackets, quotes or '=' must be quoted; type {quoted(key, value, multirun)}")
    return None


# the streaming keys (data.stream) of the data sets that can stream; on another set one line says it cannot
STREAM_KEYS = ("data.stream", "data.memory_budget_mb")


def _composition_error(e: Exception, overrides: list[str], multirun: bool = False) -> str:
    """One line for what Hydra or OmegaConf refused while composing ``overrides``."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(e, OverrideParseException):
        line = _unreadable(overrides, multirun)
        if line:
            return line

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, name = e.missing_cfg_file.rsplit("/", 1)
        options = sorted(e.options or [])
        near = difflib.get_close_matches(name, options, n=1)
        hint = f" Did you mean {group}={near[0]}?" if near else ""
        return f"unknown {group} {name!r}.{hint} Choose one of: {', '.join(options)}"
    cause = e.__cause__ or e
    key = getattr(cause, "full_key", None)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "Could not override" in text or "not in struct" in str(cause):
        name = key or text.split("'")[1]
        if name in STREAM_KEYS:
            data = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "digits")
            return (f"data={data} cannot stream (it has no {name}): image_folder, the hub image sets (cifar, "
                    f"cifar100) and the caption sets stream; the others live in memory, leave {name} out")
        return f"unknown key {name!r}{_near_key(name, overrides)} (`attnbench train --cfg job` prints every key)"
    if key:
        return f"{key}: {str(cause).strip().splitlines()[0]}"
    return text


def _near_key(name: str, overrides: list[str]) -> str:
    """': did you mean X?' from the keys the config really has beside ``name`` (empty when none is close)."""
    from hydra import compose
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = name.rpartition(".")
    try:
        cfg = compose("config", overrides=[o for o in overrides if o.lstrip("+~").split("=")[0] != name])
    except Exception:
        return ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    if not parent:  # a top-level key is often a group's (lr=0.1 for trainer.lr=0.1): search one level down too
        keys += [f"{group}.{k}" for group in keys if isinstance(cfg.get(group), DictConfig) for k in cfg[group]]
    named = {k: k.rpartition(".")[2] for k in keys}
    exact = [k for k, last in named.items() if last == leaf]
    near = exact or difflib.get_close_matches(leaf, keys, n=1) or [
        k for k in keys if k.rpartition(".")[2] in difflib.get_close_matches(leaf, list(named.values()), n=1)]
    return f": did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""


# what Hydra's --info may be followed by (``--info defaults``); alone it means all of them
HYDRA_INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")

# Hydra flags followed by a value, which is no override (``--cfg job``, ``-p model``, ``--config-dir DIR``)
HYDRA_VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cd", "--config-dir", "-cp", "--config-path", "-cn",
                     "--config-name", "--experimental-rerun")


def _split_args(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, informational): Hydra's own flags are passed through untouched.

    The checks compose with attnbench's conf/ alone, so a ``--config-dir DIR`` becomes the search-path
    entry Hydra itself makes of it, ``hydra.searchpath=[file://DIR]``, among the overrides checked."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    informational = any(a.partition("=")[0] in HYDRA_INFO_FLAGS for a in args)
    overrides = []
    for i, arg in enumerate(args):
        previous = args[i - 1] if i else ""
        if previous in HYDRA_VALUE_FLAGS or (previous in ("-i", "--info") and arg in HYDRA_INFO_TOPICS):
            continue  # the flag's value
        if not arg.startswith("-"):
            overrides.append(arg)
    return _with_search_path(overrides, _config_dirs(args)), multirun, informational


INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _flags_first(args: list[str]) -> list[str]:
    """``args`` with Hydra's flags (and their values) before the overrides: Hydra's parser takes overrides
    only before its first flag, so ``data=digits --config-dir DIR model=mine`` would end in its usage text."""
    flags, overrides = [], []
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.append(arg)
        if arg in HYDRA_VALUE_FLAGS:
            flags.append(next(rest, ""))
        elif arg in ("-i", "--info"):
            value = next(rest, None)
            if value is not None:
                (flags if value in INFO_CHOICES else overrides).append(value)
    return [*flags, *overrides]


def _yaml_error(e: Exception) -> str:
    """A YAML file that does not parse, in one line: the file, the line and what is wrong."""
    mark = getattr(e, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}: " if mark is not None else ""
    return f"{where}not valid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})"


def _check_callbacks(cfg: DictConfig) -> None:
    """Refuse a ``hydra.callbacks`` entry whose ``_target_`` Hydra's instantiation policy blocks, before
    anything runs (Hydra itself would refuse it in seven lines once the run started)."""
    from hydra.errors import InstantiationException

    from .errors import UserError

    try:  # Hydra's own policy check, without calling the target
        from hydra._internal.target_policy import _authorize_target_name
    except ImportError:  # a Hydra without it checks when it instantiates
        return
    for name, callback in (cfg.hydra.get("callbacks") or {}).items():
        target = callback.get("_target_") if hasattr(callback, "get") else None
        if isinstance(target, str):
            try:
                _authorize_target_name(target, target, f"hydra.callbacks.{name}")
            except InstantiationException as e:
                first = " ".join(str(e).split())
                raise UserError(f"hydra.callbacks.{name}: {first}") from None


def _config_dirs(args: list[str]) -> list[str]:
    dirs = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("-cd", "--config-dir"):
            dirs.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    return dirs


def _with_search_path(overrides: list[str], config_dirs: list[str]) -> list[str]:
    """``overrides`` with each config dir first in ``hydra.searchpath`` (merged into the user's own)."""
    if not config_dirs:
        return overrides
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entries = [f"file://{Path(d).expanduser().resolve()}" for d in config_dirs]
    kept = []
    for o in overrides:
        if o.split("=", 1)[0] == "hydra.searchpath":
            entries += [str(e) for e in OverridesParser.create().parse_override(o).value()]
        else:
            kept.append(o)
    return [*kept, f"hydra.searchpath=[{','.join(entries)}]"]


def expand_jobs(compose: Callable[[list[str]], DictConfig], overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of every job the command would run, expanded as Hydra's basic sweeper does
    (sweep parameters of an experiment config first, the command line after); ``compose`` is a
    ``config.composer``'s."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .values import path_exists

    # glob(...) lists a group's options through the config loader (of the composer around us)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    for o in parsed:
        key, _, value = o.input_line.partition("=")
        if o.is_sweep_override() and "," in value and path_exists(value):
            raise ValueError(f"{o.input_line} names a path with a comma, which Hydra reads as several values; "
                             f"quote it: {quoted(key, value)}")
    if not multirun:
        swept = [o.input_line for o in parsed if o.is_sweep_override()]
        if swept:
            key, _, value = swept[0].partition("=")
            also = f", or, if the comma is part of one value, quote it: {quoted(key, value)}" if "," in value else ""
            raise ValueError(f"{swept[0]} sweeps several values: add -m to run a grid{also}")
        return [overrides]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeper = compose(fixed).hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.params or {}).items()]
    if str(sweeper.get("_target_")).endswith("DecideSweeper"):  # seeds are its own: probe each at seed 0
        from .sweeper import Plan, configurations_of

        Plan.of(sweeper).check()
        return [[*key, "seed=0"] for key in configurations_of(params + overrides, parser)]
    parsed = parser.parse_overrides(params + overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def expand_globs(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``model=glob(s*)`` as the explicit list of the options it matches that fit the rest of the command
    (``model=se,stochastic,sum`` on digits), and a note for each option left out: a glob asks for "every
    variant like this", not for the ones with no slot in the task. Other overrides stay as typed."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    from .config import composer

    if not any("glob(" in o for o in overrides):
        return overrides, []
    from .errors import UserError
    from .tasks import check

    out, notes = [], []
    with composer() as compose:
        parsed = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader()).parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        for o in parsed:
            if o.value_type != ValueType.GLOB_CHOICE_SWEEP:
                out.append(o.input_line)
                continue
            key, kept, left = o.get_key_element(), [], []
            if not list(o.sweep_string_iterator()):
                options = GlobalHydra.instance().config_loader().get_group_options(key)
                raise UserError(f"{o.input_line} matches no {key} option (they are: {', '.join(options)})")
            for value in o.sweep_string_iterator():
                try:
                    cfg = compose([*fixed, f"{key}={value}"])
                    check(cfg, dict(cfg.hydra.runtime.choices))
                    kept.append(value)
                except UserError:
                    left.append(value)
                except Exception:  # not composable: kept, so that preflight names the problem
                    kept.append(value)
            if left:
                rest = [f for f in fixed if not f.startswith("hydra.")]
                notes.append(f"{o.input_line} leaves out {', '.join(left)}: they do not fit "
                             f"{' '.join(rest) or 'the default configuration'}")
            out.append(f"{key}={','.join(kept or left)}")  # none fits: preflight says why for the first
    return out, notes


def compose_jobs(overrides: list[str], multirun: bool) -> list[tuple[str, DictConfig]]:
    """(prefix for messages, composed config with its Hydra node) of every job; a UserError naming the first
    that does not compose, or that adds a key (``+trainer.foo=1``) the trainer or logger schema lacks."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import check_schema_keys, composer
    from .errors import UserError

    with composer() as compose:
        try:
            jobs = expand_jobs(compose, overrides, multirun)
        except yaml.YAMLError as e:
            raise UserError(_yaml_error(e)) from None
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            raise UserError(_composition_error(e, overrides, multirun)) from None
        if not jobs:
            raise UserError(f"the grid {' '.join(overrides)} has no jobs: a sweep in it lists no value "
                            f"(range(5,0) is empty; range(5,0,-1) counts down)")
        composed = []
        for job in jobs:
            prefix = f"job {','.join(job)}: " if len(jobs) > 1 else ""
            try:
                cfg = compose(job)
                check_schema_keys(cfg)
                _check_callbacks(cfg)
            except yaml.YAMLError as e:
                raise UserError(prefix + _yaml_error(e)) from None
            except (HydraException, OmegaConfBaseException) as e:
                raise UserError(prefix + _composition_error(e, job)) from None
            except UserError as e:
                raise UserError(prefix + str(e)) from None
            _check_folder_names(prefix, cfg, multirun)
            composed.append((prefix, cfg))
    return composed


def _check_folder_names(prefix: str, cfg: DictConfig, multirun: bool) -> None:
    """Refuse a job whose directory would have a name the file system cannot hold: a grid job's folder is
    named from its overrides (``hydra.sweep.subdir``), so a long value makes it too long."""
    from omegaconf.errors import OmegaConfBaseException

    from .errors import UserError
    from .values import NAME_MAX, long_part

    try:
        where = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" if multirun else str(cfg.hydra.run.dir)
    except OmegaConfBaseException:  # a custom subdir that needs the running job: Hydra resolves it later
        return
    part = long_part(where)
    if part:
        raise UserError(f"{prefix}its directory name {part[:60]}… is {len(part.encode())} bytes, over the "
                        f"{NAME_MAX} a file name holds; shorten the value (a long one can go in a YAML file under "
                        f"--config-dir, picked by its name)")


def print_job_configs(overrides: list[str], multirun: bool, args: list[str]) -> int:
    """``--cfg job|all`` (and ``-p PACKAGE``) with ``-m``, which Hydra refuses: each job's config in turn."""
    from omegaconf import OmegaConf

    from .errors import UserError

    flag = next(i for i, a in enumerate(args) if a in ("-c", "--cfg"))
    which = args[flag + 1] if flag + 1 < len(args) else "job"
    package = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-p", "--package")), None)
    try:
        composed = compose_jobs(overrides, multirun)
    except UserError as e:
        return fail(str(e))
    for prefix, cfg in composed:
        if which != "all" and which != "hydra":
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        elif which == "hydra":
            cfg = OmegaConf.masked_copy(cfg, ["hydra"])
        node = OmegaConf.select(cfg, package) if package else cfg
        print(f"# {prefix.removeprefix('job ').rstrip(': ') or ' '.join(overrides) or 'the default job'}")
        # a leaf (-p seed) prints as its value, as Hydra's own --cfg -p does
        print(OmegaConf.to_yaml(node, resolve=False) if OmegaConf.is_config(node) else f"{node}\n", end="")
    return 0


def preflight(overrides: list[str], multirun: bool) -> str | None:
    """Compose and check every job; the first problem as one line, or None when all is well.

    Composition needs only Hydra; the task layer (and torch) is imported only once every job composes, so
    a typo is reported in about a second.
    """
    from .errors import UserError

    try:
        composed = compose_jobs(overrides, multirun)
    except UserError as e:
        return str(e)
    from .tasks import check, probe_grid
    from .track.run import check_writable
    from .track.wandb_logger import check_settings, explicit_keys

    for prefix, cfg in composed:
        try:
            _check_relative_paths(cfg)
            check(cfg, dict(cfg.hydra.runtime.choices))
            check_settings(cfg.logger, explicit_keys(overrides))
            launch.check(cfg, multirun)
        except UserError as e:
            return prefix + str(e)
    if multirun:  # a single run probes its attention as it starts; a grid, every job before the first
        from .job import check_sweep_job_folder

        for prefix, cfg in composed:
            try:
                subdir = str(cfg.hydra.sweep.subdir)
            except Exception:  # names what only the launcher knows (${hydra.job.num}): checked in the job
                continue
            try:
                check_sweep_job_folder(Path(cfg.hydra.sweep.dir) / subdir, Path(cfg.hydra.sweep.dir), cfg)
            except UserError as e:
                return prefix + str(e)
        try:
            probe_grid(composed)
        except UserError as e:
            return str(e)
    try:
        check_writable(Path(composed[0][1].hydra.sweep.dir if multirun else composed[0][1].hydra.run.dir))
    except UserError as e:
        return str(e)
    return None


DATA_PATH_KEYS = ("path", "root", "image_root")  # the data keys that name files or folders


def _check_relative_paths(cfg: DictConfig) -> None:
    """``hydra.job.chdir=true`` runs the job inside its run directory, where a relative data path names nothing:
    refused before the run exists, with the absolute path to give instead."""
    from .errors import UserError

    if not cfg.hydra.job.get("chdir"):
        return
    for key in DATA_PATH_KEYS:
        value = cfg.data.get(key)
        if isinstance(value, str) and not os.path.isabs(os.path.expanduser(value)):
            raise UserError(f"hydra.job.chdir=true runs the job inside its run directory, where data.{key}={value} "
                            f"names nothing; give it as an absolute path (data.{key}={os.path.abspath(value)})")


def _hydra_task(cfg) -> dict | None:
    """The Hydra task function: one job, in its own run directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .errors import UserError
    from .job import failure_line, run_job, stop_line
    from .signals import Interrupted
    from .track import RunDirectory
    from .track.console import error, interrupted
    from .track.run import claimed

    hc = HydraConfig.get()
    in_sweep = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    run = RunDirectory(hc.runtime.output_dir)
    label = f"job {','.join(overrides)}: " if in_sweep else ""
    if in_sweep and launch.process_rank() == 0:
        from .callbacks import grid_line
        from .track.console import console, fitted

        # not logged: the job's train.log is open already, and a completed job's must stay as it is
        console.print(grid_line(Path(hc.sweep.dir), hc.job.num), soft_wrap=not fitted())
    try:
        with launch.job(cfg, hc):
            return run_job(cfg, run.path, dict(hc.runtime.choices), overrides, in_sweep=in_sweep,
                           hydra_config=hc)
    except Interrupted as e:
        if launch.process_rank() == 0:
            interrupted(stop_line(e, run.path, in_sweep))
        launch.requeue_if_preempted(e.signum)  # a SLURM job: submitit requeues it, and it resumes
        raise SystemExit(128 + e.signum) from None  # the sweep stops too: the user asked to stop
    except UserError as e:
        # training had started: the failed run stays, with its summary (and whatever it trained)
        kept = any(p.exists() for p in (run.summary_path, run.checkpoints, run.metrics_path))
        claim = None if in_sweep else claimed(run.path)
        if not kept and claim is not None:  # refused before training: remove what this command created
            launch.drop_log_file()  # closes train.log
            claim.undo()
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        error(label + (f"{e} (run directory: {run.path})" if kept and not in_sweep else str(e)))
        if in_sweep:
            return None
        raise SystemExit(2) from None
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("attnbench").error("job failed", exc_info=e)  # the traceback goes to train.log
        error(label + failure_line(e, run.path, in_sweep))
        if in_sweep:
            return None
        raise SystemExit(1) from None
    finally:
        launch.drop_log_file()  # the next job's launch line must not land in this job's train.log


def claim_directories(path: Path, multirun: bool) -> str | None:
    """Before Hydra writes anything: a new run takes its run directory (refused when it already holds a run),
    a grid its sweep directory, each locked for this process. The problem as one line, or None.
    Under torchrun rank 0 claims for all ranks."""
    from .engine import distributed
    from .errors import UserError
    from .track import RunDirectory
    from .track.run import Claim

    problem = None
    if launch.process_rank() == 0:
        try:
            value = launch.override_value(str(path))
            if multirun:
                if RunDirectory(path).holds_run():
                    raise UserError(f"hydra.sweep.dir={value} holds a single run, not a grid; give the grid a "
                                    f"directory of its own")
                Claim(path, "sweep").take()
            else:
                if (path / "multirun.yaml").exists():
                    raise UserError(f"hydra.run.dir={value} is the directory of a grid; give the run a directory "
                                    f"of its own (rerun the grid with -m to continue it)")
                if RunDirectory(path).holds_run():
                    raise UserError(_taken(path))
                claim = Claim(path, "run").take()
                if RunDirectory(path).holds_run():  # written meanwhile by a process that has finished
                    claim.release()
                    raise UserError(_taken(path))
        except UserError as e:
            problem = str(e)
    return distributed.broadcast_object(problem) if distributed.current().distributed else problem


def _taken(path: Path) -> str:
    value = launch.override_value(str(path))
    return (f"hydra.run.dir={value} already holds a run, which a new run would mix into; continue that run with "
            f"`attnbench train resume={value}`, or give the new one a fresh directory")


def shell_completion(args: list[str]) -> int:
    """Hydra's shell completion (``-sc install=bash``, then ``-sc query=bash`` at each Tab), for the whole
    ``attnbench`` command: the script Hydra prints registers ``attnbench``, and a query completes the
    subcommand names, then a ``train`` line's overrides as Hydra completes an app's; other commands take
    the shell's own file completion."""
    import hydra

    from .config import register_schemas

    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if any(a.startswith("query=") for a in args) and words:
        typing_command = len(words) == 1 or (len(words) == 2 and not line.endswith(" "))
        if typing_command:
            typed = words[1] if len(words) == 2 else ""
            print(" ".join(c for c in COMMANDS if c.startswith(typed)))
            return 0
        if words[1] != "train":
            print("")
            return 0
        # Hydra strips the program's name from the line: drop the subcommand too, which is no override
        os.environ["COMP_LINE"] = line.replace("train", "", 1)
    register_schemas()
    main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_hydra_task)
    sys.argv = ["attnbench", *(a for a in args if a != "train")]
    main()
    return 0


def train(args: list[str]) -> int:
    import hydra

    from .callbacks import last_sweep
    from .config import register_schemas, renamed_overrides
    from .track.run import release_claims

    if any(a in ("-sc", "--shell-completion") for a in args):
        return shell_completion(args)
    overrides, multirun, informational = _split_args(args)
    renamed, deprecations = renamed_overrides(overrides)
    renamed, more = _episode_overrides(renamed, multirun)
    deprecations += more
    if deprecations:
        from .track.console import deprecated

        for line in deprecations:
            deprecated(line)
        args = [renamed[overrides.index(a)] if a in overrides else a for a in args]
        overrides = renamed
    if any(a.partition("=")[0] in ("-cp", "--config-path", "-cn", "--config-name") for a in args):
        return fail("attnbench train composes its own config.yaml; add your configs with --config-dir DIR "
                    "(or hydra.searchpath=[pkg://my_pkg.conf]) and pick them as group=name")
    missing = [d for d in _config_dirs(args) if not Path(d).expanduser().is_dir()]
    if missing:
        return fail(f"--config-dir {missing[0]}: no such directory")
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume:
        if multirun or len(overrides) > 1:
            return fail("resume=DIR takes no other overrides and no -m: the run continues with its own "
                        "configuration (to resume a sweep, rerun the sweep command)")
        return resume_run(resume[0].split("=", 1)[1])
    if informational and not any(a in ("-h", "--help", "--hydra-help", "--version") for a in args):
        if multirun and any(a in ("-c", "--cfg") for a in args):
            return print_job_configs(overrides, multirun, args)
        from .errors import UserError

        try:  # --cfg, --info, -p on a config that does not compose: one line, as a run would get
            compose_jobs(overrides, multirun)
        except UserError as e:
            return fail(str(e))
    if not informational:
        from .errors import UserError
        from .track.console import info

        try:
            expanded, notes = expand_globs(overrides)
        except UserError as e:
            return fail(str(e))
        for note in notes:
            info(f"note: {note}")
        args = [expanded[overrides.index(a)] if a in overrides else a for a in args]
        overrides = expanded
        problem = preflight(overrides, multirun)
        if problem:
            return fail(problem)
        first = _first_job(overrides, multirun)
        if launch.needs_torchrun(first.trainer.devices, launch.launcher_name(first)):
            launch.start_torchrun(first.trainer.devices, args)  # does not return: this process becomes torchrun
        launch.join_torchrun(first.trainer.device)
        run_dir, sweep_dir = launch.agreed_directories(first)  # resolved once: Hydra writes where we claimed
        problem = claim_directories(Path(sweep_dir if multirun else run_dir), multirun)
        if problem:
            return fail(problem)
        pinned = ("hydra.run.dir=", "hydra.sweep.dir=")
        args = [*(a for a in args if not a.startswith(pinned)), *launch.directory_overrides(run_dir, sweep_dir)]
    if multirun and not informational:
        from .callbacks import GRID_SIZE_ENV

        os.environ[GRID_SIZE_ENV] = str(len(expand_jobs_of(overrides, multirun)))  # "job 2/4" in each job
    register_schemas()
    main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_hydra_task)
    sys.argv = ["attnbench train", *_flags_first(args)]
    last_sweep.clear()
    try:
        main()
    finally:
        release_claims()
    failed = len(last_sweep.get("failed", [])) if launch.process_rank() == 0 else 0  # rank 0 counts for all
    launch.leave()
    return min(failed, 125)


# few-shot steps count episodes: these trainer keys were how they were set before the task: group
EPISODE_KEYS = {"trainer.batch_size": "task.episodes_per_step",
                "trainer.eval_batch_size": "task.eval_episodes_per_batch"}


def _episode_overrides(overrides: list[str], multirun: bool) -> tuple[list[str], list[str]]:
    """On a few-shot data set, ``trainer.batch_size`` (and ``eval_batch_size``) as the task's episode counts,
    with a deprecation line each; elsewhere ``overrides`` as they are."""
    if not any(o.lstrip("+~").split("=", 1)[0] in EPISODE_KEYS for o in overrides):
        return overrides, []
    try:
        family = _first_job(overrides, multirun).task.name
    except Exception:  # does not compose: preflight says why, in one line
        return overrides, []
    if family != "fewshot":
        return overrides, []
    out, warnings = [], []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in EPISODE_KEYS:
            warnings.append(f"few-shot runs read {EPISODE_KEYS[key]}, not {key}; "
                            f"{key}={value} is taken as {EPISODE_KEYS[key]}={value}")
            o = f"{EPISODE_KEYS[key]}={value}"
        out.append(o)
    return out, warnings


def _first_job(overrides: list[str], multirun: bool):
    """The first job's configuration, with its Hydra node (already checked by ``preflight``)."""
    from .config import composer

    with composer() as compose:
        return compose(expand_jobs(compose, overrides, multirun)[0])


def expand_jobs_of(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of every job of the command (already checked by ``preflight``)."""
    from .config import composer

    with composer() as compose:
        return expand_jobs(compose, overrides, multirun)


def _run_config(run_dir: Path):
    """The configuration, group choices and overrides a run directory was made with."""
    from omegaconf import DictConfig, OmegaConf

    from .errors import UserError

    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").exists() or not (hydra_dir / "hydra.yaml").exists():
        raise UserError(f"{run_dir} is not an attnbench run directory (it has no .hydra/config.yaml)")
    cfg = _run_yaml(hydra_dir / "config.yaml")
    if "task" not in cfg:  # its checkpoints follow the seeds and keys of that release, which this one changed
        raise UserError(f"{run_dir} was written by attnbench 0.1, before the task: group; resume or evaluate "
                        f"it with that release, or train it again")
    hydra_cfg = _run_yaml(hydra_dir / "hydra.yaml")
    overrides = _run_yaml(hydra_dir / "overrides.yaml", list) if (hydra_dir / "overrides.yaml").exists() else []
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices")
    if not isinstance(choices, DictConfig) or not all(k in choices for k in ("data", "backbone", "model")):
        raise UserError(f"{hydra_dir / 'hydra.yaml'} does not name the run's data, backbone and model "
                        f"(hydra.runtime.choices): the run's configuration is damaged")
    return cfg, dict(choices), list(overrides)


def _run_yaml(path: Path, kind: type = dict):
    """One file of a run's ``.hydra/``: a mapping (``kind`` list: a list), or one line saying it is damaged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from .errors import UserError

    if not path.is_file():  # a FIFO would block the read for ever
        raise UserError(f"{path} is not a regular file: the run's configuration is damaged; restore it or train "
                        f"the run again")
    try:
        node = OmegaConf.load(path)
    except Exception as e:  # YAML syntax, an unreadable file, interpolation or key errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {first}): the run's configuration is "
                        f"damaged; restore it or train the run again") from None
    if not isinstance(node, DictConfig if kind is dict else ListConfig):
        raise UserError(f"{path} does not hold a {'mapping' if kind is dict else 'list'}: the run's configuration "
                        f"is damaged; restore it or train the run again")
    return node


def resume_run(path: str) -> int:
    """``attnbench train resume=DIR``: everything that could refuse the resume (not a run, completed, no
    checkpoint, a truncated, foreign or incomplete one, another process writing there, a directory this user
    may not write) is checked before anything in the run directory is touched."""
    from .engine import check_resumable
    from .errors import UserError
    from .job import failure_line, fingerprint, run_job, stop_line
    from .signals import Interrupted
    from .track import RunDirectory
    from .track.console import error, info, interrupted
    from .track.run import Claim

    run_dir = Path(path).expanduser()
    claim = None
    log_before: os.stat_result | None | bool = False  # train.log before the resume logged (False: not yet)
    summary_before = None
    try:
        cfg, choices, overrides = _run_config(run_dir)
        devices = cfg.trainer.get("devices", 1)
        if launch.needs_torchrun(devices):
            launch.start_torchrun(devices, [f"resume={path}"])  # the run continues on as many GPUs as it began
        launch.join_torchrun(cfg.trainer.device)
        run = RunDirectory(run_dir)
        if (run.read_summary() or {}).get("status") == "completed":
            info(f"{run_dir} already completed; nothing to resume")
            return 0
        if launch.process_rank() == 0:
            # one writer at a time: refused while another process holds the run, or where this user may not write
            claim = Claim(run_dir, "run", advice="resume writes its checkpoints and summary there").take()
        if (run.read_summary() or {}).get("status") == "completed":  # finished by that other writer
            info(f"{run_dir} already completed; nothing to resume")
            return 0
        run.check_layout()
        if not run.last.exists():
            raise UserError(f"{run_dir} has no checkpoints/last.pt to resume from (it stopped before its first "
                            f"checkpoint); start the run again")
        # a truncated, foreign or incomplete checkpoint is refused here, before the run's log or summary is touched
        check_resumable(run.load_checkpoint(run.last), fingerprint(cfg), run.last)
        if launch.process_rank() == 0:
            log_before = _log_state(run_dir / "train.log")
            summary_before = _read_bytes(run.summary_path)
            handler = logging.FileHandler(run_dir / "train.log")
            logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.INFO)
        run_job(cfg, run_dir, choices, overrides, resume=True)
    except Interrupted as e:
        if launch.process_rank() == 0:
            interrupted(stop_line(e, run_dir, in_sweep=False))
        return 128 + e.signum
    except UserError as e:
        if log_before is not False and _read_bytes(run_dir / "summary.json") == summary_before:
            # refused before training went on (weights that do not fit the model): the run is as it was
            launch.drop_log_file()
            _restore_log(run_dir / "train.log", log_before)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return fail(str(e))
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("attnbench").error("resume failed", exc_info=e)  # the traceback goes to train.log
        error(failure_line(e, run_dir, in_sweep=False))
        return 1
    finally:
        launch.drop_log_file()
        if claim is not None:
            claim.release()
    launch.leave()
    return 0


def _log_state(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _restore_log(path: Path, before: os.stat_result | None) -> None:
    """Take back what a refused resume appended to ``train.log``, its times included (``before`` None: the
    resume made the file)."""
    try:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            os.truncate(path, before.st_size)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError:
        pass


# ---------------------------------------------------------------------------------------- eval


def evaluate_run(args: list[str]) -> int:
    from rich.table import Table

    from .engine import Trainer
    from .errors import UserError
    from .job import fingerprint, open_logger, seed_everything
    from .printable import markup
    from .tasks import build_task
    from .track import Logger, RunDirectory, json_ready
    from .track.console import console, format_value

    parser = CommandParser(prog="attnbench eval", description="The test metrics of a run directory's best "
                           "checkpoint, evaluated again with the run's own configuration (and logged to W&B "
                           "as an eval job when the run's logger is on).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (outputs/runs/<date>/<time>)")
    try:
        run_dir = Path(parser.parse_args(args).run_dir).expanduser()
        cfg, choices, overrides = _run_config(run_dir)
        seed_everything(cfg.seed)
        task = build_task(cfg, choices)
        run = RunDirectory(run_dir)
        trainer = Trainer(cfg.trainer, task, run, Logger(), seed=cfg.seed, fingerprint=fingerprint(cfg))
        trainer.place()
        metrics = trainer.test()
        logger = open_logger(cfg, run, task, choices, overrides, job_type="eval")  # after the test: no run if it fails
        logger.set_summary(json_ready(metrics))
        logger.finish()
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return fail(str(e))
    table = Table(title=markup(f"{run_dir} · best checkpoint"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(markup(name), markup(format_value(value)))
    console.print(table)
    return 0


# ---------------------------------------------------------------------------------------- list


def _describe(path: Path) -> str:
    """The first comment line of a config file: every file in conf/ opens with one saying what it is."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _task_of(conf: Path, data_file: Path) -> str:
    """The task family a data file picks (``override /task@_global_.task: fewshot_resnet12`` -> fewshot):
    read from the files, so the list composes nothing."""
    from omegaconf import DictConfig, OmegaConf

    for entry in OmegaConf.load(data_file).get("defaults", []):
        (key, option), = entry.items() if isinstance(entry, DictConfig) else [("", "")]
        if key.split("@")[0] == "override /task":
            task = OmegaConf.load(conf / "task" / f"{option}.yaml")
            while "name" not in task:  # an option extending another, which its defaults list names first
                task = OmegaConf.load(conf / "task" / f"{task.defaults[0]}.yaml")
            return str(task.name)
    return ""


def list_catalogue(args: list[str]) -> int:
    from omegaconf import OmegaConf
    from rich.table import Table

    from .attention import VARIANTS
    from .plugins import BACKBONE_GROUP, VARIANT_GROUP, entry_points, loaded
    from .printable import markup
    from .tasks import TASKS, family_slots
    from .tasks.build import families_fitting, fits_task
    from .track.console import console

    CommandParser(prog="attnbench list", description="The attention variants (model=), with their slot, the "
                  "task families they fit and their paper; the data sets (data=) and the backbones (backbone=)."
                  ).parse_args(args)
    conf = conf_dir()
    plugins = loaded(VARIANT_GROUP)  # a plugin that does not load costs one warning line, not the list
    variants = Table(title=f"attention variants ({len(VARIANTS) - 1} + none"
                           + (f", {len(plugins)} from plugins)" if plugins else ")"))
    for column in ("model=", "slot", "fits tasks", "source"):
        variants.add_column(column)
    for name, v in {**VARIANTS, **plugins}.items():
        source = f"{v.paper} [plugin {entry_points(VARIANT_GROUP)[name].value}]" if name in plugins else v.paper
        variants.add_row(*map(markup, (name, ", ".join(v.slots) or "-", ", ".join(families_fitting(v, family_slots())),
                                       source)))
    console.print(variants)

    data = Table(title="data sets")
    for column in ("data=", "task", "what it is"):
        data.add_column(column)
    for path in sorted((conf / "data").glob("*.yaml")):
        data.add_row(*map(markup, (path.stem, _task_of(conf, path), _describe(path))))
    console.print(data)

    backbones = Table(title="backbones")
    for column in ("backbone=", "slots", "tasks", "what it is"):
        backbones.add_column(column)
    from .backbones import BACKBONES

    for path in sorted((conf / "backbone").glob("*.yaml")):
        name = OmegaConf.load(path).get("name")
        cls = BACKBONES.get(name)
        tasks = [family for family, task in TASKS.items() if name in task.backbones]
        backbones.add_row(*map(markup, (path.stem, ", ".join(getattr(cls, "slots", ())), ", ".join(tasks),
                                        _describe(path))))
    for name, cls in loaded(BACKBONE_GROUP).items():
        tasks = [family for family, task in TASKS.items() if fits_task(cls, name, task)]
        source = f"plugin {entry_points(BACKBONE_GROUP)[name].value}"
        backbones.add_row(*map(markup, (name, ", ".join(map(str, cls.slots)), ", ".join(tasks), source)))
    console.print(backbones)
    return 0


# ---------------------------------------------------------------------------------------- bench


def benchmark(args: list[str]) -> int:
    from . import bench

    return bench.main(args)


# ---------------------------------------------------------------------------------------- main

def compare_runs(args: list[str]) -> int:
    from .compare import run_compare

    return run_compare(args)


def check_variant(args: list[str]) -> int:
    from . import check_variant

    return check_variant.main(args)


def _one_line(command: Callable[[list[str]], int], args: list[str]) -> int:
    """``command(args)``, its UserError as one line and exit status 2 (``HYDRA_FULL_ERROR=1``: the traceback)."""
    from .errors import UserError

    try:
        return command(args)
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return fail(str(e))


COMMANDS = {"train": train, "eval": evaluate_run, "compare": compare_runs, "list": list_catalogue, "bench": benchmark,
            "check-variant": check_variant}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if args[0] == "--version":
        from . import __version__

        print(f"attnbench {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):  # the completion script calls `attnbench -sc query=bash`
        return shell_completion(args)
    command = COMMANDS.get(args[0])
    if command is None:
        near = difflib.get_close_matches(args[0], list(COMMANDS), n=1)
        return fail(f"unknown command {args[0]!r}" + (f"; did you mean `attnbench {near[0]}`?" if near else "") +
                    " (`attnbench --help` lists the commands)")
    try:
        return _one_line(command, args[1:])
    except KeyboardInterrupt:  # a Ctrl-C outside a job's training (composing, between the jobs of a grid)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print("interrupted: stopped by SIGINT", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``attnbench`` command and ``python -m attnbench``: ``main``, then what the interpreter's own exit
    does first — join the threads and run their exit hooks (joblib's workers), then the exit handlers
    (logging's flush, W&B's) — the output flushed, and an exit that skips the rest: the teardown of torch's
    thousands of modules, 1-3 s after a run has written everything (``exit`` in ``attnbench bench --runs``).
    An exception leaves the ordinary way, with its traceback."""
    import atexit
    import threading

    code = main()
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
