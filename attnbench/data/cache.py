"""The user's cache folder and the decode cache: image sets decoded once, kept as uint8 ``.npy`` files.

Decoding a folder of JPEGs costs far more than reading the decoded bytes back: CIFAR-10's 60,000 files take
tens of seconds to decode and a fraction of a second to load as one array. Every loader that decodes images
(folders, caption files, hub parquet) asks ``cached_array`` for them under a key made of everything the pixels
depend on: the files (path, size, modification time) or the hub split's fingerprint and its files, the resize
setting, and ``DECODE_VERSION``. A changed, added or removed file gives a new key, so a stale entry is never
read; old entries stay until the user clears the folder.

Entries are plain ``numpy.save`` files read with ``allow_pickle=False`` (never pickle). They are written to a
temporary file in the same folder and renamed into place, so parallel grid jobs at worst decode twice and a
reader never sees half an entry. An entry that cannot be read is decoded again after one warning; a folder that
cannot be written leaves the run uncached after one warning. Nothing already in the cache is removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DECODE_VERSION = 1  # part of every decode-cache key: raise it whenever a change in decoding changes the pixels

log = logging.getLogger("attnbench")
_warned: set[str] = set()


def cache_folder() -> Path:
    """Where attnbench keeps what it can rebuild: ``$XDG_CACHE_HOME/attnbench``, else ``~/.cache/attnbench``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "attnbench"


def warn_once(message: str) -> None:
    """One warning line on stderr (and in the run's log), at most once per process for the same message."""
    if message in _warned:
        return
    _warned.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
    log.warning(message)


def files_signature(paths: Iterable[Path | str]) -> str:
    """A digest of each file's path, size and modification time: touching or replacing one file changes it."""
    h = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    """The cache file of one decoded array: ``<kind>-<digest of key>.npy``."""
    settings = {**key, "decode_version": DECODE_VERSION}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_folder() / f"{kind}-{digest}.npy"


def read_entry(path: Path, mmap: bool = False, dtype: type = np.uint8) -> np.ndarray | None:
    """The stored array, or None when there is none; an entry that cannot be read is reported and ignored
    (the caller decodes again and overwrites it)."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # none there (a folder that cannot be
        return None  # written is reported when the entry is written)
    except (OSError, ValueError, EOFError) as e:
        warn_once(f"the decode cache entry {path} is unreadable ({type(e).__name__}); decoding again")
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        warn_once(f"the decode cache entry {path} does not hold {np.dtype(dtype).name} values; decoding again")
        return None
    return array


def _unwritable(folder: Path, e: OSError) -> None:
    warn_once(f"the cache folder {folder} is not writable ({e.strerror or type(e).__name__}); this run goes on "
              f"uncached (set XDG_CACHE_HOME, or data.cache=false to skip the cache)")


def write_entry(path: Path, array: np.ndarray) -> None:
    """Store ``array`` atomically: a temporary file in the same folder, then renamed over ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:
        _unwritable(path.parent, e)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def build_on_disk(path: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], None]) -> np.ndarray | None:
    """Decode straight into a new entry (a memory-mapped ``.npy`` filled by ``fill``), for sets larger than
    memory; returns the entry mapped read-only, or None when the folder cannot be written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "r+b") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            offset = f.tell()
            f.flush()
            # every block the entry needs, taken before it is mapped: a write through the map to a full disk
            # is SIGBUS, which kills the process with nothing recorded; here it is ENOSPC, reported below
            os.posix_fallocate(f.fileno(), 0, offset + int(np.prod(shape, dtype=np.int64)))
        out = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
        fill(out)
        out.flush()
        del out
        os.replace(tmp, path)
    except OSError as e:
        _unwritable(path.parent, e)
        return None
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()
    return np.load(path, mmap_mode="r", allow_pickle=False)


def cached_array(kind: str, key: dict[str, Any] | None, build: Callable[[], np.ndarray],
                 enabled: bool = True, images: bool = True) -> np.ndarray:
    """``build()`` (decoding), or the array a run with the same ``key`` stored before. ``key`` None: this
    source cannot be keyed honestly (an in-memory hub set), so it is decoded every time. ``images`` False: a
    small int64 array (split indices), not counted as images."""
    tally = count if images else (lambda **_: None)
    if not enabled or key is None:
        array = build()
        tally(decoded=len(array))
        return array
    path = entry_path(kind, key)
    array = read_entry(path, dtype=np.uint8 if images else np.int64)
    if array is not None:
        tally(cached=len(array))
        return array
    array = build()
    tally(decoded=len(array))
    write_entry(path, array)
    return array


# ---------------------------------------------------------------------------------------- what a load did


@dataclass
class LoadReport:
    """What one data load did, for the run's "data ready" line."""

    seconds: float = 0.0
    decoded: int = 0  # images decoded from their files or bytes
    cached: int = 0  # images read back from the decode cache
    streamed: int = 0  # images left on disk (the cache's entry or their files), read a batch at a time

    def line(self) -> str:
        """``data ready in 0.42 s (cached 60,000 images)``; a streamed set adds ``, streaming N images from disk``."""
        done = []
        if self.cached:
            done.append(f"cached {self.cached:,} images")
        if self.decoded:
            done.append(f"decoded {self.decoded:,} files")
        line = f"data ready in {self.seconds:.2f} s" + (f" ({', '.join(done)})" if done else "")
        return line + (f", streaming {self.streamed:,} images from disk" if self.streamed else "")


_current: LoadReport | None = None
_last: LoadReport | None = None


def count(decoded: int = 0, cached: int = 0, streamed: int = 0) -> None:
    if _current is not None:
        _current.decoded += decoded
        _current.cached += cached
        _current.streamed += streamed


def timed_load(loader: Callable) -> Callable:
    """Wrap a loader so its time and what it decoded are kept for ``last_load`` (signature kept: data keys are
    checked against it)."""
    @functools.wraps(loader)
    def load(*args: Any, **kwargs: Any) -> Any:
        global _current, _last
        report, started = LoadReport(), time.perf_counter()
        outer, _current = _current, report
        try:
            return loader(*args, **kwargs)
        finally:
            report.seconds = time.perf_counter() - started
            _current, _last = outer, report
    return load


def last_load() -> LoadReport | None:
    """The report of the last data load of this process (None before any)."""
    return _last
