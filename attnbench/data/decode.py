"""Encoded images (files, or the bytes of a hub parquet column) to uint8 arrays: in parallel, once, cached.

``decoded_images`` is where every image loader ends: it decodes the whole set into memory (through the
decode cache, ``cache.py``), or, for a set to stream (``data.stream``), leaves it on disk as ``StreamImages``
that DataLoader workers read a batch at a time: from the decode cache's memory-mapped entry when the cache is
on (decoded once, then only read), else from the encoded files themselves, decoded in the workers.

Decoding runs on worker processes where the platform forks (PIL holds the GIL for most of a small image's
decode, so threads barely help on 32×32 JPEGs), on threads otherwise; on a terminal a progress line shows it.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from ..errors import UserError
from ..signals import die_with_parent, leave_signals_to_parent
from .cache import build_on_disk, cached_array, count, entry_path, read_entry
from .stream import ArrayRows, ItemRows, StreamImages

Item = bytes | Path | str  # encoded bytes, or the path of a file
Decoder = Callable[[Item, str], np.ndarray]  # (item, where) -> uint8 (H, W, C)
Stream = bool | Literal["auto"]
CHUNK = 256  # images per task handed to a decoding worker
PARALLEL_FROM = 512  # fewer images are decoded in this process: starting workers would cost more


class ListItems:
    """Encoded images held as a list (file paths, or bytes)."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def take(self, rows: Sequence[int]) -> list[Item]:
        return [self.items[r] for r in rows]


class HubItems:
    """The encoded bytes of one image column of a hub split (memory-mapped Arrow), read a chunk at a time."""

    def __init__(self, ds: Any, column: str) -> None:
        import datasets

        self.ds = ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        self.column = column

    def __len__(self) -> int:
        return len(self.ds)

    def take(self, rows: Sequence[int]) -> list[Item]:
        return [cell["bytes"] for cell in self.ds[list(rows)][self.column]]


Items = ListItems | HubItems


GRAY_MODES = ("1", "L", "LA", "I", "F")  # and the 16-bit ones, I;16 and its byte orders


def _gray(mode: str) -> bool:
    return mode in GRAY_MODES or mode.startswith("I;16")


