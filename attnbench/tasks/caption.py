"""Image captioning: an image in, a sentence out; the decoder's ``align`` slot is where the variants differ.

Training is teacher-forced on every (image, caption) pair; the per-caption log-likelihood goes back to the
attention modules as their reward (``send_reward``), which ``hard`` attention learns from. Evaluation decodes one
caption per image by beam search (``task.beam``; 1 is greedy) and scores it against all the image's references:
BLEU-1…4, ROUGE-L, CIDEr-D (the primary metric), METEOR when Java is there, and on scenes with object boxes
(``data=shapes``) grounding: the share of a noun's attention that falls on the object it names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from ..attention import send_reward
from ..data import LOADERS
from ..data.batches import channel_stats, epoch_order
from ..data.captions import CaptionData, CaptionSplit, EncodedImages
from ..data.vocab import Vocab
from ..values import COUNT, setting
from .base import DiagnosticMeans, Task
from .caption_metrics import caption_scores, grounding, resolve_meteor
from .figures import caption_attention_figure

T = TypeVar("T")


def prefetched(jobs: Iterator[Callable[[], T]]) -> Iterator[T]:
    """Run each job one ahead on a background thread (decoding the next batch while this one trains)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for job in jobs:
            future = pool.submit(job)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


@dataclass
class CaptionText:
    """The data.* keys the caption task reads: how captions become token indices."""

    max_length: int = setting(bound=COUNT, default=20)  # words kept per caption (plus <bos> and <eos>)
    min_count: int = setting(bound=COUNT, default=1)  # rarer words map to <unk>


@dataclass
class CaptionSettings:
    """task.* of captioning (conf/task/caption.yaml)."""

    name: str = setting()
    beam: int = setting(bound=COUNT)  # beam width of evaluation decoding; 1 = greedy
    meteor: bool | str = setting(Literal["auto", True, False])  # auto: when `java` is on the PATH


