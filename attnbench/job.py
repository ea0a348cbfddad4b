"""One training job: build the task, train, test, and write the run directory, whatever happens.

Used by ``attnbench train`` (a Hydra job, single or one of a sweep) and by ``attnbench train resume=DIR``.
In a sweep, a job that finds its folder already holds a completed run skips it without touching a file, one
with a valid checkpoint resumes from it (however the attempt that wrote it ended), and any other starts
again, so rerunning a sweep command finishes the sweep. Each job holds its folder's lock while it writes.
Under DDP every rank runs the job; rank 0 alone writes the run directory and talks to W&B.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .attention import Attention, attention_parameters
from .data import last_load
from .data.decode import progress_to
from .engine import Interrupted, NonFiniteLoss, Trainer, check_resumable, distributed
from .errors import UserError
from .printable import markup
from .signals import stop_signals
from .tasks import build_task
from .tasks.build import variant_classes
from .track import Logger, RunDirectory, create_logger, explicit_keys, json_ready
from .track.console import console, info, phase, shown, summary_table, warn
from .track.phases import Stopwatch, process_started_at
from .track.run import Claim, claimed, write_hydra_files


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# data keys that say how the images reach the trainer, not what it sees (the cache holds the same pixels, a streamed
# set yields the same batches): a checkpoint resumes whatever they are, and runs from before they existed still do
DATA_DELIVERY = ("cache", "stream", "memory_budget_mb")


def fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must match to be loaded: the data, backbone, model and seed configuration."""
    identity = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "backbone", "model")}
    identity["data"] = {k: v for k, v in identity["data"].items() if k not in DATA_DELIVERY}
    identity["seed"] = cfg.seed
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def group_name(choices: dict[str, str], overrides: list[str]) -> str:
    """The job's configuration without its seed, so the seeds of one setting aggregate."""
    parts = {f"{k}={choices[k]}" for k in ("data", "backbone", "model")}
    parts |= {o for o in overrides if not o.startswith(("seed=", "resume=")) and "=" in o}
    return ",".join(sorted(parts))



# summary.json's top-level figures that W&B's summary holds too (beside every metric, primary and status)
WANDB_SUMMARY_KEYS = ("params", "attention_params", "head_params", "flops_per_sample", "train_samples_per_s",
                      "eval_samples_per_s", "peak_memory_mb", "wall_time_s", "best_epoch", "epochs", "step",
                      "world_size", "device")
# summary.json's phases_s, in the order they happen (see track/phases.py)
PHASES = ("startup", "data", "model", "probe", "setup", "train_steps", "validation", "epoch_records", "test",
          "figures", "cost")
# when the last job of this process ended: a sweep's next job's start-up runs from there (Unix time)
_previous_job_end: float | None = None
# the overrides that name neither a setting nor its folder (as hydra.job.config.override_dirname excludes them)
UNNAMED = ("resume=", "logger.mode=", "trainer.device=", "trainer.devices=")


def run_name(choices: dict[str, str], overrides: list[str]) -> str:
    """The W&B run name: the job's overrides, as a sweep names its job folders; the choices when there are none."""
    named = sorted(o for o in overrides if "=" in o and not o.startswith(UNNAMED))
    return ",".join(named) or ",".join(f"{k}={choices[k]}" for k in ("data", "backbone", "model"))


