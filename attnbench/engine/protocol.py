"""The small protocol through which the engine drives any task family without knowing its insides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn


class Task(Protocol):
    family: str  # classify | rate | fewshot | caption
    primary: str  # the metric that picks the best checkpoint and heads comparisons, without split: "acc"
    higher_is_better: bool
    model: nn.Module
    convolutional: bool  # channels_last pays off only for convolutional models
    batch_size: int  # the global batch of a training step, in the task's own unit (samples, or episodes)
    batch_key: str  # the setting that gives it (trainer.batch_size, task.episodes_per_step)

    def to(self, device: Any) -> None:
        """Move data held as tensors (and the model) to the training device."""

    def shard(self, rank: int, world: int) -> None:
        """Under DDP: from now on ``train_batches`` yields this rank's part of every global batch (the
        global batch, ``batch_size``, is the same as in a one-process run, split ``world`` ways),
        with random augmentation drawn from a stream of this rank's own. Evaluation is not sharded: every
        rank evaluates the whole split."""

    def steps_per_epoch(self) -> int: ...

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Batches of one epoch, from batch index ``start`` (a resumed run skips what it has done)."""

    def training_loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """The task loss of one batch (auxiliary attention losses are added by the trainer) and its size.
        Run the model by calling it, ``model(...)``: under DDP it is the DistributedDataParallel wrapper,
        whose forward alone all-reduces the gradients (``self.model`` is the module inside)."""

    def eval_share(self, split: str) -> float | None:
        """The size of ``split``'s evaluation against an epoch of training (samples or episodes), for the
        run's time estimate; None when unknown (the test is then taken to cost what validation does)."""

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on ``val`` or ``test``, keyed without the split (``{"acc": 0.97}``); one sync at the end."""

    def example_batch(self, limit: int | None = None) -> tuple[Any, int]:
        """One batch of test inputs (at most ``limit`` samples) and its size: for the build-time probe,
        counting FLOPs and timing inference."""

    def predict(self, model: nn.Module, batch: Any) -> Any:
        """The forward pass of inference on a batch from ``example_batch``."""

    def figures(self, model: nn.Module, out_dir: Path) -> dict[str, Path]:
        """Attention pictures for a few test inputs, written into ``out_dir`` (PNG, or HTML); name -> file."""

    def save_artifacts(self, run_dir: Path) -> None:
        """Files a run needs besides its checkpoints (a vocabulary), written once into the run directory."""

    def notes(self) -> dict[str, str]:
        """Metric name -> why its value is null in this run (e.g. ``test/evidence_mass``: the
        variant has no weights over tokens); written to summary.json under ``notes``."""

    def test_items(self) -> int | None:
        """How many scored items the test metric averages over (images, texts, episode queries); compare reads
        it from summary.json to say when a metric is quantised or the test set dominates the spread."""

    def state_dict(self) -> dict[str, Any]:
        """Random state of the data pipeline (and anything else a resume needs)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
