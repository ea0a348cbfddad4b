"""Image classification data: scikit-learn's digits, CIFAR-10/100 (hub parquet or the torchvision layout),
and the user's own image folders. Every loader returns uint8 tensors (N, C, H, W) and int64 labels, split
into train / val / test, small enough to live on the device as a whole; image folders and hub sets can
instead stream from disk (``data.stream``, ``StreamImages``), and their decoded images are cached
(``data.cache``, see ``cache.py``).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .cache import cached_array, files_signature
from .decode import (
    HubItems,
    ListItems,
    Stream,
    checked,
    decode_all,
    decode_image,
    decoded_images,
    image_decoder,
    streams,
)
from .hub import check_columns, hub_key, load_hub
from .stream import StreamImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images N×C×H×W, int64 labels)


@dataclass
class Split:
    images: Tensor | StreamImages  # uint8 (N, C, H, W), in memory or left on disk (data.stream)
    labels: Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageData:
    train: Split
    val: Split
    test: Split
    classes: list[str]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    def check(self, source: str) -> None:
        for name in ("train", "val", "test"):
            if len(getattr(self, name)) == 0:
                raise UserError(f"{source}: the {name} split is empty; add images or lower data.val_fraction")


def _stratified_split(labels: np.ndarray, fraction: float, seed: int,
                      cache: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, carved): ``fraction`` of every class carved out, with a fixed seed. ``cache``: the carved
    indices are kept in the decode cache (importing scikit-learn alone takes longer than a cached set's load)."""
    index = np.arange(len(labels))
    if fraction <= 0:
        return index, index[:0]
    if cache:
        key = {"labels": hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(),
               "fraction": fraction, "seed": seed}
        carved = cached_array("split", key, lambda: _stratified_split(labels, fraction, seed)[1], images=False,
                              valid=lambda stored: _valid_split(stored, len(labels)))
        return np.setdiff1d(index, carved, assume_unique=True), carved
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    classes, n_carved = int((counts > 0).sum()), int(np.ceil(fraction * len(labels)))
    # stratify when every class can appear on both sides; tiny sets fall back to a plain seeded split
    can_stratify = counts[counts > 0].min() >= 2 and classes <= n_carved <= len(labels) - classes
    stratify = labels if can_stratify else None
    rest, carved = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(carved)


def _valid_split(carved: np.ndarray, n: int) -> bool:
    """Stored carved indices are a split of ``n`` rows: one dimension, strictly increasing, within 0..n-1 and
    leaving rows on both sides (negative ones would index from the end: train and val would overlap)."""
    return (carved.ndim == 1 and 0 < len(carved) < n and int(carved[0]) >= 0 and int(carved[-1]) < n
            and bool(np.all(np.diff(carved) > 0)))


def _split(images: np.ndarray | StreamImages, labels: np.ndarray, index: np.ndarray) -> Split:
    if isinstance(images, StreamImages):
        return Split(images.subset(index), torch.from_numpy(labels[index]).long())
    if len(index) == len(labels) and np.array_equal(index, np.arange(len(labels))):
        return Split(torch.from_numpy(images), torch.from_numpy(labels).long())  # the whole array: no copy
    return Split(torch.from_numpy(np.ascontiguousarray(images[index])), torch.from_numpy(labels[index]).long())


def _limit(images: np.ndarray | StreamImages, labels: np.ndarray, limit: int | None,
           seed: int) -> tuple[np.ndarray | StreamImages, np.ndarray]:
    if limit is None or limit >= len(labels):
        return images, labels
    keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
    return images.subset(keep) if isinstance(images, StreamImages) else images[keep], labels[keep]


