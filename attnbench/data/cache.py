"""The user's cache folder and the decode cache: image sets decoded once, kept as uint8 ``.npy`` files.

Decoding a folder of JPEGs costs far more than reading the decoded bytes back: CIFAR-10's 60,000 files take
tens of seconds to decode and a fraction of a second to load as one array. Every loader that decodes images
(folders, caption files, hub parquet) asks ``cached_array`` for them under a key made of everything the pixels
depend on: the files (resolved absolute path, size, modification time) or the hub split's fingerprint and its
files, the resize setting, and ``DECODE_VERSION``. A changed, added or removed file gives a new key, so a stale
entry is never read; old entries stay until the user clears the folder.

Entries are plain ``.npy`` files, never pickle, each with the CRC-32 of its bytes beside it (``.npy.crc32``).
They are written to a temporary file in the same folder and renamed into place, so parallel grid jobs at worst
decode twice and a reader never sees half an entry. Every entry is checked before use (a plain file, a header
that matches the file's size and the shape and dtype asked for, its checksum, the bounds of stored indices): one
that fails is decoded again after one warning. A folder that cannot be written, or a full disk, leaves the run
uncached after one warning. Nothing already in the cache is removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DECODE_VERSION = 2  # part of every decode-cache key: raise it whenever a change in decoding changes the pixels

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
    """A digest of each file's resolved absolute path, size and modification time: touching or replacing one
    file changes it, and two sets at the same relative path (run from different folders) never share it."""
    h = hashlib.sha256()
    folders: dict[str, str] = {}  # each folder resolved once: a set's files share a handful of folders
    for path in paths:
        folder, name = os.path.split(os.fspath(path))
        if folder not in folders:
            folders[folder] = os.path.realpath(folder or ".")
        st = os.stat(path)
        # os.fsencode: a file name that is not UTF-8 (undecodable bytes kept as surrogates) is hashed as its bytes
        h.update(os.fsencode(os.path.join(folders[folder], name)) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    """The cache file of one decoded array: ``<kind>-<digest of key>.npy``."""
    settings = {**key, "decode_version": DECODE_VERSION}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_folder() / f"{kind}-{digest}.npy"


def _checksum_path(path: Path) -> Path:
    """Beside each entry, the CRC-32 of its array's bytes: an entry of the right shape with other bytes (a
    file copied over it, a disk error) is caught before a run trains on it."""
    return path.with_name(path.name + ".crc32")


def _crc32(array: np.ndarray) -> int:
    """CRC-32 of the array's bytes, a block at a time (a memory-mapped entry is read once, never held whole)."""
    flat, crc, block = array.reshape(-1), 0, 64 * 2**20 // max(array.itemsize, 1)
    for start in range(0, flat.size, block):
        crc = zlib.crc32(np.ascontiguousarray(flat[start:start + block]).view(np.uint8), crc)
    return crc


def _stale(path: Path, why: str) -> None:
    warn_once(f"the decode cache entry {path} {why}; decoding again")


def read_entry(path: Path, mmap: bool = False, dtype: type = np.uint8, shape: tuple[int, ...] | None = None,
               valid: Callable[[np.ndarray], bool] | None = None) -> np.ndarray | None:
    """The stored array, or None when there is none. Every entry is checked before use: a plain file (a FIFO
    or a folder under its name is skipped, never opened blocking), a header that matches the file's size,
    ``dtype`` and ``shape``, the bytes its checksum names, and ``valid`` (bounds of stored indices); one that
    fails is reported once and ignored (the caller decodes again and replaces it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # none there (a folder that cannot be
        return None  # written is reported when the entry is written)
    except OSError as e:
        _stale(path, f"cannot be opened ({e.strerror or type(e).__name__})")
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _stale(path, "is not a regular file")
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            found_shape, fortran, found_dtype = read_header(f)
            offset = f.tell()
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            _stale(path, f"is unreadable ({type(e).__name__})")
            return None
        size = os.fstat(fd).st_size
        nbytes = int(np.prod(found_shape, dtype=np.int64)) * found_dtype.itemsize
        if found_dtype != np.dtype(dtype) or fortran:
            _stale(path, f"does not hold {np.dtype(dtype).name} values")
            return None
        if shape is not None and tuple(found_shape) != tuple(shape):
            _stale(path, f"holds an array of shape {tuple(found_shape)}, not {tuple(shape)}")
            return None
        if size != offset + nbytes:  # truncated, or a header claiming more than the file holds
            _stale(path, f"holds {size - offset:,} bytes where its header says {nbytes:,}")
            return None
        try:
            if mmap:
                array = np.memmap(f, dtype=found_dtype, mode="r", offset=offset, shape=tuple(found_shape))
            else:
                array = np.empty(found_shape, found_dtype)
                if f.readinto(memoryview(array.reshape(-1)).cast("B")) != nbytes:
                    raise EOFError
        except (OSError, ValueError, EOFError) as e:
            _stale(path, f"is unreadable ({type(e).__name__})")
            return None
    try:
        expected = int(_checksum_path(path).read_text().strip())
    except (OSError, ValueError):
        expected = None
    if expected is None or expected != _crc32(array):
        _stale(path, "does not match its checksum" if expected is not None else "has no checksum")
        return None
    if valid is not None and not valid(array):
        _stale(path, "holds values out of range")
        return None
    return array


def _unwritable(folder: Path, e: OSError) -> None:
    warn_once(f"the cache folder {folder} is not writable ({e.strerror or type(e).__name__}); this run goes on "
              f"uncached (set XDG_CACHE_HOME, or data.cache=false to skip the cache)")


def _replace(tmp: str, path: Path, crc: int) -> None:
    """Move a written entry into place, its checksum beside it (written first: a reader of the new entry finds
    its checksum; one between the two renames finds a mismatch and decodes again)."""
    checksum = _checksum_path(path)
    fd, tmp_sum = tempfile.mkstemp(dir=path.parent, prefix=checksum.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{crc}\n")
        os.replace(tmp_sum, checksum)
    except BaseException:
        Path(tmp_sum).unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_entry(path: Path, array: np.ndarray) -> None:
    """Store ``array`` atomically: a temporary file in the same folder, then renamed over ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        _replace(tmp, path, _crc32(array))
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
        crc = _crc32(out)
        del out
        _replace(tmp, path, crc)
    except OSError as e:
        _unwritable(path.parent, e)
        return None
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()
    return read_entry(path, mmap=True, shape=shape)


def cached_array(kind: str, key: dict[str, Any] | None, build: Callable[[], np.ndarray],
                 enabled: bool = True, images: bool = True, shape: tuple[int, ...] | None = None,
                 valid: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
    """``build()`` (decoding), or the array a run with the same ``key`` stored before, if it has ``shape``
    and passes ``valid`` (see ``read_entry``). ``key`` None: this source cannot be keyed honestly (an
    in-memory hub set), so it is decoded every time. ``images`` False: a small int64 array (split indices),
    not counted as images."""
    tally = count if images else (lambda **_: None)
    if not enabled or key is None:
        array = build()
        tally(decoded=len(array))
        return array
    path = entry_path(kind, key)
    array = read_entry(path, dtype=np.uint8 if images else np.int64, shape=shape, valid=valid)
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