def open_logger(cfg: DictConfig, run: RunDirectory, task: Any, choices: dict[str, str], overrides: list[str],
                in_sweep: bool = False, run_id: str | None = None, job_type: str = "train") -> Logger:
    """The run's W&B logger (``job_type`` eval: a run of its own beside the training run, in its group).
    Its config is the resolved one plus the group choices (``backbone.name`` is ``resnet`` for four
    backbones) and, in a sweep, the sweep's id and folder, so two sweeps of one configuration can be told
    apart or aggregated."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}
    config["attention"] = attention_flags(task.attention)
    if in_sweep:  # a job folder sits directly in its sweep folder (hydra.sweep.subdir)
        sweep = run.path.resolve().parent
        config["sweep"] = {"id": f"{sweep.parent.name}/{sweep.name}", "dir": str(sweep)}
    name = run_name(choices, overrides)
    return create_logger(cfg.logger, run_dir=run.path, name=name if job_type == "train" else f"{job_type} {name}",
                         job_type=job_type,
                         group=group_name(choices, overrides),
                         tags=[task.family, f"data={choices['data']}", f"backbone={choices['backbone']}",
                               f"model={choices['model']}"],
                         config=config, explicit=explicit_keys(overrides),
                         primary=(f"val/{task.primary}", task.higher_is_better), run_id=run_id)


def _close_logger(logger: Logger, log_checkpoints: str, run: RunDirectory, summary: dict[str, Any]) -> None:
    """W&B's summary gets exactly summary.json's final figures (best-epoch val/*, test/*, the costs), then
    the checkpoints asked for by logger.log_checkpoints, if the run completed."""
    final = json_ready({**summary["metrics"], "primary": summary["primary"], "status": summary["status"],
                         **{k: summary[k] for k in WANDB_SUMMARY_KEYS if k in summary}})
    if "attention" in summary:
        final["attention"] = attention_flags(summary["attention"])
    logger.set_summary(final)
    if summary["status"] == "completed" and log_checkpoints != "none":
        wanted = ("best", "last") if log_checkpoints == "all" else (log_checkpoints,)
        paths = {name: getattr(run, name) for name in wanted if getattr(run, name).exists()}
        if paths:
            logger.log_checkpoints(paths)
    logger.finish(exit_code=0 if summary["status"] == "completed" else 1)


def _previous_run(run: RunDirectory, fingerprint: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """What a sweep job finds in its folder: ``completed`` (left exactly as it is), ``resume`` with the
    checkpoint to resume from, or ``rerun``, with why an existing checkpoint cannot be used.

    A valid ``last.pt`` is resumed whatever ended the attempt that wrote it (an interrupt, a second signal, a
    failure, SIGKILL): it holds the same training a fresh start would redo, so it is never thrown away."""
    summary = run.read_summary()
    if summary is not None and summary.get("status") == "completed":
        return "completed", None, None
    if not run.last.exists():
        return "rerun", None, None
    try:
        checkpoint = run.load_checkpoint(run.last)
        check_resumable(checkpoint, fingerprint, run.last)
    except UserError as e:
        return "rerun", None, str(e)
    return "resume", checkpoint, None


def check_sweep_job_folder(job_dir: Path, sweep_dir: Path, cfg: DictConfig) -> None:
    """Refuse a grid job's folder (``hydra.sweep.subdir``) outside its sweep folder, or one holding a run of
    another configuration: a job clears a folder it cannot resume, and it must never be another run's."""
    job, sweep = Path(job_dir).resolve(), Path(sweep_dir).resolve()
    if job == sweep or sweep not in job.parents:
        raise UserError(f"the grid job folder {job_dir} is not inside the sweep folder {sweep_dir}; "
                        f"hydra.sweep.subdir must name a folder below hydra.sweep.dir")
    config_path = RunDirectory(job).config_path
    if not config_path.exists():
        return
    try:
        theirs = fingerprint(OmegaConf.load(config_path))
    except Exception:  # unreadable, or not an attnbench configuration: not this job's either
        theirs = None
    if theirs != fingerprint(cfg):
        raise UserError(f"the grid job folder {job_dir} holds a run of another configuration; it was left as it "
                        f"is: give the grid another hydra.sweep.dir (or hydra.sweep.subdir)")


def _claim_sweep_job(run: RunDirectory, fingerprint: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """``_previous_run``, decided under the job folder's lock (taken unless the job is completed, which is
    only read): ``("refused", None, why)`` while another process writes there."""
    if (run.read_summary() or {}).get("status") == "completed":
        return "completed", None, None
    try:
        claim = Claim(run.path, "run").take()
    except UserError as e:
        return "refused", None, str(e)
    found = _previous_run(run, fingerprint)
    if found[0] == "completed":
        claim.release()
    return found


def _clear(run: RunDirectory) -> None:
    """Remove what an earlier attempt without a usable checkpoint left, so the rerun starts clean."""
    for path in (run.metrics_path, run.summary_path):
        path.unlink(missing_ok=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    shutil.rmtree(run.figures, ignore_errors=True)


def _writes_summary(error: BaseException | None, training: bool, resume: bool, in_sweep: bool) -> bool:
    """Whether the job's end is recorded in summary.json. Always once training has started. Before it: a
    resume leaves the summary it found (nothing was continued), and a new single run refused for a user
    error leaves nothing at all (the CLI removes what it created); a sweep records every job's end."""
    if error is None or training:
        return True
    if resume:
        return False
    return in_sweep or not isinstance(error, UserError)


def run_job(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str], *,
            in_sweep: bool = False, resume: bool = False, hydra_config: DictConfig | None = None) -> dict[str, Any]:
    """``hydra_config``: the job's Hydra node, written to ``.hydra/`` with the config and overrides once the job
    is known to run in ``run_dir`` (a sweep job found completed is skipped without writing anything)."""
    global _previous_job_end
    job_started = time.time()
    run = RunDirectory(run_dir)
    world = distributed.current()
    checkpoint = None
    if in_sweep:
        if world.main and hydra_config is not None:
            check_sweep_job_folder(run.path, Path(hydra_config.sweep.dir), cfg)
        found, checkpoint, why = _claim_sweep_job(run, fingerprint(cfg)) if world.main else (None, None, None)
        found, why = distributed.broadcast_object((found, why))  # rank 0 decides
        if found == "completed":
            # not logged: train.log stays
            console.print(markup(f"{run_dir}: already completed, skipped"), soft_wrap=True)
            return run.read_summary() or {}
        if found == "refused":
            raise UserError(why)
        if why:
            warn(f"{why}; the job starts again")
        if found == "rerun" and world.main:
            _clear(run)
        resume = found == "resume"
    try:
        return _run(cfg, run, choices, overrides, in_sweep=in_sweep, resume=resume, checkpoint=checkpoint,
                    hydra_config=hydra_config, job_started=job_started)
    finally:
        claim = claimed(run.path) if in_sweep else None
        if claim is not None:
            claim.release()
        _previous_job_end = time.time()


def _timing(watch: Stopwatch, trainer: Trainer | None, job_started: float) -> dict[str, Any]:
    """summary.json's ``phases_s`` (in the order of PHASES) and ``timeline`` (Unix times)."""
    seconds = {**watch.seconds, **(trainer.stopwatch.seconds if trainer else {})}
    return {"phases_s": {name: seconds[name] for name in PHASES if name in seconds},
            "timeline": {"process_started": process_started_at(), "job_started": job_started,
                         "train_steps": [list(w) for w in trainer.training_peak.windows] if trainer else []}}


def _run(cfg: DictConfig, run: RunDirectory, choices: dict[str, str], overrides: list[str], *, in_sweep: bool,
         resume: bool, checkpoint: dict[str, Any] | None, hydra_config: DictConfig | None,
         job_started: float) -> dict[str, Any]:
    world = distributed.current()
    watch = Stopwatch()
    # start-up: from the process's start (imports, Hydra) or, in a sweep, the previous job's end
    since = _previous_job_end or process_started_at()
    if since is not None:
        watch.add("startup", max(job_started - since, 0.0))
    run_dir = run.path
    if hydra_config is not None and world.main:
        write_hydra_files(run.path, cfg, hydra_config, overrides)
    started = time.perf_counter()
    previous = run.read_summary() if resume else None
    summary: dict[str, Any] = {
        "status": "running", "task": cfg.task.name, "data": choices["data"], "backbone": choices["backbone"],
        "model": choices["model"], "seed": cfg.seed, "overrides": overrides,
        "flops_per_sample": None, "eval_samples_per_s": None,
    }
    logger = trainer = task = None
    training = False  # fit() was entered: from here on every ending is recorded
    error: BaseException | None = None
    with stop_signals() as guard:
        try:
            with guard.interruptible():
                seed_everything(cfg.seed)
                info(recipe_line(cfg, choices))
                loaded_before = last_load()
                with phase(f"preparing data={choices['data']}, backbone={choices['backbone']}, "
                           f"model={choices['model']}") as show, progress_to(show):
                    built = time.perf_counter()
                    task = build_task(cfg, choices)
                    loaded = last_load()
                    if loaded is not loaded_before:  # "data ready in 0.4 s (cached 60,000 images)"
                        watch.add("data", loaded.seconds)
                        info(loaded.line())
                    # the model's share: what the data loader and the probe pass did not take
                    watch.add("model", time.perf_counter() - built - watch.seconds.get("data", 0.0) - task.probe_s)
                    watch.add("probe", task.probe_s)
                setup_started = time.perf_counter()
                summary["attention"] = task.attention
                summary["test_items"] = task.test_items()
                announce_attention(task.attention)
                if resume and checkpoint is None:
                    checkpoint = run.load_checkpoint(run.last)
                if checkpoint is not None:
                    check_resumable(checkpoint, fingerprint(cfg), run.last)
                logger = open_logger(cfg, run, task, choices, overrides, in_sweep,
                                     checkpoint.get("wandb_id") if checkpoint else None) if world.main else Logger()
                trainer = Trainer(cfg.trainer, task, run, logger, seed=cfg.seed, fingerprint=fingerprint(cfg))
                trainer.cost_hint = cost_hint(cfg, task)
                trainer.setup(checkpoint)
                if world.main:
                    task.save_artifacts(run.path)
                if checkpoint is not None:
                    info(f"resuming {run_dir} at epoch {trainer.state.epoch}, step {trainer.state.step}")
                watch.add("setup", time.perf_counter() - setup_started)  # W&B, placing the model, artifacts
                training = True
                trainer.fit()
                # test, figures and cost count to evaluation's memory: peak_memory_mb is the training steps'
                with trainer.evaluation_peak:
                    with phase("testing the best checkpoint"), watch("test"):
                        trainer.test()
                    if world.main:  # pictures, inference timing and W&B media: rank 0 alone, the others are done
                        nothing = None if getattr(task, "draws_without_maps", False) else nothing_to_draw(
                            task.attention, choices["model"])
                        figures = {}
                        if nothing:
                            info(nothing)
                        else:
                            with phase("drawing attention figures"), watch("figures"):
                                figures = task.figures(task.model, run.figures)
                                # under figures/: the summary's `attention` is the attention record
                                logger.log_images({f"figures/{k}": p for k, p in figures.items()},
                                                  step=trainer.state.step)
                            if not figures:
                                info(f"no attention figure: model={choices['model']} recorded no map to draw")
                        with phase("measuring inference cost (FLOPs, samples/s)"), watch("cost"):
                            summary.update(**trainer.inference_cost(),
                                           figures=sorted(str(p) for p in figures.values()))
                notes = task.notes()  # why a metric is null in this run (task base: none)
                if not all(issubclass(cls, Attention) for cls in variant_classes(cfg.model)):
                    notes["attention"] = (f"model={choices['model']} is a plain nn.Module, not an attnbench "
                                          f"Attention: it reports no attention diagnostics (entropy, pictures, "
                                          f"auxiliary losses); attention_params counts its modules' parameters")
                if notes:
                    summary["notes"] = notes
        except BaseException as e:
            error = e
            raise
        finally:
            # whatever ended the job is recorded; a signal that arrives meanwhile waits until it is (outside
            # ``interruptible`` the guard only notes it)
            guard.open = 0
            _record_end(summary, error, trainer, task, started, previous)
            summary.update(_timing(watch, trainer, job_started))
            if world.main and _writes_summary(error, training, resume, in_sweep):
                try:
                    run.write_summary(summary)
                except OSError as e:  # a full disk: the error that stopped the run is the one to report
                    if error is None:
                        raise
                    logging.getLogger("attnbench").error(f"summary.json could not be written: {e}")
            if logger is not None:
                with guard.interruptible():  # a Ctrl-C may cut a W&B upload that hangs
                    _close_logger(logger, cfg.logger.log_checkpoints, run, summary)
            if not isinstance(error, Interrupted):
                guard.raise_deferred()  # a stop asked for while the end was recorded: the sweep stops too
    console.print(summary_table(summary))
    info(f"run directory: {shown(run_dir)}")
    info(f"{summary['primary']['name']} = {summary['primary']['value']:.4f}")
    return summary


def recipe_line(cfg: DictConfig, choices: dict[str, str]) -> str:
    """The training recipe the run follows, in one line, so that a change of ``data=`` (which picks a data set's
    own trainer option) never changes the schedule, batch or augmentation unseen:
    ``recipe: trainer=cifar, 60 epochs, batch 128, sgd lr 0.1, crop_pad=4 flip``."""
    t = cfg.trainer
    augmentation = [f"{k}={cfg.data[k]}" for k in ("crop_pad",) if cfg.data.get(k)]
    augmentation += [k for k in ("flip", "test_flip") if cfg.data.get(k)]
    episodes = f", episodes_per_step {cfg.task.episodes_per_step}" if "episodes_per_step" in cfg.task else \
        f", batch {t.batch_size}"
    epochs = f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}"
    return (f"recipe: trainer={choices.get('trainer', 'default')}, {epochs}{episodes}, {t.optimizer} lr {t.lr:g}, "
            f"{' '.join(augmentation) or 'no augmentation'}")


def cost_hint(cfg: DictConfig, task: Any) -> str:
    """What a long run's time most likely comes from and the setting that changes it, in words a user can
    type: the image side (and the positions each attention map weighs), the sequence length, else the
    schedule."""
    positions = max((m["over"].get("positions", 0) for m in task.attention["modules"]), default=0)
    over = f", attention over {positions} positions per map" if positions >= 256 else ""
    if "image_size" in cfg.data:
        batch, _ = task.example_batch(limit=1)
        fields = vars(batch).values() if hasattr(batch, "__dict__") else [batch]
        side = next((t.shape[-1] for t in fields if isinstance(t, torch.Tensor) and t.dim() >= 4), None)
        if side is not None and side > 32:
            return f"{side}×{side} images{over}: data.image_size={side // 2} makes steps about 4× cheaper"
    if "max_len" in cfg.data and cfg.data.max_len:
        return f"texts of up to {cfg.data.max_len} tokens: a smaller data.max_len makes steps cheaper"
    return f"{cfg.trainer.epochs} epochs: fewer (trainer.epochs=…) or less data shortens it"


def nothing_to_draw(record: dict[str, Any], model: str) -> str | None:
    """The line a run prints instead of drawing figures when its attention has no map to draw (no module,
    or only weights over channels, which have no place in the image); None when there may be one."""
    modules = record["modules"]
    if not modules:
        return f"no attention figures: model={model} has no attention module"
    if all(m["over"] and set(m["over"]) <= {"channels"} for m in modules):  # {}: a module that does not say
        return f"no attention figures: model={model} weighs channels, not places in the input"
    return None


def announce_attention(record: dict[str, Any]) -> None:
    """The run's first line about its attention, and a warning when it weighs nothing or reduces."""
    info(f"attention: {record['summary']}")
    if record["degenerate"]:
        warn(f"running anyway (allow_degenerate=true), marked degenerate: {record['degenerate']}")
    if record["reduced"]:
        warn(record["reduced"])


def attention_flags(record: dict[str, Any]) -> dict[str, Any]:
    """What W&B keeps of the attention record: its line and its two marks (the per-module list stays in
    summary.json)."""
    return {"summary": record["summary"], "params": record["params"],
            "degenerate": record["degenerate"] is not None, "reduced": record["reduced"]}


def _attention_params(task: Any) -> int:
    """The attention record's count when the run has one: it finds the variant's modules by their classes,
    so a plain nn.Module plug-in counts too (``attention_parameters`` finds attnbench Attention modules only)."""
    record = getattr(task, "attention", None)
    return record["params"] if isinstance(record, dict) and "params" in record else attention_parameters(task.model)


def _head_parameters(model: torch.nn.Module) -> int | None:
    """The output layer's parameters (``model.head``: classification and rating), which a widened pool readout
    widens too; None for tasks whose output is not one layer over the backbone's vector."""
    head = getattr(model, "head", None)
    return sum(p.numel() for p in head.parameters()) if isinstance(head, torch.nn.Module) else None


def _record_end(summary: dict[str, Any], error: BaseException | None, trainer: Trainer | None, task: Any,
                started: float, previous: dict[str, Any] | None) -> None:
    """The summary's status, error and measurements for a job that ended with ``error`` (None: completed)."""
    if error is None:
        summary["status"] = "completed"
    elif isinstance(error, Interrupted):
        summary.update(status="interrupted", error=str(error))
    elif isinstance(error, NonFiniteLoss):
        summary.update(status="failed", error=str(error), hint=error.hint)
    else:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        summary.update(status="failed", error=message, error_type=type(error).__name__)
    summary.update(_measurements(trainer, task, started, previous))
    if isinstance(error, NonFiniteLoss):
        summary["step"] = error.step  # where the loss broke, not where the window of losses was read


def failure_line(e: BaseException, run_dir: Path, in_sweep: bool) -> str:
    """The one line an unexpected failure inside a run ends with: the run directory, what went wrong, what to
    do, and where the traceback is."""
    import errno

    kept = (run_dir / "checkpoints" / "last.pt").exists()
    again = "run the same command again" if in_sweep else \
        f"continue with `attnbench train resume={run_dir}`" if kept else "start it again in a fresh directory"
    kept_line = "its last checkpoint is kept" if kept else "it had no checkpoint yet"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" while writing {e.filename}" if e.filename else ""
        return f"{run_dir}: the disk is full (no space left{where}); {kept_line}: free some space, then {again}"
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = e.filename or run_dir
        return (f"{run_dir}: cannot write {what} ({e.strerror}); {kept_line}: make the run directory writable, "
                f"then {again}")
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (f"{run_dir} failed: {type(e).__name__}{': ' + message if message else ''} (status failed in its "
            f"summary.json; the traceback is in {run_dir / 'train.log'}, HYDRA_FULL_ERROR=1 prints it)")


def stop_line(e: BaseException, run_dir: Path, in_sweep: bool) -> str:
    """The line a stopped run ends with: how it stopped, what it kept, how to continue it."""
    again = "run the same command again to continue the sweep" if in_sweep else \
        f"continue with `attnbench train resume={run_dir}`"
    if getattr(e, "saved", False):
        summary = RunDirectory(run_dir).read_summary() or {}
        at = f" at step {summary['step']} ({summary['epochs']} epochs done)" if "step" in summary else ""
        return f"{run_dir}: {e}, checkpoint {run_dir / 'checkpoints' / 'last.pt'} saved{at}: {again}"
    if (run_dir / "checkpoints" / "last.pt").exists():
        return f"{run_dir}: {e}; its last checkpoint is kept: {again}"
    fresh = "run the same command again (the job starts from the beginning)" if in_sweep else \
        "start it again in a fresh directory"
    return f"{run_dir}: {e}, before its first checkpoint: {fresh}"


def _measurements(trainer: Trainer | None, task: Any, started: float,
                  previous: dict[str, Any] | None) -> dict[str, Any]:
    """The figures every summary carries, as far as the run got."""
    metrics = dict(trainer.metrics) if trainer else {}
    primary = f"test/{task.primary}" if task else None
    out: dict[str, Any] = {
        "primary": {"name": primary, "value": metrics.get(primary) if primary else None,
                    "higher_is_better": task.higher_is_better if task else None},
        "metrics": metrics,
        "params": sum(p.numel() for p in task.model.parameters()) if task else None,
        "attention_params": _attention_params(task) if task else None,
        "head_params": _head_parameters(task.model) if task else None,
    }
    if trainer is not None:
        out.update(trainer.training_cost())
        out.update(epochs=trainer.state.epoch, step=trainer.state.step, best_epoch=trainer.state.best_epoch,
                   device=str(trainer.device), wandb_id=trainer.logger.run_id if trainer.logger else None)
    out["wall_time_s"] = time.perf_counter() - started + ((previous or {}).get("wall_time_s") or 0.0)
    out["versions"] = {"attnbench": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    return out
