"""Few-shot data sets: Omniglot, miniImageNet, CUB-200-2011 and the user's own class folders.

Each loader decodes every image once, at load time, into uint8 tensors (kept in the decode cache, ``cache.py``,
unless ``data.cache=false``), and returns class-disjoint train / val / test splits (``FewShotData``). Hub sources
are read through ``datasets`` (parquet), local ones from their usual layouts. Episodes draw any image of a split
at any step, so these sets live in memory: they do not stream.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import UserError
from .decode import HubItems, decoded_images, image_decoder
from .episodes import FewShotData, split_classes, split_from_arrays
from .hub import check_columns, hub_key, load_hub
from .images import IMAGE_SUFFIXES, _decode_all, data_folder, decoded_files

OMNIGLOT_HUB_SPLIT = (1028, 172, 423)  # Snell et al.'s class counts for the Vinyals split (train, val, test)


def _hub(hub_id: str, columns: tuple[str, str], hint: str):
    """The hub set, refused in one line when it cannot be loaded or lacks a column."""
    dd = load_hub(hub_id, hint)
    check_columns(dd[next(iter(dd))], hub_id, columns, "set data.image_column / data.label_column")
    return dd


def _hub_images(ds, image_column: str, source: str, size: tuple[int, int], channels: int,
                cache: bool) -> np.ndarray:
    shape = (channels, *size)
    key = hub_key(ds, source, "", image_column)
    return decoded_images("hub-images", key and {**key, "shape": shape}, HubItems(ds, image_column),
                          image_decoder(size, channels), shape, source, cache, stream=False)


def _class_names(ds, label_column: str, labels: np.ndarray) -> list[str]:
    """Names from a ClassLabel feature, else the label values themselves."""
    feature = ds.features[label_column]
    if hasattr(feature, "names"):
        return list(feature.names)
    return [str(v) for v in range(int(labels.max()) + 1)] if len(labels) else []


def _rotated(images: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vinyals et al.: every class also at 90°, 180° and 270°, each rotation a class of its own."""
    stacked = [np.rot90(images, k, axes=(2, 3)) for k in range(4)]
    n = len(classes)
    return (np.concatenate(stacked), np.concatenate([labels + k * n for k in range(4)]),
            [f"{name}@{90 * k}" for k in range(4) for name in classes])


# ---------------------------------------------------------------------------------------- Omniglot


def _omniglot_folder(root: Path) -> Path:
    for candidate in (root, root / "omniglot-py"):
        if (candidate / "images_background").is_dir() and (candidate / "images_evaluation").is_dir():
            return candidate
    raise UserError(f"data.root={root} holds no omniglot-py/images_background and images_evaluation folders "
                    f"(the torchvision layout)")


def _omniglot_characters(folder: Path) -> dict[str, list[Path]]:
    """``<alphabet>/<character>/*.png`` -> {"alphabet/character": files}."""
    characters = {}
    for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = sorted(p for p in character.iterdir() if p.suffix.lower() == ".png")
            if files:
                characters[f"{alphabet.name}/{character.name}"] = files
    if not characters:
        raise UserError(f"{folder} holds no <alphabet>/<character>/*.png images")
    return characters


