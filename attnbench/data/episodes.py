"""Few-shot data: class-disjoint splits of uint8 images, and N-way K-shot episodes drawn from them.

Every loader returns a ``FewShotData``: train, val and test splits whose classes do not overlap, each holding
all its images as one uint8 tensor (N, C, H, W) that lives on the training device. An episode is a set of
indices into that tensor, so building one costs a few random numbers and a gather: no image is decoded
after loading. Episode ``e`` of epoch ``k`` depends only on (seed, split, k, e), so a resumed run, and every
rank of a distributed one, draws exactly the episodes an uninterrupted single process would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..seeds import mixed_seed

SPLITS = ("train", "val", "test")
STREAMS = {split: i for i, split in enumerate(SPLITS)}  # keeps the random streams of the splits apart


@dataclass
class ClassSplit:
    """The images of one split, with labels 0..len(classes)-1 naming ``classes``."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> Tensor:
        return torch.bincount(self.labels.cpu(), minlength=len(self.classes))


@dataclass
class FewShotData:
    train: ClassSplit
    val: ClassSplit
    test: ClassSplit
    source: str  # what was loaded, for messages: "data.path=/x", "GATE-engine/omniglot"

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    def split(self, name: str) -> ClassSplit:
        return getattr(self, name)

    def check_disjoint(self) -> None:
        """Loaders build splits from disjoint class lists; this guards against a source that repeats a name."""
        seen: dict[str, str] = {}
        for name in SPLITS:
            for cls in self.split(name).classes:
                if cls in seen:
                    raise UserError(f"{self.source}: class {cls!r} is in both the {seen[cls]} and the {name} split")
                seen[cls] = name


def split_from_arrays(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> ClassSplit:
    """A split from uint8 images (N, C, H, W) and labels that index ``classes``; classes without images are
    dropped and the rest renumbered, so every class of a split can be drawn."""
    present = np.unique(labels)
    remap = np.full(max(len(classes), 1), -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    return ClassSplit(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(remap[labels]).long(),
                      [classes[i] for i in present])


def split_classes(names: list[str], val_fraction: float, test_fraction: float, seed: int,
                  source: str) -> tuple[list[int], list[int], list[int]]:
    """Class indices (train, val, test): a seeded shuffle cut by the fractions, each part at least one class."""
    n = len(names)
    if n < 3:
        held = f"one class ({names[0]})" if n == 1 else f"{n} classes"
        raise UserError(f"{source} holds {held}; few-shot learning needs at least 3 classes, to split them into "
                        f"disjoint train, val and test classes")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                        f"between 0 and 1 and leave classes for training")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(n * test_fraction)), n - 2)
    n_val = min(max(1, round(n * val_fraction)), n - n_test - 1)
    return (sorted(order[n_val + n_test:].tolist()), sorted(order[:n_val].tolist()),
            sorted(order[n_val:n_val + n_test].tolist()))


def episode_seed(seed: int, split: str, epoch: int, index: int) -> int:
    """A 63-bit seed for one episode, well mixed from its coordinates (no two coordinates share a stream)."""
    return mixed_seed(seed, STREAMS[split], epoch, index)


@dataclass
class Episode:
    """Indices into a split's images: ``support`` (ways, shots), ``query`` (ways, queries), and the split's
    class id of each way (``classes``, for CAN's global head over the training classes)."""

    support: Tensor
    query: Tensor
    classes: Tensor


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class from one split.

    Ways are distinct classes drawn uniformly; each way's shots and queries are distinct images of it.
    """

    def __init__(self, split: ClassSplit, name: str, ways: int, shots: int, queries: int, seed: int,
                 source: str, prefix: str = "") -> None:
        self.name, self.ways, self.shots, self.queries, self.seed = name, ways, shots, queries, seed
        counts = split.counts()
        if ways > len(split.classes):
            raise UserError(f"data.{prefix}ways={ways} but the {name} split of {source} has only "
                            f"{len(split.classes)} classes; lower data.{prefix}ways")
        need = shots + queries
        smallest = int(counts.argmin())
        if need > counts[smallest]:
            raise UserError(f"data.shots + data.{prefix}queries = {shots} + {queries} = {need} but class "
                            f"{split.classes[smallest]!r} of the {name} split of {source} has only "
                            f"{int(counts[smallest])} images; lower data.shots or data.{prefix}queries")
        self.order = torch.argsort(split.labels.cpu(), stable=True)  # image indices grouped by class
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.classes = len(split.classes)

    def episode(self, epoch: int, index: int) -> Episode:
        g = torch.Generator().manual_seed(episode_seed(self.seed, self.name, epoch, index))
        classes = torch.randperm(self.classes, generator=g)[:self.ways]
        counts = self.counts[classes]
        # a random ordering of each chosen class's images: uniform keys, padding pushed past the end
        keys = torch.rand(self.ways, int(counts.max()), generator=g)
        keys[torch.arange(keys.shape[1]).unsqueeze(0) >= counts.unsqueeze(1)] = 2.0
        picked = keys.argsort(1)[:, :self.shots + self.queries]
        chosen = self.order[self.starts[classes].unsqueeze(1) + picked]
        return Episode(chosen[:, :self.shots], chosen[:, self.shots:], classes)
