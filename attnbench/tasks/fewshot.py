"""Few-shot classification: N-way K-shot episodes; mean accuracy over test episodes with its 95% interval.

``model=none`` (and the ``feature`` variants, inside the backbone) is Prototypical Networks: each class is the
mean of its support embeddings, a query goes to the nearest class (negative squared Euclidean distance, or
cosine with a learned scale). A ``pair`` variant compares each query map with each class map (the mean of its
support maps) and re-weights both before they are compared: ``coattn`` then uses the same nearest-class rule;
``cross`` uses CAN's own classifier (cosine × 7, a loss at every query position, and a global classification
head over all training classes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from ..attention import capture_weights
from ..attention.pair import PairAttention
from ..data import LOADERS
from ..data.batches import Augment, channel_stats
from ..data.episodes import Episode, EpisodeSampler, FewShotData, episode_seed
from ..errors import UserError
from ..values import COUNT, NONNEGATIVE, Bound, setting
from .base import DiagnosticMeans, Task
from .figures import attention_grid_figure, pair_attention_figure


@dataclass
class EpisodeBatch:
    """E episodes of N ways: support (E, N, K, C, H, W) and queries (E, M, C, H, W), normalised floats;
    ``labels`` (E, M) each query's way; ``classes`` (E, N) each way's class id in its split."""

    support: Tensor
    query: Tensor
    labels: Tensor
    classes: Tensor

    def __len__(self) -> int:
        return self.labels.numel()


class FewShotNet(nn.Module):
    """Backbone feature maps -> (optional pair attention between each query and each class) -> logits.

    ``forward(support, query)`` gives logits (E, M, N); with ``labels`` (and ``classes``, for a global head)
    it gives the training loss instead, so that everything with parameters runs inside ``forward`` (DDP).
    """

    def __init__(self, backbone: nn.Module, pair: nn.Module | None, grid: tuple[int, int], metric: str,
                 readout: str, train_classes: int) -> None:
        super().__init__()
        self.backbone, self.pair, self.grid = backbone, pair, grid
        self.metric, self.readout = metric, readout
        self.rule = getattr(pair, "classifier", None)  # the pair variant's own classifier (CAN), if it has one
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0))) if metric == "cosine" and not self.rule else None
        width = backbone.out_channels
        self.global_head = (nn.Linear(width, train_classes) if self.rule is not None and self.rule.global_weight > 0
                            else None)

    def maps(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Class maps (E, N, P, D), the mean of each way's support maps, and query maps (E, M, P, D)."""
        e, n, k = support.shape[:3]
        m = query.shape[1]
        out = self.backbone(torch.cat([support.flatten(0, 2), query.flatten(0, 1)]))
        out = out.flatten(2).transpose(1, 2)  # (images, P, D)
        return out[:e * n * k].unflatten(0, (e, n, k)).mean(2), out[e * n * k:].unflatten(0, (e, m))

    def embed(self, maps: Tensor) -> Tensor:
        return maps.flatten(-2) if self.readout == "flatten" else maps.mean(-2)

    def distance_logits(self, query: Tensor, classes: Tensor) -> Tensor:
        """The nearest-class rule on embeddings that broadcast to (..., F)."""
        if self.metric == "cosine":
            return F.cosine_similarity(query, classes, dim=-1) * self.log_scale.exp()
        return -(query - classes).pow(2).sum(-1)

    def forward(self, support: Tensor, query: Tensor, labels: Tensor | None = None,
                classes: Tensor | None = None) -> Tensor:
        class_maps, query_maps = self.maps(support, query)
        if self.pair is None:  # Prototypical Networks
            logits = self.distance_logits(self.embed(query_maps).unsqueeze(2), self.embed(class_maps).unsqueeze(1))
            return logits if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        # every (query, class) pair, re-weighted by the pair variant: (E, M, N, P, D) each; the maps broadcast,
        # so what depends on one map alone is computed once per map
        a, b = self.pair(class_maps.unsqueeze(1), query_maps.unsqueeze(2), grid=self.grid)
        if self.rule is None:  # co-attention: the same nearest-class rule as Prototypical Networks
            logits = self.distance_logits(self.embed(b), self.embed(a))
            return logits if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return self.cosine_rule(a, b, labels, classes)

    def cosine_rule(self, a: Tensor, b: Tensor, labels: Tensor | None, classes: Tensor | None) -> Tensor:
        """CAN: cosine × scale of the pooled maps; in training a loss at every query position plus the
        global classification loss of the query map re-weighted for its own class."""
        rule = self.rule
        class_vectors = F.normalize(a.mean(3), dim=-1)  # (E, M, N, D)
        if labels is None:
            return rule.scale * (F.normalize(b.mean(3), dim=-1) * class_vectors).sum(-1)
        e, m, n, p, d = b.shape
        dense = rule.scale * (F.normalize(b, dim=-1) * class_vectors.unsqueeze(3)).sum(-1)  # (E, M, N, P)
        if not rule.dense:
            dense = rule.scale * (F.normalize(b.mean(3), dim=-1) * class_vectors).sum(-1, keepdim=True)
        flat_labels = labels.flatten()
        loss = rule.weight * F.cross_entropy(dense.flatten(0, 1).float(),
                                             flat_labels.unsqueeze(1).expand(-1, dense.shape[-1]))
        if self.global_head is not None:
            own = b.flatten(0, 1)[torch.arange(e * m, device=b.device), flat_labels]  # (E·M, P, D)
            targets = classes.gather(1, labels).flatten()  # each query's class id among the training classes
            scores = self.global_head(own)  # (E·M, P, classes)
            loss = loss + rule.global_weight * F.cross_entropy(scores.transpose(1, 2).float(),
                                                               targets.unsqueeze(1).expand(-1, p))
        return loss