def load_omniglot(root: str | None = None, hub_id: str = "GATE-engine/omniglot", image_column: str = "image",
                  label_column: str = "label", image_size: int = 28, rotations: bool = False,
                  val_fraction: float = 0.15, split_seed: int = 0, cache: bool = True) -> FewShotData:
    """Omniglot (Lake et al. 2015), 105×105 strokes resized to ``image_size`` and inverted (strokes bright).

    ``data.root`` in the torchvision layout: the background alphabets train (``val_fraction`` of their
    characters, drawn with ``split_seed``, validate) and the evaluation alphabets test. The hub copy has no
    alphabets: its labels are cut in order into Snell et al.'s 1028 / 172 / 423 classes. ``rotations`` adds
    each character at 90°, 180° and 270° as new classes of the same split (Vinyals et al. 2016).
    """
    size = (image_size, image_size)
    if root is not None:
        folder = _omniglot_folder(Path(root).expanduser())
        background = _omniglot_characters(folder / "images_background")
        evaluation = _omniglot_characters(folder / "images_evaluation")
        names = list(background)
        if len(names) < 2 or not 0 < val_fraction < 1:
            raise UserError(f"data.root={root}: {len(names)} background character(s) and data.val_fraction="
                            f"{val_fraction} leave no classes for training or validation")
        order = np.random.default_rng(split_seed).permutation(len(names))
        n_val = min(max(1, round(len(names) * val_fraction)), len(names) - 1)
        groups = [[names[i] for i in sorted(order[n_val:])], [names[i] for i in sorted(order[:n_val])],
                  list(evaluation)]
        every = {**background, **evaluation}
        splits = []
        for group in groups:
            files = [f for name in group for f in every[name]]
            labels = np.array([i for i, name in enumerate(group) for _ in every[name]], dtype=np.int64)
            images = 255 - decoded_files("folder-images", files, str(folder), size, 1, cache)
            if rotations:
                images, labels, group = _rotated(images, labels, group)
            splits.append(split_from_arrays(images, labels, group))
        return FewShotData(*splits, source=f"data.root={root}")

    dd = _hub(hub_id, (image_column, label_column), "point data.root at a torchvision omniglot-py folder")
    parts = [dd[split] for split in dd]
    images = np.concatenate([255 - _hub_images(ds, image_column, f"{hub_id}:{split}", size, 1, cache)
                             for split, ds in zip(dd, parts)])
    labels = np.concatenate([np.asarray(ds[label_column], dtype=np.int64) for ds in parts])
    names = _class_names(parts[0], label_column, labels)
    present = np.unique(labels)
    cuts = np.cumsum(OMNIGLOT_HUB_SPLIT)[:2] * len(present) // sum(OMNIGLOT_HUB_SPLIT)
    splits = []
    for group in np.split(present, cuts):
        keep = np.isin(labels, group)
        part_images, part_labels, part_names = images[keep], labels[keep], names
        if rotations:
            part_images, part_labels, part_names = _rotated(part_images, part_labels, names)
        splits.append(split_from_arrays(part_images, part_labels, part_names))
    return FewShotData(*splits, source=hub_id)


