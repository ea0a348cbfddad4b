"""The training loop: optimiser, schedule, precision, compile, evaluation, checkpoints, resume, signals.

The loop never synchronises with the device inside a step: losses stay on the device and are read every
``trainer.log_every`` steps and at the end of each epoch, which is also where a non-finite loss is caught.

Under DistributedDataParallel (``distributed.py``) every rank trains on its shard of each global batch and
gradients are all-reduced in the backward pass; the ranks read their losses together (averaged over the
ranks), so they see a non-finite loss or a stop signal at the same step. Every rank validates on the whole
split with rank 0's buffers, so all compute the same numbers without waiting for each other; rank 0 alone
writes metrics, checkpoints and W&B.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from ..attention import aux_losses
from ..config import Precision, TrainerConfig
from ..errors import UserError
from ..seeds import mixed_seed
from ..signals import Interrupted, StopSignals, stop_signals
from ..track import Logger, RunDirectory
from ..track.console import TrainingProgress, duration, info, warn
from ..track.phases import Stopwatch
from . import distributed
from .cost import MemoryPeak, leading
from .optim import build_optimizer, build_schedule
from .protocol import Task

REFRESH_S = 1.0  # longest wait between progress-bar updates, whatever trainer.log_every is
FLOP_SAMPLES = 8  # a sample's FLOPs do not depend on how many share its batch: a few samples count them
# how long the FLOP count and the inference timing take together: 3% of the training time, within these bounds
COST_SHARE, COST_MIN_S, COST_MAX_S = 0.03, 0.25, 2.0


class NonFiniteLoss(UserError):
    def __init__(self, value: float, step: int, hint: str) -> None:
        super().__init__(f"the loss became {value} at step {step}: {hint}")
        self.step, self.hint = step, hint


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch
    step: int = 0  # optimisation steps completed
    best_value: float | None = None
    best_epoch: int | None = None
    epoch_loss: float = 0.0  # sum of the losses of the batches done in the current epoch
    epoch_aux: dict[str, float] = field(default_factory=dict)  # same for each auxiliary loss


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"trainer.device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name} but no CUDA device is visible; use trainer.device=auto or cpu")
        if device.index is None:  # the current GPU: a DDP rank's own, or the one a joblib sweep pinned the job to
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(fn: Callable[[], Any]) -> float | None:
    """FLOPs torch's counter finds in one call (matrix products, convolutions, attention); None when it cannot
    trace an operator, rather than a failed run.

    Counted with autograd on: the counter's module tracker cannot follow a parameter's view made under
    ``no_grad`` (a learned query expanded over the batch) and would give no figure for those variants. The
    caller keeps the batch small (``FLOP_SAMPLES``), so the activations autograd keeps cost nothing.
    """
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except Exception:
        return None
    return float(counter.get_total_flops())


# what loading a damaged or hand-made checkpoint's entries raises (a missing entry, a wrong shape or type)
LOAD_ERRORS = (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError)


def _does_not_fit(path: Any, e: BaseException, advice: str) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"checkpoint {path} does not fit this run ({type(e).__name__}: {first}); {advice}")


def check_fingerprint(checkpoint: dict[str, Any], fingerprint: str, path: Any) -> None:
    """Refuse a checkpoint written by another configuration (its weights would not fit, or not mean the same)."""
    if not isinstance(checkpoint, dict) or checkpoint.get("fingerprint") != fingerprint:
        raise UserError(f"checkpoint {path} comes from another configuration (data, backbone, model or seed "
                        f"differ); use it only with the run that wrote it, or start a new run")


# what ``Trainer._checkpoint`` writes and ``Trainer.restore`` reads, entry by entry
RESUME_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optimizer": dict, "schedule": dict, "rng": dict, "task": dict, "state": dict,
    "train_time": (int, float), "train_samples": int, "fingerprint": str}


def check_resumable(checkpoint: dict[str, Any], fingerprint: str, path: Any) -> None:
    """Refuse, before anything is written, a ``last.pt`` a resume could not use: another configuration's, or
    one missing an entry the trainer restores (a damaged or hand-made file)."""
    check_fingerprint(checkpoint, fingerprint, path)
    missing = [k for k, kind in RESUME_ENTRIES.items() if not isinstance(checkpoint.get(k), kind)]
    state = checkpoint.get("state")
    if isinstance(state, dict):
        missing += [f"state.{k}" for k in TrainState.__dataclass_fields__ if k not in state]
        missing += [f"state.{k} (unknown)" for k in state if k not in TrainState.__dataclass_fields__]
    rng = checkpoint.get("rng")
    if isinstance(rng, dict) and not isinstance(rng.get("torch"), Tensor):
        missing.append("rng.torch")
    if missing:
        raise UserError(f"checkpoint {path} cannot be resumed: it lacks {', '.join(missing)} (it was damaged or "
                        f"not written by attnbench's trainer); start the run again in a fresh directory")


LONG_RUN_S = 600.0  # a run estimated to take longer says so, with its cause, before it trains on
FORWARD_SHARE = 1 / 3  # an evaluation pass over a sample against a training step's (forward and backward)


class RunClock:
    """What is left of a run: the training steps at the measured time of a step, each validation left and
    the test at the measured time of a validation. Before the first validation, a split is taken to cost a
    third of a training epoch per sample (forward only), times its size against the training split's
    (``Task.eval_share``); the test, the validation's time times their sizes."""

    def __init__(self, task: Task, epochs: int, steps_per_epoch: int) -> None:
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.shares = {split: getattr(task, "eval_share", lambda _: None)(split) for split in ("val", "test")}
        self.step_s: float | None = None
        self.validation_s: float | None = None

    def _evaluation_s(self, split: str) -> float:
        val, share = self.shares["val"], self.shares[split]
        if self.validation_s is not None:
            return self.validation_s * (share / val if split == "test" and share and val else 1.0)
        epoch_s = (self.step_s or 0.0) * self.steps_per_epoch
        return epoch_s * FORWARD_SHARE * (share if share is not None else (val or 0.0))

    def left(self, step: int, epochs_done: int) -> float | None:
        """Seconds left after ``step`` with ``epochs_done`` validations done; None before a step is timed."""
        if self.step_s is None:
            return None
        steps_left = self.epochs * self.steps_per_epoch - step
        return (steps_left * self.step_s + (self.epochs - epochs_done) * self._evaluation_s("val")
                + self._evaluation_s("test"))