class CaptionTask(Task):
    family = "caption"
    draws_without_maps = True
    slots = ("feature", "align")
    primary = "cider"
    convolutional = True
    backbones = ("caption_cnn", "caption_resnet")
    backbone_inputs = ("vocab_size", "in_channels")
    data_type = CaptionData
    DataKeys = CaptionText
    Settings = CaptionSettings

    def __init__(self, cfg: DictConfig, choices: dict[str, str], family_slots: dict[str, tuple[str, ...]]) -> None:
        super().__init__(cfg, choices, family_slots)
        self.max_length, self.beam = self.data_keys.max_length, self.settings.beam
        self.meteor = resolve_meteor(self.settings.meteor)
        self.data: CaptionData = LOADERS[cfg.data.name](**self.loader_kwargs)
        captions = (caption for per_image in self.data.train.captions for caption in per_image)
        # words only: the caption metrics compare words, and a generated comma would count as one
        self.vocab = Vocab.build(captions, self.data_keys.min_count, punctuation=False, sentence_marks=True)
        self.model = self.build_backbone(vocab_size=len(self.vocab), in_channels=3)
        stats = self.model.input_stats or self._image_stats(self.data.train)
        self.mean, self.std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
        self.tokens = {split: self._encode(getattr(self.data, split)) for split in ("train", "val", "test")}

    # ------------------------------------------------------------------ data

    @staticmethod
    def _image_stats(split: CaptionSplit) -> tuple[list[float], list[float]]:
        """Channel mean and std of (up to) the first 512 training images."""
        sample = split.images.load(torch.arange(min(len(split), 512)))
        mean, std = channel_stats(sample.cpu())
        return mean.tolist(), std.tolist()

    def _encode(self, split: CaptionSplit) -> tuple[Tensor, Tensor]:
        """Every caption of a split as ``<bos> words <eos>`` padded (M, max_length + 2), and its image (M,)."""
        rows, owners = [], []
        for image, captions in enumerate(split.captions):
            for caption in captions:
                rows.append([self.vocab.bos, *self.vocab.encode(caption, self.max_length), self.vocab.eos])
                owners.append(image)
        tokens = torch.full((len(rows), self.max_length + 2), self.vocab.pad, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = torch.tensor(row)
        return tokens, torch.tensor(owners, dtype=torch.long)

    def to(self, device: torch.device) -> None:
        self.device = device
        for split in ("train", "val", "test"):
            getattr(self.data, split).images.to(device)
            self.tokens[split] = tuple(t.to(device) for t in self.tokens[split])
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        self.model.to(device)

    def images(self, split: CaptionSplit, index: Tensor) -> Tensor:
        """Normalised float images of ``index``."""
        return (split.images.load(index).float().div_(255) - self.mean) / self.std

    def _run(self, split: CaptionSplit, jobs: Iterator[Callable[[], T]]) -> Iterator[T]:
        return prefetched(jobs) if isinstance(split.images, EncodedImages) else (job() for job in jobs)

    def steps_per_epoch(self) -> int:
        pairs = len(self.tokens["train"][1])
        return pairs // self.batch_size if pairs > self.batch_size else 1

    def _order(self, epoch: int) -> Tensor:
        return epoch_order(len(self.tokens["train"][1]), self.seed, epoch)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled (image, caption) pairs; under DDP each rank takes every ``world``-th pair of a global batch."""
        order = self._order(epoch)
        tokens, owners = self.tokens["train"]
        split = self.data.train

        def batch(i: int) -> Callable[[], tuple[Tensor, Tensor]]:
            def load() -> tuple[Tensor, Tensor]:
                index = order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
                index = index.to(tokens.device)
                rows = tokens[index]
                length = int((rows != self.vocab.pad).sum(1).max())
                return self.images(split, owners[index]), rows[:, :length]
            return load

        return self._run(split, (batch(i) for i in range(start, self.steps_per_epoch())))

    # ------------------------------------------------------------------ training

    def training_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        images, tokens = batch
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        steps = targets != self.vocab.pad
        logits, _ = model(images, inputs, steps)
        logits = logits.float().transpose(1, 2)  # (B, V, T)
        nll = F.cross_entropy(logits, targets, ignore_index=self.vocab.pad, reduction="none")
        send_reward(model, -nll.detach().sum(1))  # each caption's log-likelihood: hard attention's reward
        if self.label_smoothing:
            nll = F.cross_entropy(logits, targets, ignore_index=self.vocab.pad, reduction="none",
                                  label_smoothing=self.label_smoothing)
        return nll.sum() / steps.sum(), len(tokens)

    # ------------------------------------------------------------------ evaluation

    def _eval_batches(self, split: CaptionSplit, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(split) if limit is None else min(limit, len(split))

        def batch(start: int) -> Callable[[], tuple[Tensor, Tensor]]:
            def load() -> tuple[Tensor, Tensor]:
                index = torch.arange(start, min(start + self.eval_batch_size, n), device=self.device)
                return index, self.images(split, index)
            return load

        return self._run(split, (batch(s) for s in range(0, n, self.eval_batch_size)))

    def _generate(self, model: nn.Module, images: Tensor, beam: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
        v = self.vocab
        return model.generate(images, v.bos, v.eos, v.pad, self.max_length, beam)

    def _first_caption_loss(self, model: nn.Module, split_name: str, index: Tensor, images: Tensor) -> Tensor:
        """Summed token NLL of each image's first reference (teacher-forced) and the token count."""
        tokens, owners = self.tokens[split_name]
        first = torch.searchsorted(owners, index)  # captions are stored image by image
        rows = tokens[first]
        inputs, targets = rows[:, :-1], rows[:, 1:]
        steps = targets != self.vocab.pad
        logits, _ = model(images, inputs, steps)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=self.vocab.pad, reduction="sum")
        return torch.stack([nll, steps.sum().float()])

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        data = getattr(self.data, split)
        hypotheses: list[str] = []
        greedy: list[str] = []
        shares: list[float] = []
        chance: list[float] = []
        loss = torch.zeros(2, device=self.device)
        extra = DiagnosticMeans()
        also_greedy = split == "test" and self.beam > 1
        for index, images in self._eval_batches(data):
            loss += self._first_caption_loss(model, split, index, images)
            tokens, weights, grid = self._generate(model, images, self.beam)
            extra.add(model)
            tokens, weights = tokens.cpu().tolist(), weights.float().cpu().numpy()
            for row, (ids, image_weights) in enumerate(zip(tokens, weights)):
                words = self.vocab.decode(ids)
                hypotheses.append(" ".join(words))
                if data.objects is not None:
                    found, base = grounding(words, image_weights, data.objects[int(index[row])], self.data.nouns,
                                            grid, self.data.image_size)
                    shares += found
                    chance += base
            if also_greedy:
                greedy += [" ".join(self.vocab.decode(ids)) for ids in self._generate(model, images, 1)[0].tolist()]
        metrics = caption_scores(data.captions, hypotheses, meteor=self.meteor)
        if also_greedy:
            greedy_scores = caption_scores(data.captions, greedy)
            metrics.update(greedy_bleu4=greedy_scores["bleu4"], greedy_cider=greedy_scores["cider"])
        if data.objects is not None:
            metrics["grounding"] = sum(shares) / max(len(shares), 1)
            metrics["grounding_chance"] = sum(chance) / max(len(chance), 1)
        nll, count = loss.tolist()
        metrics["loss"] = nll / max(count, 1)
        means = extra.means()
        metrics.update(zip(means, torch.stack(list(means.values())).tolist() if means else []))
        return metrics

    def example_batch(self, limit: int | None = None) -> tuple[Tensor, int]:
        _, images = next(iter(self._eval_batches(self.data.test, limit)))
        return images, len(images)

    def predict(self, model: nn.Module, batch: Tensor) -> Tensor:
        return self._generate(model, batch, self.beam)[0]

    def figures(self, model: nn.Module, out_dir: Path, count: int = 4) -> dict[str, Path]:
        """The generated caption of the first test images with one attention map per word."""
        model.eval()
        index = torch.arange(min(count, len(self.data.test)), device=self.device)
        images = self.images(self.data.test, index)
        with torch.no_grad():
            tokens, weights, grid = self._generate(model, images, self.beam)
        shown = (images * self.std + self.mean).clamp(0, 1).float().cpu()
        paths = {}
        for i in range(len(index)):
            words = self.vocab.decode(tokens[i].tolist())
            path = caption_attention_figure(shown[i], words, weights[i, :len(words)].float().cpu(), grid,
                                            f"model={self.model_name} · decoder attention per word",
                                            out_dir / f"caption_{i}.png", self.data.test.captions[i])
            paths[f"caption_{i}"] = path
        return paths

    def save_artifacts(self, run_dir: Path) -> None:
        """The vocabulary and the caption length: what turns the checkpoint's outputs back into words."""
        self.vocab.save(run_dir / "vocab.json", max_length=self.max_length, source=self.data.source)