def load_digits(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8×8 handwritten digits: 1,797 real images, 10 classes, no network needed."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # pixel values are counts 0..16: scale to the 0..255 range every other source uses
    images = (bunch.images * (255 / 16)).round().astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rest, test = _stratified_split(labels, test_fraction, split_seed)
    train, val = _stratified_split(labels[rest], val_fraction / (1 - test_fraction), split_seed)
    return ImageData(_split(images, labels, rest[train]), _split(images, labels, rest[val]),
                     _split(images, labels, test), [str(d) for d in range(10)])


class _DataOnlyUnpickler(pickle.Unpickler):
    """Loads only what torchvision's CIFAR batches hold: dicts, lists, str/bytes/int and numpy arrays.

    ``pickle.load`` would call any function a file names (a crafted ``batches.meta`` runs code the moment it
    is read); this unpickler resolves only numpy's array and scalar reconstructors, ``numpy.dtype`` and
    ``_codecs.encode`` (how protocol 2 writes bytes), and refuses every other global before it is imported.
    """

    # (module, name) as the pickles of numpy 1.x (numpy.core) and 2.x (numpy._core) name them
    ALLOWED = {
        **{(module, "_reconstruct"): np.zeros(1).__reduce__()[0]
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        **{(module, "scalar"): np.int64(0).__reduce__()[0]
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> object:
        allowed = self.ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return allowed


def _unpickle_cifar(path: Path) -> dict:
    """One torchvision CIFAR file (a pickled dict), read with ``_DataOnlyUnpickler``; its keys as str."""
    if not path.exists():
        raise UserError(f"{path} is missing: data.root must hold the torchvision CIFAR folder")
    try:
        with path.open("rb") as f:
            content = _DataOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} is not a CIFAR batch: {e}; it was not loaded (replace the folder with "
                        f"torchvision's download)") from None
    except Exception as e:
        raise UserError(f"{path} is not a readable CIFAR batch ({type(e).__name__}); replace the folder with "
                        f"torchvision's download") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR batch: it holds a {type(content).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _cifar_field(content: dict, key: str, path: Path) -> object:
    if key not in content:
        keys = ", ".join(sorted(map(str, content))) or "none"
        raise UserError(f"{path} is not a CIFAR batch: it has no {key!r} entry (its entries: {keys})")
    return content[key]


def _cifar_names(content: dict, key: str, path: Path) -> list[str]:
    names = _cifar_field(content, key, path)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise UserError(f"{path}: {key!r} must be a list of class names")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _cifar_batch(content: dict, label_key: str, classes: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N, 3, 32, 32) and labels, checked against the layout torchvision's files have."""
    data, labels = _cifar_field(content, "data", path), _cifar_field(content, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: 'data' must be a uint8 array of N rows of 3072 bytes (32×32 RGB), found {shape}")
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        labels = labels.astype(np.int64)
    elif isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    else:
        raise UserError(f"{path}: {label_key!r} must be a list of integer labels")
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels in {label_key!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise UserError(f"{path}: labels must lie in 0..{classes - 1} (one per class name), found "
                        f"{labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_torchvision_cifar(folder: Path, label_key: str) -> tuple[Arrays, list[str]]:
    """The pickled batches torchvision downloads (``cifar-10-batches-py`` or ``cifar-100-python``), read as
    data only (``_DataOnlyUnpickler``) and checked entry by entry."""
    if (folder / "batches.meta").exists():  # CIFAR-10
        meta_path = folder / "batches.meta"
        names = _cifar_names(_unpickle_cifar(meta_path), "label_names", meta_path)
        parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        label_key = "labels"
    else:  # CIFAR-100
        meta_path = folder / "meta"
        key = "fine_label_names" if label_key == "fine_label" else "coarse_label_names"
        names = _cifar_names(_unpickle_cifar(meta_path), key, meta_path)
        parts = {"train": ["train"], "test": ["test"]}
        label_key = "fine_labels" if label_key == "fine_label" else "coarse_labels"
    splits = {}
    for split, files in parts.items():
        batches = [_cifar_batch(_unpickle_cifar(folder / f), label_key, len(names), folder / f) for f in files]
        splits[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return splits, names


def _read_hub_cifar(hub_id: str, image_column: str, label_column: str, cache: bool, stream: Stream,
                    memory_budget_mb: float | None) -> tuple[Arrays, list[str]]:
    """A hub parquet data set with an image column and a ClassLabel column (``uoft-cs/cifar10`` layout); its
    images decoded once into the cache, or streamed (``data.stream``)."""
    dd = load_hub(hub_id, "train offline: data.root=DIR (a torchvision cifar-10-batches-py folder), or the images as "
                          "files with data=image_folder data.path=DIR (train/<class>/*.jpg; the CIFAR-10 JPEG study "
                          "in the README, `Your own data`)")
    first = dd[next(iter(dd))]
    check_columns(first, hub_id, (image_column, label_column))
    feature = first.features[label_column]
    names = list(feature.names) if hasattr(feature, "names") else sorted({str(v) for v in first[label_column]})
    items = {split: HubItems(dd[split], image_column) for split in dd}
    sample = decode_image(items[next(iter(dd))].take([0])[0], None, None) if len(first) else np.zeros((32, 32, 3))
    shape = (sample.shape[2], *sample.shape[:2])
    total = sum(len(i) for i in items.values()) * int(np.prod(shape))
    streamed = streams(stream, total, memory_budget_mb)
    decode = image_decoder(shape[1:], shape[0])
    splits = {}
    for split in dd:
        key = hub_key(dd[split], hub_id, split, image_column)
        images = decoded_images("hub-images", key and {**key, "shape": shape}, items[split], decode, shape,
                                f"{hub_id}:{split}", cache, streamed)
        splits[split] = (images, np.asarray(dd[split][label_column], dtype=np.int64))
    return splits, names


def _decode_one(item: bytes | Path | str, source: str, size: tuple[int, int] | None,
                channels: int | None) -> np.ndarray:
    return checked(lambda i: decode_image(i, size, channels), item, source)


def _decode_all(items: list[bytes] | list[Path], source: str, size: tuple[int, int] | None = None,
                channels: int | None = None) -> np.ndarray:
    """Decode many images in parallel (uncached); a file that will not decode names itself."""
    if not items:
        return np.zeros((0, channels or 3, *(size or (32, 32))), np.uint8)
    if size is None or channels is None:  # the first image sets the shape every other image is brought to
        first = _decode_one(items[0], source, size, channels)
        size, channels = first.shape[:2], first.shape[2]
    return decode_all(ListItems(items), image_decoder(size, channels), (channels, *size), source)


def decoded_files(kind: str, files: list[Path] | list[str], source: str, size: tuple[int, int], channels: int,
                  cache: bool, stream: bool = False) -> np.ndarray | StreamImages:
    """Image files decoded to (N, C, *size) uint8, through the decode cache (keyed on every file's path, size
    and modification time, and the shape), or left on disk to stream."""
    key = {"files": files_signature(files), "shape": [channels, *size]} if files else None
    return decoded_images(kind, key, ListItems(files), image_decoder(size, channels), (channels, *size), source,
                          cache, stream)


def load_cifar(root: str | None = None, hub_id: str = "uoft-cs/cifar10", image_column: str = "img",
               label_column: str = "label", val_size: int = 5000, limit: int | None = None,
               split_seed: int = 0, cache: bool = True, stream: Stream = "auto",
               memory_budget_mb: float | None = None) -> ImageData:
    """CIFAR-10/100: from ``data.root`` in the torchvision layout, else from the Hugging Face hub (decoded
    once into the cache, or streamed: ``data.stream``; the torchvision batches are arrays already)."""
    if root is not None and stream is True:
        raise UserError("data.stream=true: the torchvision CIFAR batches in data.root are read whole and cannot "
                        "stream; drop data.root to stream the hub copy, or leave data.stream at auto")
    if root is not None:
        base = Path(root).expanduser()
        candidates = [base, base / "cifar-10-batches-py", base / "cifar-100-python"]
        folder = next((c for c in candidates if (c / "batches.meta").exists() or (c / "meta").exists()), None)
        if folder is None:
            raise UserError(f"data.root={root} holds no cifar-10-batches-py or cifar-100-python folder")
        splits, names = _read_torchvision_cifar(folder, label_column)
        source = str(folder)
    else:
        splits, names = _read_hub_cifar(hub_id, image_column, label_column, cache, stream, memory_budget_mb)
        source = hub_id
    if "train" not in splits or "test" not in splits:
        raise UserError(f"{source} must have train and test splits, found {', '.join(splits)}")
    train_images, train_labels = _limit(*splits["train"], limit, split_seed)
    test_images, test_labels = _limit(*splits["test"], limit, split_seed)
    if "validation" in splits:
        val_images, val_labels = _limit(*splits["validation"], limit, split_seed)
        data = ImageData(_split(train_images, train_labels, np.arange(len(train_labels))),
                         _split(val_images, val_labels, np.arange(len(val_labels))),
                         _split(test_images, test_labels, np.arange(len(test_labels))), names)
    else:
        fraction = min(val_size / max(len(train_labels), 1), 0.5)
        rest, val = _stratified_split(train_labels, fraction, split_seed, cache and root is None)
        data = ImageData(_split(train_images, train_labels, rest), _split(train_images, train_labels, val),
                         _split(test_images, test_labels, np.arange(len(test_labels))), names)
    data.check(source)
    return data


def _regular(entry: os.DirEntry) -> bool:
    """A regular file, or a link to one (a link loop or a dangling link is neither)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _folder_images(split_dir: Path) -> dict[str, list[str]]:
    """Class folder name -> its image files, sorted by name. Paths are kept as strings: making a Path of each of
    60,000 files would take longer than reading back their decoded pixels."""
    classes = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        entries = [e for e in os.scandir(class_dir) if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
        odd = next((e for e in entries if not _regular(e)), None)  # a FIFO would block the decoding for ever
        if odd is not None:
            raise UserError(f"{odd.path} is not a regular file (a FIFO, a device or a folder named like an image); "
                            f"remove it from the data folder")
        names = sorted(e.name for e in entries)
        if names:
            folder = str(class_dir)
            classes[class_dir.name] = [os.path.join(folder, name) for name in names]
    return classes


def data_folder(path: str | None, data: str, layout: str) -> Path:
    """``data.path`` of a folder data set, refused in one line when it is not given or not a folder."""
    if path is None:
        raise UserError(f"data={data} needs data.path=DIR ({layout})")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"data.path={path} is not a folder")
    return root


def _draw(files: list[str], count: int | None, seed: list[int]) -> list[str]:
    """``count`` of ``files`` drawn at random (``seed``: the split seed, the class and the split), in file order;
    all of them when ``count`` is None or not smaller."""
    if count is None or count >= len(files):
        return files
    return [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), count, replace=False))]


def load_image_folder(path: str | None = None, image_size: int | None = None, val_fraction: float = 0.1,
                      split_seed: int = 0, per_class: int | None = None, cache: bool = True,
                      stream: Stream = "auto", memory_budget_mb: float | None = None) -> ImageData:
    """The user's own images: ``path/train/<class>/*.png|jpg`` and ``path/test/<class>/…``, optionally
    ``path/val/<class>/…`` (else val is carved from train). ``image_size`` resizes to a square; by default
    every image is brought to the size of the first one. ``per_class`` keeps that many images of each class
    in every split, drawn with ``split_seed``: a class-balanced subset for a quick study (a new one for each
    seed under ``split_by_seed=true``), the others are never decoded. The decoded images are cached
    (``cache``); ``stream`` (true, or auto above ``memory_budget_mb``)
    leaves them on disk, read a batch at a time."""
    if per_class is not None and per_class < 1:
        raise UserError(f"data.per_class={per_class} must be at least 1 (or null for every image)")
    root = data_folder(path, "image_folder", "a folder with train/<class>/ and test/<class>/")
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise UserError(f"{d} is missing: data.path must hold train/<class>/ and test/<class>/ folders")
    train = _folder_images(train_dir)
    if not train:
        raise UserError(f"{train_dir} holds no images: expected train/<class>/*.png|jpg")
    classes = sorted(train)
    if len(classes) < 2:
        raise UserError(f"{train_dir} has one class ({classes[0]}); classification needs at least two")
    index = {name: i for i, name in enumerate(classes)}
    size = (image_size, image_size) if image_size else None

    def listing(split_dir: Path) -> tuple[list[str], np.ndarray]:
        found = train if split_dir == train_dir else _folder_images(split_dir)
        unknown = sorted(set(found) - set(index))
        if unknown:
            raise UserError(f"{split_dir} has classes that train lacks: {', '.join(unknown[:5])}")
        found = {name: _draw(found[name], per_class, [split_seed, index[name], split_dir.name == "test"])
                 for name in sorted(found)}
        files = [f for name in found for f in found[name]]
        return files, np.array([index[name] for name in found for _ in found[name]], dtype=np.int64)

    first = _decode_one(train[classes[0]][0], str(train_dir), size, None)
    size, channels = first.shape[:2], first.shape[2]
    dirs = {"train": train_dir, "test": test_dir, **({"val": root / "val"} if (root / "val").is_dir() else {})}
    listed = {split: listing(d) for split, d in dirs.items()}
    total = sum(len(files) for files, _ in listed.values()) * channels * size[0] * size[1]
    streamed = streams(stream, total, memory_budget_mb)
    read = {split: (decoded_files("folder-images", files, str(dirs[split]), size, channels, cache, streamed),
                    labels) for split, (files, labels) in listed.items()}
    train_images, train_labels = read["train"]
    test_images, test_labels = read["test"]
    if "val" in read:
        val_images, val_labels = read["val"]
        data = ImageData(_split(train_images, train_labels, np.arange(len(train_labels))),
                         _split(val_images, val_labels, np.arange(len(val_labels))),
                         _split(test_images, test_labels, np.arange(len(test_labels))), classes)
    else:
        rest, val = _stratified_split(train_labels, val_fraction, split_seed, cache)
        data = ImageData(_split(train_images, train_labels, rest), _split(train_images, train_labels, val),
                         _split(test_images, test_labels, np.arange(len(test_labels))), classes)
    data.check(f"data.path={path}")
    return data
