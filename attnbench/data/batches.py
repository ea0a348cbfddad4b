"""Mini-batches from tensors that live on the device, augmented there, a whole batch at a time.

For CIFAR-size data this replaces a DataLoader: no worker processes, no host-to-device copies per step,
and the random state is one ``torch.Generator`` that a checkpoint can save, so a resumed run draws exactly
the augmentations an uninterrupted one would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..seeds import mixed_seed


@dataclass
class Augment:
    """Random translation by up to ``crop_pad`` pixels (zero pad and crop) and horizontal flips.

    Both are one gather: each sample's rows and columns are shifted (and the columns reversed when it is
    flipped), so the batch is read once. Works on any dtype; the data path applies it to the uint8 images,
    before the conversion to float (a quarter of the bytes to move; a zero-padded pixel is black either way).
    """

    crop_pad: int = 0
    flip: bool = False

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.crop_pad <= 0 and not self.flip:
            return x
        b, _, h, w = x.shape
        rows = torch.arange(h, device=x.device).expand(b, h)
        cols = torch.arange(w, device=x.device).expand(b, w)
        if self.crop_pad > 0:
            p = self.crop_pad
            x = F.pad(x, (p, p, p, p))
            shift = torch.randint(0, 2 * p + 1, (b, 2), device=x.device, generator=generator)
            rows, cols = rows + shift[:, 0:1], cols + shift[:, 1:2]
        if self.flip:
            flip = torch.rand(b, device=x.device, generator=generator) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return x[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The order of ``n`` samples in ``epoch``: a permutation from (seed, epoch) alone, on the CPU, so a resumed
    run, every rank and every way of feeding the batches (in memory, streamed) see the same one."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed_seed(seed, epoch)))


class TensorBatches:
    """Shuffled (or ordered) mini-batches of normalised float images and labels, all on one device.

    The order of epoch ``e`` depends only on (seed, e), so a run resumed in the middle of an epoch replays
    the same order; augmentation draws from ``generator``, whose state goes into checkpoints. Under DDP each
    of ``world`` ranks takes every ``world``-th sample of each global batch, so together the ranks see the
    batches a single process would.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *, mean: Tensor, std: Tensor,
                 shuffle: bool, seed: int = 0, augment: Augment | None = None, drop_last: bool = False,
                 generator: torch.Generator | None = None, rank: int = 0, world: int = 1) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world = rank, world
        # (x/255 − mean)/std as (x − 255·mean)·(1/(255·std)): two in-place passes over the float batch
        self.shift = (mean * 255).to(images.device).view(1, -1, 1, 1)
        self.scale = (1 / (std * 255)).to(images.device).view(1, -1, 1, 1)
        self.augment = augment
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        return epoch_order(len(self.labels), self.seed, epoch, self.shuffle).to(self.images.device)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(epoch)
        for i in range(start, len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world]
            x = self.images[index]
            if self.augment is not None and self.generator is not None:
                x = self.augment(x, self.generator)
            yield x.float().sub_(self.shift).mul_(self.scale), self.labels[index]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)


def channel_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale, estimated on (up to) the first 10,000
    training images: enough for four significant digits without a float copy of the whole set."""
    x = images[:10_000].float().div(255)
    std = x.std((0, 2, 3)).clamp_min(1e-3)
    return x.mean((0, 2, 3)), std


class TokenBatch(NamedTuple):
    tokens: Tensor  # (B, L) token indices, 0 = padding, L the longest review in this batch
    labels: Tensor  # (B,) class indices or standardised ratings
    evidence: Tensor | None  # (B, L) True on tokens that carry the label (synthetic reviews), else None


class TokenBatches:
    """Mini-batches of padded token indices that live on the device, each cut to its longest review.

    Training order depends only on (seed, epoch), as in ``TensorBatches``: a shuffled permutation, then,
    within pools of ``bucket`` batches, reviews sorted by length so a batch pads little, then the batches
    themselves shuffled. Evaluation goes longest first. Batch lengths come from a CPU copy of the lengths,
    so cutting a batch never waits for the device. A batch is never narrower than ``min_width`` positions
    (more padding), so a pool with k chunks or k maxima fits every batch of short texts. Under DDP each rank
    takes every ``world``-th review of each global batch.
    """

    def __init__(self, tokens: Tensor, lengths: Tensor, labels: Tensor, batch_size: int, *, shuffle: bool,
                 seed: int = 0, evidence: Tensor | None = None, drop_last: bool = False, bucket: int = 50,
                 min_width: int = 1, rank: int = 0, world: int = 1) -> None:
        self.tokens, self.labels, self.evidence = tokens, labels, evidence
        self.lengths = lengths.cpu()
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.bucket, self.rank, self.world = bucket, rank, world
        self.min_width = min(min_width, tokens.shape[1])

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The review indices of one epoch, batch after batch (on the CPU)."""
        if not self.shuffle:
            return torch.sort(self.lengths, descending=True, stable=True).indices
        g = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
        order = torch.randperm(len(self.labels), generator=g)  # then the batches of similar lengths, shuffled
        pool = self.batch_size * max(self.bucket, 1)
        order = torch.cat([chunk[torch.sort(self.lengths[chunk], stable=True).indices] for chunk in order.split(pool)])
        batches = list(order[:len(self) * self.batch_size].split(self.batch_size))
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return torch.cat(batches) if batches else order[:0]

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[TokenBatch]:
        order = self.order(epoch)
        on_device = order.to(self.tokens.device)
        for i in range(start, len(self)):
            part = slice(i * self.batch_size, (i + 1) * self.batch_size)
            index, cpu_index = on_device[part][self.rank::self.world], order[part][self.rank::self.world]
            if len(cpu_index) == 0:
                continue
            length = max(int(self.lengths[cpu_index].max()), self.min_width)
            evidence = self.evidence[index, :length] if self.evidence is not None else None
            yield TokenBatch(self.tokens[index, :length], self.labels[index], evidence)

    def __iter__(self) -> Iterator[TokenBatch]:
        return self.epoch(0)