def epoch_line(metrics: dict[str, float]) -> str:
    """The metrics of an epoch grouped by split, each split named once, four significant digits, so that the
    line fits 80 columns: ``train loss 2.294  val acc 0.1333 loss 2.265 entropy 3.448`` (metrics.jsonl keeps
    every digit)."""
    splits: dict[str, list[str]] = {}
    for name, value in metrics.items():
        split, _, metric = name.partition("/")
        splits.setdefault(split, []).append(f"{metric} {value:.4g}")
    return "  ".join(f"{split} {' '.join(values)}" for split, values in splits.items())


class Trainer:
    def __init__(self, cfg: TrainerConfig, task: Task, run: RunDirectory, logger: Logger, *, seed: int,
                 fingerprint: str) -> None:
        self.cfg, self.task, self.run, self.logger = cfg, task, run, logger
        self.seed, self.fingerprint = seed, fingerprint
        self.world = distributed.current()
        self.device = resolve_device(cfg.device)
        if self.world.distributed and self.device.type == "cuda" and self.device.index != torch.cuda.current_device():
            raise UserError(f"trainer.device={cfg.device}: under DDP each rank trains on the GPU of its LOCAL_RANK; "
                            f"use trainer.device=auto or cuda")
        self.dtype = autocast_dtype(cfg.precision, self.device)
        self.state = TrainState()
        self.metrics: dict[str, float] = {}  # the latest evaluation of each split, keyed "split/name"
        self.train_time = 0.0  # seconds of training steps after warm-up, over all segments of the run
        self.train_samples = 0
        self._flushed = time.perf_counter()  # when the losses were last read (the progress bar's last move)
        self._warm = False  # this process has run its warm-up steps (compilation, allocator, cudnn search)
        self._step_loss: float | None = None  # the mean loss of the steps last read (step/loss)
        self._step_logged = 0  # the step step/loss was last logged at
        self.cost_hint = ""  # what makes this run slow and the setting that changes it (the job says)
        self.clock: RunClock | None = None
        self.stopwatch = Stopwatch()  # train_steps, validation, epoch_records: where fit's time goes
        # memory of the training steps (every epoch's), and of evaluation (validation; the job adds test and
        # the cost measurement); each also keeps the Unix times of its blocks
        self.training_peak = MemoryPeak(self.device)
        self.evaluation_peak = MemoryPeak(self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        elif cfg.deterministic and cfg.compile:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif cfg.deterministic:
            # what the public call does less its import of inductor's config (seconds of start-up), which it
            # makes only to tell compiled code, and nothing here compiles
            torch._C._set_deterministic_algorithms(True, warn_only=True)

    # ------------------------------------------------------------------ setup and checkpoints

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's mixed precision (bf16 autocast on CUDA by default), for a forward pass outside ``fit``."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _rank_state(self) -> dict[str, Any]:
        """This rank's random streams (augmentation, dropout, sampling): each DDP rank has its own."""
        return {"rng": {"torch": torch.get_rng_state(),
                        "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else []},
                "task": self.task.state_dict()}

    def _checkpoint(self) -> dict[str, Any]:
        """Everything a resume needs; under DDP every rank takes part (the random streams of all ranks)."""
        ranks = distributed.all_gather_object(self._rank_state()) if self.world.distributed else None
        return {
            "model": self.task.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "task": self.task.state_dict(),
            "state": asdict(self.state),
            "train_time": self.train_time,
            "train_samples": self.train_samples,
            "wandb_id": self.logger.run_id,
            "fingerprint": self.fingerprint,
            **({"ranks": ranks} if ranks else {}),
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        check_resumable(checkpoint, self.fingerprint, self.run.last)
        try:
            self._restore(checkpoint)
        except LOAD_ERRORS as e:
            raise _does_not_fit(self.run.last, e, "start the run again in a fresh directory") from e

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.task.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        ranks = checkpoint.get("ranks", [])
        if self.world.rank < len(ranks):  # written by DDP: this rank's own streams
            own = ranks[self.world.rank]
            torch.set_rng_state(own["rng"]["torch"])
            if own["rng"]["cuda"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(own["rng"]["cuda"][0], self.device)
            self.task.load_state_dict(own["task"])
        elif self.world.main:  # written by one process
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if checkpoint["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
            self.task.load_state_dict(checkpoint["task"])
        # the other ranks of a run resumed on more processes than wrote the checkpoint keep their fresh streams
        self.state = TrainState(**checkpoint["state"])
        self.train_time, self.train_samples = checkpoint["train_time"], checkpoint["train_samples"]
        if self.world.main:
            self.run.truncate_metrics(self.state.step)  # records after the checkpoint are replayed

    def save_last(self) -> None:
        checkpoint = self._checkpoint()
        if self.world.main:
            self.run.save_checkpoint(self.run.last, checkpoint)

    # ------------------------------------------------------------------ the loop

    def place(self) -> None:
        """Put the task on the device, in the memory format and (compiled or not) form it will run in.

        ``eval_model`` is what evaluation and inference run; ``forward_model`` is what training runs: the same
        under one process, the DistributedDataParallel wrapper under DDP (only its forward all-reduces
        gradients; tasks are free to call any method of ``eval_model`` when they evaluate).
        """
        if self.world.distributed:
            self._shard()
        self.task.to(self.device)
        model = self.task.model
        if self.device.type == "cuda" and self.cfg.channels_last and self.task.convolutional:
            model.to(memory_format=torch.channels_last)
        self.eval_model = torch.compile(model) if self.cfg.compile else model
        self.forward_model = self.eval_model
        if self.world.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True,
                                              find_unused_parameters=self.cfg.find_unused_parameters)
            self.forward_model = torch.compile(wrapped) if self.cfg.compile else wrapped  # DDP first: overlap kept

    def _shard(self) -> None:
        """This rank's part of every global batch, its own random streams, and SyncBatchNorm if asked."""
        world = self.world
        if self.task.batch_size % world.size:
            raise UserError(f"{self.task.batch_key}={self.task.batch_size} does not split evenly over {world.size} "
                            f"processes; make the global batch a multiple of {world.size}")
        if self.cfg.sync_batchnorm:
            if self.device.type != "cuda":
                raise UserError("trainer.sync_batchnorm=true needs CUDA (SyncBatchNorm has no CPU kernel); "
                                "leave it false when training on the CPU")
            self.task.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.task.model)
        self.task.shard(world.rank, world.size)
        # dropout and stochastic attention draw differently on each rank; the weights are the same on all
        # ranks anyway (built from one seed, and DDP broadcasts rank 0's at wrapping)
        torch.manual_seed(mixed_seed(self.seed, world.rank))

    def setup(self, resume_from: dict[str, Any] | None = None) -> None:
        """``place`` plus optimiser and schedule, restored from a checkpoint when resuming."""
        self.place()
        self.optimizer = build_optimizer(self.cfg, self.task.model, self.device)
        self.schedule = build_schedule(self.cfg, self.optimizer, self.task.steps_per_epoch())
        if resume_from is not None:
            self.restore(resume_from)

    def fit(self) -> None:
        """Train from ``self.state`` to the last epoch, evaluating on val after every epoch."""
        cfg, task, watch = self.cfg, self.task, self.stopwatch
        steps_per_epoch = task.steps_per_epoch()
        self.clock = clock = RunClock(task, cfg.epochs, steps_per_epoch)
        first_step = self.state.step
        with stop_signals(polling=True) as stop, TrainingProgress(cfg.epochs * steps_per_epoch, cfg.epochs) as bar:
            for number, epoch in enumerate(range(self.state.epoch, cfg.epochs), 1):
                with watch("train_steps"), self.training_peak:
                    train_metrics = self.train_epoch(epoch, stop, bar)
                clock.step_s = watch.seconds["train_steps"] / max(self.state.step - first_step, 1)
                distributed.broadcast_buffers(self.task.model)
                bar.doing("validating")
                with watch("validation"), self.evaluation_peak:
                    val = self.evaluate("val")
                bar.doing("")
                clock.validation_s = watch.seconds["validation"] / number
                self.state.epoch, self.state.batch = epoch + 1, 0
                with watch("epoch_records"):  # metrics file, W&B, best.pt and last.pt
                    self._record(epoch, train_metrics, val)
                    self.save_last()
                signum = self._stop_requested(stop, at_sync=True)  # arrived during validation
                if signum is not None:
                    raise Interrupted(signum, saved=True)

    def train_epoch(self, epoch: int, stop: StopSignals, bar: TrainingProgress) -> dict[str, float]:
        """One epoch of training steps from ``state.batch`` (bench times it against a bare loop)."""
        model, task = self.task.model, self.task
        model.train()
        warmup_left = 0 if self._warm else 5  # steps excluded from the throughput figure
        window: list[Tensor] = []  # losses since the last sync, still on the device
        # running sums of the epoch, carried over from a checkpoint saved in the middle of it
        loss_sum = torch.tensor(self.state.epoch_loss, device=self.device)
        aux_sum = {k: torch.tensor(v, device=self.device) for k, v in self.state.epoch_aux.items()}
        synchronize(self.device)
        started, samples = time.perf_counter(), 0
        timing: list[float] = []  # the ends of the run's first steps, until a step's time is known
        epoch_first_step = self.state.step + 1
        for batch in task.train_batches(epoch, self.state.batch):
            total, extra, size = self.train_step(batch)
            self.state.step += 1
            self.state.batch += 1
            if self.clock is not None and self.clock.step_s is None:
                self._time_first_steps(timing, epoch)
            window.append(total)
            loss_sum += total
            for name, value in extra.items():
                aux_sum[name] = aux_sum.get(name, 0) + value.detach()
            if warmup_left:
                warmup_left -= 1
                if not warmup_left:
                    synchronize(self.device)
                    started, samples, self._warm = time.perf_counter(), 0, True
            else:
                samples += size
            # the bar also moves every REFRESH_S on a slow model; under DDP the ranks must sync at the same
            # steps, which only a step count guarantees
            at_sync = self.state.step % self.cfg.log_every == 0 or (
                not self.world.distributed and time.perf_counter() - self._flushed >= REFRESH_S)
            if at_sync:
                self._flush(window, epoch, bar, samples / max(time.perf_counter() - started, 1e-9))
            signum = self._stop_requested(stop, at_sync)
            if signum is not None:
                names = sorted(aux_sum)
                sums = distributed.reduce(torch.stack([loss_sum.float(), *(aux_sum[n].float() for n in names)]))
                self.state.epoch_loss, *aux = sums.tolist()
                self.state.epoch_aux = dict(zip(names, aux))
                self.save_last()
                raise Interrupted(signum, saved=True)
        self._flush(window, epoch, bar, samples / max(time.perf_counter() - started, 1e-9))
        if self._step_logged < epoch_first_step and self._step_loss is not None:
            self._log_step()  # an epoch shorter than log_every steps still draws its point of the curve
        if not warmup_left:
            self.train_time += time.perf_counter() - started
            # every rank's samples count: the throughput of the whole run
            self.train_samples += int(distributed.reduce(torch.tensor(samples, device=self.device), "sum"))
        steps = max(self.state.batch, 1)
        names = sorted(aux_sum)
        # training metrics are means over the ranks (each saw its shard), before anything logs them
        sums = distributed.reduce(torch.stack([loss_sum.float(), *(aux_sum[n].float() for n in names)]))
        loss, *aux = (sums / steps).tolist()
        metrics = {"train/loss": loss, "train/lr": self.schedule.get_last_lr()[0]}
        metrics.update({f"train/aux/{n}": v for n, v in zip(names, aux)})
        self.state.epoch_loss, self.state.epoch_aux = 0.0, {}
        return metrics

    def _time_first_steps(self, ends: list[float], epoch: int) -> None:
        """The time of a step from the run's first ones (the very first, which allocates and warms up, left
        out): three of them, or fewer when they take a second; then the estimate of a long run."""
        synchronize(self.device)
        ends.append(time.perf_counter())
        timed = len(ends) - 1
        if timed and (timed >= 3 or ends[-1] - ends[0] >= REFRESH_S):
            self.clock.step_s = (ends[-1] - ends[0]) / timed
            left = self.clock.left(self.state.step, epoch)
            if self.world.main and left is not None and left > LONG_RUN_S:
                warn(f"this run takes about {duration(left)} ({self.clock.step_s:.2g} s a step, evaluation "
                     f"included){'; ' + self.cost_hint if self.cost_hint else ''}")

    def train_step(self, batch: Any) -> tuple[Tensor, dict[str, Tensor], int]:
        """One optimisation step on one batch, without synchronising with the device: the loss with the
        auxiliary losses added (detached), the auxiliary losses, and the batch size."""
        model = self.task.model
        with self.autocast():
            loss, size = self._training_loss(batch)
            extra = aux_losses(model)
            total = loss + sum(extra.values()) if extra else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return total.detach(), extra, size

    def _training_loss(self, batch: Any) -> tuple[Tensor, int]:
        try:
            return self.task.training_loss(self.forward_model, batch)
        except RuntimeError as e:
            if self.world.distributed and "find_unused_parameters" in str(e):
                raise UserError("some parameters got no gradient in a step (the variant skips them), which DDP "
                                "refuses by default; add trainer.find_unused_parameters=true") from e
            raise

    def _stop_requested(self, stop: StopSignals, at_sync: bool) -> int | None:
        """The stop signal, if one arrived. One process looks at every step; under DDP the ranks must stop at
        the same step, so they agree where they synchronise anyway: progress updates and the end of an epoch."""
        if not self.world.distributed:
            return stop.signum
        if not at_sync:
            return None
        return int(distributed.reduce(torch.tensor(stop.signum or 0, device=self.device), "max")) or None

    def _flush(self, window: list[Tensor], epoch: int, bar: TrainingProgress, samples_per_s: float) -> None:
        """Read the losses of the last steps (one sync), stop on a non-finite one, update the progress bar."""
        if not window:
            return
        losses = distributed.reduce(torch.stack(window).float()).cpu()  # all ranks see the same losses
        finite = torch.isfinite(losses)
        if not finite.all():
            first = int((~finite).nonzero()[0])
            step = self.state.step - len(window) + first + 1
            raise NonFiniteLoss(float(losses[first]), step, self.nan_hint())
        bar.update(self.state.step, epoch, float(losses[-1]), samples_per_s,
                   self.clock.left(self.state.step, epoch) if self.clock else None)
        self._step_loss = float(losses.mean())
        if self.state.step % self.cfg.log_every == 0:  # per-step curves at the user's interval, not the bar's
            self._log_step()
        window.clear()
        self._flushed = time.perf_counter()

    def _log_step(self) -> None:
        self.logger.log({"step/loss": self._step_loss, "step/lr": self.schedule.get_last_lr()[0]},
                        step=self.state.step)
        self._step_logged = self.state.step

    def nan_hint(self) -> str:
        hint = f"lower trainer.lr (now {self.cfg.lr:g})"
        if self.dtype is not None:
            hint += " or train in full precision with trainer.precision=fp32"
        if not self.cfg.grad_clip:
            hint += ", or clip gradients with trainer.grad_clip=1.0"
        return hint

    def evaluate(self, split: str) -> dict[str, float]:
        self.task.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.task.evaluate(self.eval_model, split)
        metrics = {f"{split}/{name}": value for name, value in metrics.items()}
        self.metrics.update(metrics)
        return metrics

    def _record(self, epoch: int, train: dict[str, float], val: dict[str, float]) -> None:
        base = {"epoch": epoch + 1, "step": self.state.step}
        if self.world.main:
            self.run.log_metrics({**base, "split": "train", **train})
            self.run.log_metrics({**base, "split": "val", **val})
            self.logger.log({**train, **val, "epoch": epoch + 1}, step=self.state.step)
        primary = val.get(f"val/{self.task.primary}")
        better = primary is not None and (self.state.best_value is None or (
            primary > self.state.best_value if self.task.higher_is_better else primary < self.state.best_value))
        if better:
            self.state.best_value, self.state.best_epoch = primary, epoch + 1
            if self.world.main:
                self.run.save_checkpoint(self.run.best, {"model": self.task.model.state_dict(), "epoch": epoch + 1,
                                                         "val": val, "fingerprint": self.fingerprint})
        info(f"epoch {epoch + 1}/{self.cfg.epochs} " + epoch_line({k: v for k, v in {**train, **val}.items()
                                                                  if k != "train/lr"}))

    # ------------------------------------------------------------------ the end of a run

    def test(self) -> dict[str, float]:
        """Test metrics with the weights of the best validation epoch (every DDP rank computes the same)."""
        distributed.barrier()  # rank 0 has written best.pt
        best = self.run.load_checkpoint(self.run.best)
        check_fingerprint(best, self.fingerprint, self.run.best)
        try:
            self.task.model.load_state_dict(best["model"])
            self.metrics.update(best["val"])
        except LOAD_ERRORS as e:
            raise _does_not_fit(self.run.best, e, "it was damaged or not written by attnbench's trainer") from e
        return self.evaluate("test")

    def _timed_passes(self, batch: Any, least: int, seconds: float) -> tuple[int, float]:
        """At least ``least`` inference passes, more until ``seconds`` have gone; (passes, seconds taken)."""
        synchronize(self.device)
        started, passes = time.perf_counter(), 0
        while passes < least or time.perf_counter() - started < seconds:
            self.task.predict(self.eval_model, batch)
            passes += 1
            synchronize(self.device)
        return passes, time.perf_counter() - started

    def inference_cost(self, budget_s: float | None = None) -> dict[str, float | int | None]:
        """FLOPs per sample and inference samples/s, in about ``budget_s`` (default: ``COST_SHARE`` of the
        training time, between ``COST_MIN_S`` and ``COST_MAX_S``) unless three passes over a few samples
        take longer.

        FLOPs: torch's counter on the first ``FLOP_SAMPLES`` samples of an evaluation batch, divided by their
        number (the whole batch's count per sample: ``tests/test_run_cost.py``). Samples/s: the largest
        leading part of that batch one pass of which takes about a quarter of the budget left (a compiled
        model: the whole batch, the shape validation compiled), after a warm-up pass, the device
        synchronised; ``inference_batch`` says how many samples a pass held."""
        if budget_s is None:
            budget_s = min(COST_MAX_S, max(COST_MIN_S, COST_SHARE * self.stopwatch.seconds.get("train_steps", 0.0)))
        started = time.perf_counter()
        batch, size = self.task.example_batch()
        model = self.task.model.eval()
        few, n_few = leading(batch, size, FLOP_SAMPLES)
        flops = forward_flops(lambda: self.task.predict(model, few))
        with torch.no_grad(), self.autocast():
            if self.cfg.compile:
                part, n = batch, size
                self._timed_passes(part, 1, 0.0)  # warm-up
            else:
                _, seconds = self._timed_passes(few, 1, 0.0)  # warm-up, and what a sample costs
                left = budget_s - (time.perf_counter() - started)
                part, n = leading(batch, size, min(size, max(n_few, int(n_few * left / 4 / max(seconds, 1e-6)))))
                if n != n_few:
                    self._timed_passes(part, 1, 0.0)  # warm-up at this shape
            left = budget_s - (time.perf_counter() - started)
            passes, seconds = self._timed_passes(part, 2, left)
        return {"flops_per_sample": flops / max(n_few, 1) if flops is not None else None,
                "eval_samples_per_s": passes * n / seconds, "inference_batch": n}

    def training_cost(self) -> dict[str, float | None]:
        """Samples/s of the whole run (all ranks), peak memory of this process during its training steps and
        during evaluation (one GPU; None before any), and how many ranks."""
        return {"train_samples_per_s": self.train_samples / self.train_time if self.train_time > 0 else None,
                "peak_memory_mb": self.training_peak.mb, "eval_peak_memory_mb": self.evaluation_peak.mb,
                "world_size": self.world.size}
