"""Image classification: images in, class out; accuracy is the primary metric."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from ..attention import capture_weights
from ..data import LOADERS
from ..data.batches import Augment, TensorBatches, channel_stats
from ..data.images import ImageData
from ..data.stream import StreamBatches, StreamImages
from ..seeds import mixed_seed
from ..values import NONNEGATIVE, setting
from .base import DiagnosticMeans, Task
from .figures import attention_grid_figure


class Classifier(nn.Module):
    """A backbone's pooled features, then one linear layer to the classes."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


@dataclass
class Augmentation:
    """The data.* keys the classify task reads: augmentation, done on the device a batch at a time."""

    crop_pad: int = setting(bound=NONNEGATIVE, default=0)  # pad, then crop back at random
    flip: bool = False  # random horizontal flips
    test_flip: bool = False  # evaluate on the mean logits of each image and its mirror


class ClassifyTask(Task):
    family = "classify"
    slots = ("feature", "pool")
    primary = "acc"
    convolutional = True
    backbones = ("resnet", "speednet", "timm")
    backbone_inputs = ("in_channels",)
    data_type = ImageData
    DataKeys = Augmentation

    def __init__(self, cfg: DictConfig, choices: dict[str, str], family_slots: dict[str, tuple[str, ...]]) -> None:
        super().__init__(cfg, choices, family_slots)
        self.data: ImageData = LOADERS[cfg.data.name](**self.loader_kwargs)
        self.model = Classifier(self.build_backbone(in_channels=self.data.channels), len(self.data.classes))
        self.augment = Augment(self.data_keys.crop_pad, self.data_keys.flip)
        self.mean, self.std = channel_stats(self.data.train.images)
        fit_inputs = getattr(self.model.backbone, "fit_inputs", None)
        if fit_inputs is not None:  # a data-dependent first layer (speednet's patch whitening)
            sample = self.data.train.images[:5000].float().div(255)
            fit_inputs((sample - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1))
        self.generator = torch.Generator().manual_seed(cfg.seed)  # augmentation draws; saved in checkpoints

    def to(self, device: torch.device) -> None:
        for split in (self.data.train, self.data.val, self.data.test):
            split.images, split.labels = split.images.to(device), split.labels.to(device)
        self.model.to(device)
        self.generator = self._augmentation_generator(device)

    def _augmentation_generator(self, device: torch.device) -> torch.Generator:
        """Augmentation draws; under DDP each rank its own stream (its samples are not another rank's)."""
        return torch.Generator(device=device).manual_seed(mixed_seed(self.seed, self.rank))

    def _batches(self, split: str, train: bool = False) -> TensorBatches | StreamBatches:
        data = getattr(self.data, split)
        batches = StreamBatches if isinstance(data.images, StreamImages) else TensorBatches  # data.stream
        return batches(data.images, data.labels, self.batch_size if train else self.eval_batch_size,
                             mean=self.mean, std=self.std, shuffle=train, seed=self.seed,
                             augment=self.augment if train else None, generator=self.generator,
                             drop_last=train and len(data) > self.batch_size,
                             rank=self.rank if train else 0, world=self.world if train else 1)

    def shard(self, rank: int, world: int) -> None:
        super().shard(rank, world)
        self.generator = self._augmentation_generator(self.generator.device)

    def steps_per_epoch(self) -> int:
        return len(self._batches("train", train=True))

    def eval_share(self, split: str) -> float | None:
        return len(getattr(self.data, split)) / max(len(self.data.train), 1)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        return self._batches("train", train=True).epoch(epoch, start)

    def training_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing), len(y)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        correct = loss = None
        extra = DiagnosticMeans()
        for x, y in self._batches(split):
            logits = model(x).float()
            if self.data_keys.test_flip:
                logits = (logits + model(x.flip(3)).float()) / 2
            batch_correct = (logits.argmax(1) == y).sum()
            batch_loss = F.cross_entropy(logits, y, reduction="sum")
            correct = batch_correct if correct is None else correct + batch_correct
            loss = batch_loss if loss is None else loss + batch_loss
            extra.add(model)
        n = len(getattr(self.data, split))
        means = extra.means()
        values = torch.stack([correct / n, loss / n, *means.values()]).tolist()
        return dict(zip(["acc", "loss", *means], values))

    def example_batch(self, limit: int | None = None) -> tuple[Any, int]:
        x, _ = next(iter(self._batches("test")))
        x = x[:limit]
        return x, len(x)

    def predict(self, model: nn.Module, batch: Tensor) -> Tensor:
        return model(batch)

    def figures(self, model: nn.Module, out_dir: Path) -> dict[str, Path]:
        """Spatial attention of the last block over a few test images (variants with spatial weights)."""
        x, y = next(iter(self._batches("test")))
        x = x[:8]
        model.eval()
        with torch.no_grad(), capture_weights(model) as modules:
            predictions = model(x).argmax(-1)
            spatial = [(name, m.weights) for name, m in modules.items()
                       if m.weights is not None and m.weights_over == "positions"]
        if not spatial:
            return {}
        layer, weights = spatial[-1]
        weights = weights.float()
        weights = weights.reshape(len(weights), -1, weights.shape[-1]).mean(1)  # several maps an image: their mean
        images = (x * self.std.to(x.device).view(1, -1, 1, 1) + self.mean.to(x.device).view(1, -1, 1, 1))
        title = f"model={self.model_name} · spatial attention of {layer} (last block) · data={self.data_name}"
        path = attention_grid_figure(images.clamp(0, 1).cpu(), weights.cpu(), y[:8].tolist(), predictions.tolist(),
                                     self.data.classes, title, out_dir / "attention.png")
        return {"attention": path}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