@dataclass
class Episodes:
    """The data.* keys the few-shot task reads: the shape of an episode, how many of them, augmentation."""

    ways: int = setting(bound=Bound(2), default=5)  # classes per episode
    shots: int = setting(bound=COUNT, default=1)  # support images per class
    queries: int = setting(bound=COUNT, default=15)  # query images per class
    # training episodes may be shaped differently (Snell et al. train with more ways, CAN with fewer queries)
    train_ways: int | None = setting(bound=Bound(2), default=None)  # null = ways
    train_queries: int | None = setting(bound=COUNT, default=None)  # null = queries
    train_episodes: int = setting(bound=COUNT, default=100)  # per training epoch
    val_episodes: int = setting(bound=COUNT, default=100)
    test_episodes: int = setting(bound=COUNT, default=600)
    crop_pad: int = setting(bound=NONNEGATIVE, default=0)
    flip: bool = False


@dataclass
class FewShotSettings:
    """task.* of few-shot classification (conf/task/fewshot.yaml)."""

    name: str = setting()
    metric: str = setting(Literal["euclidean", "cosine"])  # of the nearest-class rule; cross uses its own
    readout: str = setting(Literal["flatten", "mean"])  # how a feature map becomes an embedding
    episodes_per_step: int = setting(bound=COUNT)  # episodes in one optimisation step (split across processes)
    eval_episodes_per_batch: int = setting(bound=COUNT)  # episodes in one evaluation forward pass