# ---------------------------------------------------------------------------------------- miniImageNet


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        raise UserError(f"{path} is missing: data.root must hold images/ and train.csv, val.csv, test.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"filename", "label"} <= {c.strip() for c in reader.fieldnames}:
            raise UserError(f"{path} must have the columns filename,label (found {reader.fieldnames})")
        return [(row["filename"].strip(), row["label"].strip()) for row in reader]


def load_miniimagenet(root: str | None = None, hub_id: str = "GATE-engine/mini_imagenet",
                      image_column: str = "image", label_column: str = "label", image_size: int = 84,
                      cache: bool = True) -> FewShotData:
    """miniImageNet with Ravi & Larochelle's 64 / 16 / 20 class split, resized to ``image_size``.

    ``data.root``: ``images/`` and ``train.csv``, ``val.csv``, ``test.csv`` (columns ``filename,label``,
    filenames relative to ``images/``). Otherwise the hub copy, whose train / validation / test splits are
    already those classes.
    """
    size = (image_size, image_size)
    splits = []
    if root is not None:
        base = Path(root).expanduser()
        for split in ("train", "val", "test"):
            rows = _read_csv(base / f"{split}.csv")
            classes = sorted({label for _, label in rows})
            index = {name: i for i, name in enumerate(classes)}
            files = [base / "images" / name for name, _ in rows]
            missing = next((f for f in files if not f.exists()), None)
            if missing is not None:
                raise UserError(f"{missing} is listed in {split}.csv but does not exist")
            labels = np.array([index[label] for _, label in rows], dtype=np.int64)
            splits.append(split_from_arrays(decoded_files("folder-images", files, str(base), size, 3, cache), labels,
                                            classes))
        return FewShotData(*splits, source=f"data.root={root}")
    dd = _hub(hub_id, (image_column, label_column), "point data.root at a folder with images/ and train/val/test.csv")
    for split, names in (("train", ("train",)), ("val", ("validation", "val")), ("test", ("test",))):
        found = next((n for n in names if n in dd), None)
        if found is None:
            raise UserError(f"{hub_id} has no {split} split (it has {', '.join(dd)})")
        ds = dd[found]
        labels = np.asarray(ds[label_column], dtype=np.int64)
        # each hub split numbers its own classes: the split's name keeps them apart from the other splits'
        names_ = [f"{split}/{name}" for name in _class_names(ds, label_column, labels)]
        images = _hub_images(ds, image_column, f"{hub_id}:{found}", size, 3, cache)
        splits.append(split_from_arrays(images, labels, names_))
    return FewShotData(*splits, source=hub_id)


# ---------------------------------------------------------------------------------------- CUB


def load_cub(hub_id: str = "bentrevett/caltech-ucsd-birds-200-2011", image_column: str = "image",
             label_column: str = "label", image_size: int = 84, cache: bool = True) -> FewShotData:
    """CUB-200-2011 birds with the usual 100 / 50 / 50 class split (Chen et al. 2019, "A Closer Look"):
    of the 200 classes in order, even ones train, 1 mod 4 validate, 3 mod 4 test. The hub's own train / test
    image split is ignored (both halves are pooled); the bounding boxes are not used."""
    dd = _hub(hub_id, (image_column, label_column), "check data.hub_id")
    parts = [dd[split] for split in dd]
    size = (image_size, image_size)
    images = np.concatenate([_hub_images(ds, image_column, f"{hub_id}:{split}", size, 3, cache)
                             for split, ds in zip(dd, parts)])
    labels = np.concatenate([np.asarray(ds[label_column], dtype=np.int64) for ds in parts])
    names = _class_names(parts[0], label_column, labels)
    splits = []
    for keep_class in (lambda i: i % 2 == 0, lambda i: i % 4 == 1, lambda i: i % 4 == 3):
        keep = np.array([keep_class(int(label)) for label in labels], dtype=bool)
        splits.append(split_from_arrays(images[keep], labels[keep], names))
    return FewShotData(*splits, source=hub_id)


# ---------------------------------------------------------------------------------------- folders


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """``<class>/*`` or ``<group>/<class>/*`` (as Omniglot's alphabets): class name -> image files."""
    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = images_in(folder)
        if files:
            classes[folder.name] = files
            continue
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = images_in(sub)
            if files:
                classes[f"{folder.name}/{sub.name}"] = files
    return classes


def load_fewshot_folder(path: str | None = None, image_size: int | None = None, val_fraction: float = 0.2,
                        test_fraction: float = 0.2, split_seed: int = 0, cache: bool = True) -> FewShotData:
    """The user's own images, one folder per class (``<class>/*.png|jpg``, or ``<group>/<class>/…``); the
    classes are split at random (``split_seed``) into train / val / test. ``image_size`` resizes to a
    square; by default every image is brought to the size of the first one."""
    root = data_folder(path, "fewshot_folder", "a folder with one sub-folder of images per class")
    classes = _class_folders(root)
    if not classes:
        raise UserError(f"data.path={path} holds no images in <class>/ or <group>/<class>/ folders")
    names = list(classes)
    source = f"data.path={path}"
    parts = split_classes(names, val_fraction, test_fraction, split_seed, source)
    size = (image_size, image_size) if image_size else None
    first = _decode_all([classes[names[0]][0]], source, size, None)
    size, channels = first.shape[2:], first.shape[1]
    splits = []
    for part in parts:
        files = [f for i in part for f in classes[names[i]]]
        labels = np.array([i for i in part for _ in classes[names[i]]], dtype=np.int64)
        images = decoded_files("folder-images", files, source, tuple(size), channels, cache)
        splits.append(split_from_arrays(images, labels, names))
    return FewShotData(*splits, source=source)


__all__ = ["load_cub", "load_fewshot_folder", "load_miniimagenet", "load_omniglot"]
