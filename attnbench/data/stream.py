"""Image sets that stay on disk, fed to the trainer by a ``torch.utils.data.DataLoader`` a batch at a time.

``StreamImages`` stands where an in-memory split holds its uint8 tensor: it has a length and a shape, and
indexing it reads those images (from the decode cache's memory-mapped entry, or by decoding the encoded files).
``StreamBatches`` has the interface of ``TensorBatches`` (``len``, ``order``, ``epoch(epoch, start)``) and yields
the very same batches: the same permutation of epoch ``e`` (from (seed, e) alone), the same rank's share of each
global batch, and the same augmentation, drawn on the device from the task's generator (whose state the
checkpoints keep) in batch order, so what the workers do and when never changes a draw. A resumed epoch asks the
workers only for the batches from ``start`` on; the skipped ones are never read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..signals import leave_signals_to_parent
from .batches import Augment, epoch_order


class ArrayRows:
    """Rows of a uint8 ``.npy`` file (the decode cache's entry, checked when it was opened), read with ``pread``
    in each process that reads (a worker opens its own). Not memory-mapped: a file cut short while a run reads
    it would be SIGBUS in the worker, here it is one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.offset, self.row_shape, self.row_bytes = 0, (), 0

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        with open(fd, "rb", closefd=False) as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
            self.offset = f.tell()
        self.row_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64))
        self.fd = fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self.fd is None:
            self._open()
        out = np.empty((len(rows), *self.row_shape), np.uint8)
        for i in np.argsort(rows, kind="stable"):  # the file read front to back
            view = memoryview(out[i]).cast("B")
            if os.preadv(self.fd, [view], self.offset + int(rows[i]) * self.row_bytes) != self.row_bytes:
                raise UserError(f"the decode cache entry {self.path} was cut short while this run read it; run "
                                f"again (the entry is checked and rebuilt), or set data.cache=false")
        return out

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens the file itself
        return {**self.__dict__, "fd": None}

class ItemRows:
    """Rows decoded from their encoded items (files, hub bytes) whenever they are read."""

    def __init__(self, items: Any, decode: Callable[[Any, str], np.ndarray], source: str) -> None:
        self.items, self.decode, self.source = items, decode, source

    def read(self, rows: np.ndarray) -> np.ndarray:
        arrays = [self.decode(item, self.source) for item in self.items.take(rows.tolist())]
        return np.stack(arrays).transpose(0, 3, 1, 2)


class StreamImages:
    """uint8 images (N, C, H, W) left on disk; ``images[index]`` reads them into a tensor. The split's own rows
    of the underlying set are ``rows`` (a validation split carved from train is a subset of train's file)."""

    device = torch.device("cpu")

    def __init__(self, reader: ArrayRows | ItemRows, rows: np.ndarray, shape: Sequence[int]) -> None:
        self.reader, self.rows, self.item_shape = reader, np.asarray(rows, dtype=np.int64), tuple(shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    def subset(self, index: np.ndarray) -> StreamImages:
        return StreamImages(self.reader, self.rows[index], self.item_shape)

    def read(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = self.rows[np.asarray(index, dtype=np.int64)]
        if len(rows) == 0:  # a rank's share of a small last batch
            return np.zeros((0, *self.item_shape), np.uint8)
        return self.reader.read(rows)

    def __getitem__(self, key: slice | Tensor | np.ndarray) -> Tensor:
        index = np.arange(len(self.rows))[key] if isinstance(key, slice) else np.asarray(key)
        return torch.from_numpy(self.read(index))

    def to(self, device: torch.device) -> StreamImages:
        """Stays on disk: batches go to ``device`` as they are read."""
        return self


class _Failure:
    """What a worker hands back instead of a batch it could not read: the one line to stop the run with.
    (An exception raised in a worker reaches the trainer as a new one whose message is the worker's whole
    traceback.)"""

    def __init__(self, message: str) -> None:
        self.message = message


class _Batches(Dataset):
    """Item ``i`` of the loader's sampler is the list of a batch's indices; the dataset reads them at once."""

    def __init__(self, images: StreamImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: list[int]) -> Tensor | _Failure:
        try:
            return torch.from_numpy(self.images.read(index))
        except UserError as e:
            return _Failure(str(e))
        except OSError as e:  # the cache entry or a file gone, unreadable
            return _Failure(f"cannot read {e.filename or 'the streamed images'} while streaming ({e.strerror or e}); "
                            f"run again once the data is back in place")


def _quiet_worker(_: int) -> None:
    torch.set_num_threads(1)  # a worker copies and decodes; the training threads keep the cores
    leave_signals_to_parent()


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


class StreamBatches:
    """``TensorBatches`` for images read from disk by ``workers`` DataLoader processes: the same batches, in
    the same order, augmented and normalised on the device the labels are on."""

    def __init__(self, images: StreamImages, labels: Tensor, batch_size: int, *, mean: Tensor, std: Tensor,
                 shuffle: bool, seed: int = 0, augment: Augment | None = None, drop_last: bool = False,
                 generator: torch.Generator | None = None, rank: int = 0, world: int = 1,
                 workers: int | None = None, prefetch: int = 4) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world = rank, world
        self.device = labels.device
        self.shift = (mean * 255).to(self.device).view(1, -1, 1, 1)
        self.scale = (1 / (std * 255)).to(self.device).view(1, -1, 1, 1)
        self.augment, self.generator = augment, generator
        self.workers = default_workers() if workers is None else workers
        self.prefetch = prefetch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The permutation ``TensorBatches.order`` gives (on the CPU, where the workers read)."""
        return epoch_order(len(self.labels), self.seed, epoch, self.shuffle)

    def _loader(self, batches: list[list[int]]) -> Iterator[Tensor]:
        workers = min(self.workers, len(batches))
        return iter(DataLoader(_Batches(self.images), batch_size=None, sampler=batches, num_workers=workers,
                               pin_memory=self.device.type == "cuda", worker_init_fn=_quiet_worker,
                               prefetch_factor=self.prefetch if workers else None))

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(epoch)
        # every batch, even a rank's empty share of a small last one: under DDP all ranks take the same steps
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world].tolist()
                   for i in range(start, len(self))]
        if not batches:
            return
        for index, x in zip(batches, self._loader(batches)):
            if isinstance(x, _Failure):
                raise UserError(x.message)
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None and self.generator is not None:
                x = self.augment(x, self.generator)
            yield x.float().sub_(self.shift).mul_(self.scale), self.labels[torch.tensor(index, device=self.device)]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)