def _eight_bit(img: Any) -> Any:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit ``L`` with its contrast: PIL's own
    conversion clips every value above 255 to white (a 16-bit image becomes two levels). 16-bit images
    (``I;16``) map 0..65535 to 0..255; ``I`` images as 16-bit when a value exceeds 255, else as they are;
    ``F`` images in 0..1 as fractions of full scale, else like ``I``."""
    from PIL import Image

    array = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(array.max()) if array.size else 0.0
    if img.mode.startswith("I;16") or top > 255:
        full = 65535.0
    elif img.mode == "F" and top <= 1.0:
        full = 1.0
    else:
        full = 255.0
    return Image.fromarray(np.clip(np.rint(array * (255.0 / full)), 0, 255).astype(np.uint8), "L")


def _image_source(item: Item) -> IO[bytes]:
    """The bytes, or the file opened for reading; a path that is no regular file (a FIFO named ``*.png``
    would block the open forever, a device would be read without end) is refused in one line."""
    if isinstance(item, bytes):
        return io.BytesIO(item)
    fd = os.open(item, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{item} is not a regular file (a FIFO, a device or a folder named like an image); "
                        f"remove it from the data folder")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def decode_image(item: Item, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """One image as uint8 (H, W, C): grayscale sources (of any bit depth) stay one channel unless ``channels``
    says otherwise, everything else becomes RGB; resized (bilinear) to ``size`` when given."""
    from PIL import Image

    with _image_source(item) as source, Image.open(source) as img:
        if channels is None:
            channels = 1 if _gray(img.mode) else 3
        if img.mode.startswith("I") or img.mode == "F":
            img = _eight_bit(img)
        mode = "L" if channels == 1 else "RGB"
        if img.mode != mode:  # converting to the mode it has would only copy it
            img = img.convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def checked(decode: Callable[[Item], np.ndarray], item: Item, where: str) -> np.ndarray:
    """``decode(item)``; a file that will not decode is named in one line."""
    try:
        return decode(item)
    except UserError:
        raise
    except Exception as e:
        what = f"an image in {where}" if isinstance(item, bytes) else str(item)
        raise UserError(f"cannot decode {what} ({type(e).__name__}): remove or replace the file") from None


def image_decoder(size: tuple[int, int], channels: int) -> Decoder:
    """The decoder of a classification or few-shot set: every image brought to ``size`` and ``channels``."""
    return partial(_decode_sized, size=tuple(size), channels=channels)


def _decode_sized(item: Item, where: str, size: tuple[int, int], channels: int) -> np.ndarray:
    return checked(partial(decode_image, size=size, channels=channels), item, where)


def _decode_chunk(decode: Decoder, items: list[Item], where: str) -> np.ndarray:
    return np.stack([decode(item, where) for item in items]).transpose(0, 3, 1, 2)


def decode_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


def _pool(n: int) -> Executor | None:
    workers = decode_workers()
    if n < PARALLEL_FROM or workers == 1:
        return None
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_worker_started)
    return ThreadPoolExecutor(workers)


# where the progress line goes while a run shows a spinner (the run's ``phase``), which would otherwise print
# each redraw of the line as a line of its own; None: the line is drawn on stderr, when it is a terminal
_sink: Callable[[str], None] | None = None


@contextmanager
def progress_to(show: Callable[[str], None]) -> Iterator[None]:
    """Within the block the decoding progress line is handed to ``show`` (a spinner's text)."""
    global _sink
    previous, _sink = _sink, show
    try:
        yield
    finally:
        _sink = previous


def _worker_started() -> None:
    """A decoding worker leaves SIGINT and SIGTERM to the job, and dies with it (a SIGKILLed job leaves no
    worker behind)."""
    leave_signals_to_parent()
    die_with_parent()


class _Progress:
    """``decoding SOURCE: done/total images, N/s`` redrawn in place (beside the run's spinner, or on stderr
    when it is a terminal); silent otherwise. The line never wraps (a wrapped line cannot be redrawn: each
    update would add lines): the source is shortened from the left to fit the terminal's width."""

    def __init__(self, total: int, source: str) -> None:
        self.total, self.source, self.done = total, source, 0
        self.shown = (_sink is not None or sys.stderr.isatty()) and total >= PARALLEL_FROM
        self.started = self.last = time.perf_counter()

    def line(self, width: int) -> str:
        speed = self.done / max(time.perf_counter() - self.started, 1e-9)
        counts = f": {self.done:,}/{self.total:,} images, {speed:,.0f}/s"
        room = width - 1 - len("decoding ") - len(counts)  # the last column stays empty: no wrap
        source = self.source if len(self.source) <= room else "…" + self.source[len(self.source) - room + 1:]
        return f"decoding {source}{counts}"

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.shown and (now - self.last > 0.2 or self.done == self.total):
            self.last = now
            width = shutil.get_terminal_size().columns
            if _sink is not None:
                _sink(self.line(width - 2))  # the spinner and a space before it
                return
            end = "\n" if self.done == self.total else ""
            print(f"\r{self.line(width)}\x1b[K", end=end, file=sys.stderr, flush=True)  # K: clear the rest


def decode_into(out: np.ndarray, items: Items, decode: Decoder, source: str) -> None:
    """Fill ``out`` (N, C, H, W) with the decoded ``items``, chunk by chunk, on worker processes."""
    n = len(items)
    progress = _Progress(n, source)
    starts = range(0, n, CHUNK)
    pool = _pool(n)
    if pool is None:
        for start in starts:
            rows = range(start, min(start + CHUNK, n))
            out[start:start + len(rows)] = _decode_chunk(decode, items.take(rows), source)
            progress.add(len(rows))
        return
    with pool:
        # at most two chunks per worker in flight: the items of a hub set are read as they are needed
        pending: dict[Any, int] = {}
        ahead = 2 * decode_workers()
        for start in starts:
            rows = range(start, min(start + CHUNK, n))
            pending[pool.submit(_decode_chunk, decode, items.take(rows), source)] = start
            while len(pending) >= ahead:
                _collect(pending, out, progress)
        while pending:
            _collect(pending, out, progress)


def _collect(pending: dict[Any, int], out: np.ndarray, progress: _Progress) -> None:
    """Wait for at least one decoded chunk and put it in place."""
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    for future in done:
        start = pending.pop(future)
        chunk = future.result()
        out[start:start + len(chunk)] = chunk
        progress.add(len(chunk))


def decode_all(items: Items, decode: Decoder, shape: tuple[int, int, int], source: str) -> np.ndarray:
    """Every item decoded into one uint8 array (N, C, H, W)."""
    out = np.empty((len(items), *shape), np.uint8)
    decode_into(out, items, decode, source)
    return out


def memory_budget(budget_mb: float | None) -> int:
    """Bytes of decoded images a set may take in memory before ``data.stream=auto`` streams it: ``budget_mb``,
    else a quarter of this machine's memory."""
    if budget_mb is not None:
        return int(budget_mb * 2**20)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def streams(stream: Stream, nbytes: int, budget_mb: float | None) -> bool:
    """Whether a set of ``nbytes`` decoded bytes streams under ``data.stream``."""
    if stream == "auto":
        return nbytes > memory_budget(budget_mb)
    return bool(stream)


def decoded_images(kind: str, key: dict[str, Any] | None, items: Items, decode: Decoder,
                   shape: tuple[int, int, int], source: str, cache: bool, stream: bool) -> np.ndarray | StreamImages:
    """The images of one split, in memory (decoded once, then read from the cache) or, with ``stream``, left on
    disk as ``StreamImages``: the cache's entry when the cache is on, else the encoded items themselves."""
    n = len(items)
    if not stream:
        return cached_array(kind, key, lambda: decode_all(items, decode, shape, source), enabled=cache,
                            shape=(n, *shape))
    if cache and key is not None:
        path = entry_path(kind, key)
        stored = read_entry(path, mmap=True, shape=(n, *shape))
        if stored is not None:
            count(cached=n, streamed=n)
            return StreamImages(ArrayRows(path), np.arange(n), shape)
        stored = build_on_disk(path, (n, *shape), lambda out: decode_into(out, items, decode, source))
        if stored is not None:
            count(decoded=n, streamed=n)
            return StreamImages(ArrayRows(path), np.arange(n), shape)
    count(streamed=n)
    return StreamImages(ItemRows(items, decode, source), np.arange(n), shape)