class FewShotTask(Task):
    family = "fewshot"
    slots = ("feature", "pair")
    task_slots = ("pair",)  # filled by the task between query and class maps, not by the backbone
    primary = "acc"
    convolutional = True
    backbones = ("conv4", "resnet12")
    backbone_inputs = ("in_channels",)
    data_type = FewShotData
    DataKeys = Episodes
    Settings = FewShotSettings
    batch_key = "task.episodes_per_step"

    def __init__(self, cfg: DictConfig, choices: dict[str, str], family_slots: dict[str, tuple[str, ...]]) -> None:
        super().__init__(cfg, choices, family_slots)
        data_label, keys = f"data={choices['data']}", self.data_keys
        self.ways, self.shots, self.queries = keys.ways, keys.shots, keys.queries
        self.train_ways = keys.train_ways or keys.ways
        self.train_queries = keys.train_queries or keys.queries
        self.episodes = {"train": keys.train_episodes, "val": keys.val_episodes, "test": keys.test_episodes}
        # an optimisation step is a number of episodes, not of images: this is the task's batch
        self.batch_size = self.episodes_per_step = self.settings.episodes_per_step
        self.eval_episodes_per_batch = self.settings.eval_episodes_per_batch
        if self.episodes["train"] < self.episodes_per_step:
            raise UserError(f"task.episodes_per_step={self.episodes_per_step} is more than "
                            f"data.train_episodes={self.episodes['train']}, the episodes of an epoch")
        self.data: FewShotData = LOADERS[cfg.data.name](**self.loader_kwargs)
        self.data.check_disjoint()
        self.samplers = {split: EpisodeSampler(self.data.split(split), split, self.ways, self.shots, self.queries,
                                               cfg.seed, data_label) for split in ("val", "test")}
        self.samplers["train"] = EpisodeSampler(self.data.train, "train", self.train_ways, self.shots,
                                                self.train_queries, cfg.seed, data_label, prefix="train_")
        backbone = self.build_backbone(in_channels=self.data.channels)
        grid = _map_grid(backbone, self.data.train.images)
        pair = self.factories["pair"](backbone.out_channels, grid[0] * grid[1]) if "pair" in self.factories else None
        self.model = FewShotNet(backbone, pair, grid, self.settings.metric, self.settings.readout,
                                len(self.data.train.classes))
        self.augment = Augment(keys.crop_pad, keys.flip)
        self.mean, self.std = channel_stats(self.data.train.images)

    # ------------------------------------------------------------------ data

    def to(self, device: torch.device) -> None:
        for split in ("train", "val", "test"):
            part = self.data.split(split)
            part.images, part.labels = part.images.to(device), part.labels.to(device)
        self.model.to(device)
        self.device = torch.device(device)

    def steps_per_epoch(self) -> int:
        return self.episodes["train"] // self.episodes_per_step

    def test_items(self) -> int:
        return self.episodes["test"] * self.ways * self.queries  # every query of every test episode is scored

    def eval_share(self, split: str) -> float | None:
        return self.episodes[split] / max(self.episodes["train"], 1)

    def _batch(self, split: str, episodes: list[Episode], augment_seed: int | None) -> EpisodeBatch:
        images = self.data.split(split).images
        support = torch.stack([ep.support for ep in episodes]).to(images.device)  # (E, N, K)
        query = torch.stack([ep.query.flatten() for ep in episodes]).to(images.device)  # (E, N·Q), way-major
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)

        augmenting = augment_seed is not None and (self.augment.crop_pad or self.augment.flip)
        g = torch.Generator(device=images.device).manual_seed(augment_seed) if augmenting else None

        def load(index: Tensor) -> Tensor:
            x = images[index.flatten()].float().div_(255)
            if g is not None:
                x = self.augment(x, g)
            return ((x - mean) / std).unflatten(0, tuple(index.shape))

        ways = support.shape[1]
        labels = torch.arange(ways, device=images.device).repeat_interleave(query.shape[1] // ways)
        labels = labels.expand(len(episodes), -1)
        classes = torch.stack([ep.classes for ep in episodes]).to(images.device)
        return EpisodeBatch(load(support), load(query), labels, classes)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[EpisodeBatch]:
        sampler, per_step = self.samplers["train"], self.episodes_per_step
        for step in range(start, self.steps_per_epoch()):
            indices = list(range(step * per_step, (step + 1) * per_step))[self.rank::self.world]
            episodes = [sampler.episode(epoch, i) for i in indices]
            yield self._batch("train", episodes, episode_seed(self.seed, "train", epoch, indices[0]))

    def eval_batches(self, split: str, limit: int | None = None) -> Iterator[EpisodeBatch]:
        """The same episodes at every evaluation of a run (epoch 0 of the split's stream)."""
        sampler, count = self.samplers[split], limit or self.episodes[split]
        for first in range(0, count, self.eval_episodes_per_batch):
            indices = range(first, min(first + self.eval_episodes_per_batch, count))
            yield self._batch(split, [sampler.episode(0, i) for i in indices], None)

    # ------------------------------------------------------------------ model

    def training_loss(self, model: nn.Module, batch: EpisodeBatch) -> tuple[Tensor, int]:
        return model(batch.support, batch.query, batch.labels, batch.classes), len(batch)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        accuracies, losses = [], []
        extra = DiagnosticMeans()
        for batch in self.eval_batches(split):
            logits = model(batch.support, batch.query).float()  # (E, M, N)
            accuracies.append((logits.argmax(-1) == batch.labels).float().mean(1))
            losses.append(F.cross_entropy(logits.transpose(1, 2), batch.labels, reduction="none").mean(1))
            extra.add(model)
        acc, loss = torch.cat(accuracies), torch.cat(losses)
        ci95 = 1.96 * acc.std(correction=1) / math.sqrt(len(acc)) if len(acc) > 1 else torch.zeros(())
        means = extra.means()
        values = torch.stack([acc.mean(), ci95, loss.mean(), *means.values()]).tolist()
        return dict(zip(["acc", "acc_ci95", "loss", *means], values))

    def example_batch(self, limit: int | None = None) -> tuple[EpisodeBatch, int]:
        """One test episode; with ``limit``, only its first ``limit`` queries (samples are queries)."""
        batch = next(self.eval_batches("test", limit=1))
        if limit is not None:
            batch = EpisodeBatch(batch.support, batch.query[:, :limit], batch.labels[:, :limit], batch.classes)
        return batch, len(batch)

    def predict(self, model: nn.Module, batch: EpisodeBatch) -> Tensor:
        return model(batch.support, batch.query)

    # ------------------------------------------------------------------ pictures and state

    def figures(self, model: nn.Module, out_dir: Path) -> dict[str, Path]:
        """Pair variants: for one test episode, each class's support image and one query of every class, with
        the attention each map gets in that (query, class) pair. Other variants with spatial weights (CBAM):
        the last block's attention over the episode's images."""
        batch = next(self.eval_batches("test", limit=1))
        per_class = batch.query.shape[1] // self.ways
        chosen = torch.arange(self.ways, device=batch.query.device) * per_class  # the first query of each way
        query, labels = batch.query[:, chosen], batch.labels[:, chosen]
        model.eval()
        with torch.no_grad(), capture_weights(model) as modules:
            model(batch.support, query)
            pair = next((m for m in modules.values() if isinstance(m, PairAttention) and m.weights is not None), None)
            spatial = [m.weights for m in modules.values()
                       if not isinstance(m, PairAttention) and m.weights is not None and m.weights_over == "positions"]
            weights = (pair.weights_a, pair.weights) if pair is not None else None
        names = self.data.test.classes
        way_names = [names[int(c)] for c in batch.classes[0]]
        support, query = self._pixels(batch.support[0, :, 0]), self._pixels(query[0])
        if weights is not None:
            h, w = self.model.grid
            shape = (query.shape[0], self.ways, h, w)  # (queries, ways, h, w): pairs are query-major
            path = pair_attention_figure(support, query, weights[0].float().cpu().view(shape),
                                         weights[1].float().cpu().view(shape), labels[0].tolist(), way_names,
                                         f"model={self.model_name} · pair attention of one episode "
                                         f"(green: the query's class)", out_dir / "pair_attention.png")
            return {"pair_attention": path}
        if spatial:
            # the backbone saw the support images first, way by way: the first shot of each way
            maps = spatial[-1][torch.arange(self.ways) * self.shots].float().cpu()
            title = f"model={self.model_name} · spatial attention of the last block over the support images"
            path = attention_grid_figure(support, maps, list(range(self.ways)), None, way_names, title,
                                         out_dir / "attention.png")
            return {"attention": path}
        return {}

    def _pixels(self, x: Tensor) -> Tensor:
        mean, std = self.mean.to(x.device).view(1, -1, 1, 1), self.std.to(x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1).float().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {}  # every episode (and its augmentation) is drawn from its own (seed, split, epoch, index)


def _map_grid(backbone: nn.Module, images: Tensor) -> tuple[int, int]:
    """(h, w) of the backbone's feature map for images of this data set: sizes the pair variants."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        h, w = backbone(torch.zeros(1, *images.shape[1:])).shape[2:]
    backbone.train(was_training)
    if h * w < 1:
        raise UserError(f"the backbone reduces {tuple(images.shape[2:])} images to an empty map; use larger images "
                        f"or a backbone that pools less")
    return int(h), int(w)
