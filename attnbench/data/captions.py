"""Image captioning data: the embedded ``shapes`` scenes, Flickr8k / Flickr30k / COCO from the hub, and the
user's own caption files (Karpathy JSON or COCO captions JSON).

Every loader returns a ``CaptionData``: three splits, each a list of images (held as tensors, or decoded a batch
at a time from the hub's parquet or from files), the raw reference captions of every image, and the image's name.
The task builds its vocabulary (``data/vocab.py``, shared with text rating) from the training captions.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .cache import count, files_signature
from .decode import ListItems, Stream, decoded_images, streams
from .hub import check_columns, hub_key, load_hub

# ---------------------------------------------------------------------------------------- images


class TensorImages:
    """Images held as one uint8 tensor (N, C, H, W), moved to the training device as a whole."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> None:
        self.images = self.images.to(device)

    def load(self, index: Tensor) -> Tensor:
        return self.images[index.to(self.images.device)]


def decode_photo(item: bytes | Path, size: int, where: str) -> np.ndarray:
    """One image as uint8 (size, size, 3): the shorter side resized to ``size``, then the centre cropped."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale))
            img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except Exception as e:
        raise UserError(f"cannot decode {where} ({type(e).__name__}): remove or replace the image") from e


class EncodedImages:
    """Images decoded a batch at a time, on threads (PIL releases the GIL): files on disk, or the bytes of a hub
    parquet column read from its memory-mapped table. Only what a batch needs is ever in memory."""

    def __init__(self, fetch: Callable[[list[int]], list[bytes | Path]], names: list[str], size: int,
                 source: str) -> None:
        self.fetch, self.names, self.size, self.source = fetch, names, size, source
        self.device = torch.device("cpu")
        self.pool = ThreadPoolExecutor(max_workers=8)

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device: torch.device) -> None:
        self.device = device

    def load(self, index: Tensor) -> Tensor:
        rows = index.tolist()
        items = self.fetch(rows)
        where = [str(item) if isinstance(item, Path) else f"image {self.names[r]!r} of {self.source}"
                 for item, r in zip(items, rows)]
        arrays = list(self.pool.map(lambda pair: decode_photo(pair[0], self.size, pair[1]), zip(items, where)))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)


ImageStore = TensorImages | EncodedImages


# ---------------------------------------------------------------------------------------- splits


@dataclass
class CaptionSplit:
    images: ImageStore
    captions: list[list[str]]  # the raw reference captions of every image
    names: list[str]  # image identifiers (file names), for messages and pictures
    objects: list[list[dict[str, Any]]] | None = None  # shapes only: each object's shape, colour, size and box

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class CaptionData:
    train: CaptionSplit
    val: CaptionSplit
    test: CaptionSplit
    source: str
    image_size: int
    nouns: tuple[str, ...] = field(default_factory=tuple)  # words that name an object (shapes: for grounding)

    def check(self) -> None:
        for name in ("train", "val", "test"):
            if len(getattr(self, name)) == 0:
                raise UserError(f"{self.source}: the {name} split has no captions; every split needs images with "
                                f"at least one caption")


# ---------------------------------------------------------------------------------------- shapes

SHAPE_NAMES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (225, 40, 40), "green": (40, 190, 60), "blue": (60, 100, 240), "yellow": (235, 215, 40),
           "white": (235, 235, 235)}
SIZES = {"small": 0.2, "large": 0.36}  # side of the shape's box as a fraction of the image side


@functools.cache
def _shape_mask(shape: str, side: int) -> np.ndarray:
    """Pixels of one shape that fills a ``side``×``side`` square."""
    ys, xs = np.mgrid[0:side, 0:side]
    r = side / 2
    dy, dx = ys - r + 0.5, xs - r + 0.5
    if shape == "circle":
        return dy ** 2 + dx ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(dy) <= r - 0.5) & (np.abs(dx) <= r - 0.5)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    # triangle pointing up: the half-width grows linearly from the apex to the base
    down = (ys + 0.5) / side
    return np.abs(dx) <= r * down


def _relation(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Where object a lies relative to object b, along the axis on which they are further apart."""
    (ay, ax), (by, bx) = a["centre"], b["centre"]
    if abs(ax - bx) >= abs(ay - by):
        return "left of" if ax < bx else "right of"
    return "above" if ay < by else "below"


def _clear_of(centre: tuple[float, float], placed: list[dict[str, Any]]) -> bool:
    """A new object at ``centre`` is apart from every placed one by at least 1.5× more along one axis than along
    the other, so the relation word a caption uses is never a matter of a pixel."""
    for other in placed:
        dy, dx = abs(centre[0] - other["centre"][0]), abs(centre[1] - other["centre"][1])
        if max(dy, dx) < 1.5 * min(dy, dx) + 1:
            return False
    return True


def describe(objects: list[dict[str, Any]], order: Sequence[int]) -> str:
    """One caption: the objects in ``order``, each related to the next ("a large red circle left of a small
    blue square above a small white triangle")."""
    words = []
    for position, i in enumerate(order):
        o = objects[i]
        words.append(f"a {o['size']} {o['colour']} {o['shape']}")
        if position + 1 < len(order):
            words.append(_relation(o, objects[order[position + 1]]))
    return " ".join(words)


def draw_scene(rng: np.random.Generator, image_size: int, max_objects: int,
               noise: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One scene: 1…``max_objects`` shapes of distinct (colour, shape), not touching, on a plain or noisy
    background. Returns the image (H, W, 3) uint8 and each object with its box (x0, y0, x1, y1), end exclusive."""
    count = int(rng.integers(1, max_objects + 1))
    while True:
        kinds = rng.choice(len(SHAPE_NAMES) * len(COLOURS), size=count, replace=False)
        objects: list[dict[str, Any]] = []
        taken = np.zeros((image_size, image_size), bool)
        for kind in kinds:
            shape, colour = SHAPE_NAMES[kind % len(SHAPE_NAMES)], list(COLOURS)[kind // len(SHAPE_NAMES)]
            size = list(SIZES)[int(rng.integers(len(SIZES)))]
            side = max(3, round(SIZES[size] * image_size))
            corners = rng.integers(0, image_size - side + 1, size=(50, 2))
            for top, left in corners.tolist():  # a free spot, one pixel clear of the other shapes
                centre = (top + side / 2, left + side / 2)
                free = not taken[max(top - 1, 0):top + side + 1, max(left - 1, 0):left + side + 1].any()
                if free and _clear_of(centre, objects):
                    break
            else:
                break
            taken[top:top + side, left:left + side] = True
            mask = _shape_mask(shape, side)
            rows, cols = np.nonzero(mask)
            objects.append({"shape": shape, "colour": colour, "size": size, "mask": mask, "corner": (top, left),
                            "box": (left + int(cols.min()), top + int(rows.min()), left + int(cols.max()) + 1,
                                    top + int(rows.max()) + 1), "centre": centre})
        if len(objects) == count:
            break
    if rng.random() < noise:
        base = rng.integers(0, 80)
        background = np.clip(base + rng.normal(0, 30, (image_size, image_size, 1)), 0, 255).repeat(3, -1)
    else:
        background = np.full((image_size, image_size, 3), rng.integers(0, 90), dtype=np.float64)
    image = background
    for o in objects:
        colour = np.clip(np.array(COLOURS[o["colour"]]) + rng.integers(-20, 21, 3), 0, 255)
        mask, (top, left) = o.pop("mask"), o.pop("corner")
        image[top:top + mask.shape[0], left:left + mask.shape[1]][mask] = colour
    return image.astype(np.uint8), objects


def load_shapes(train_size: int = 3000, val_size: int = 300, test_size: int = 500, image_size: int = 40,
                max_objects: int = 3, captions_per_image: int = 3, noise: float = 0.5, seed: int = 0) -> CaptionData:
    """Synthetic scenes drawn by attnbench itself with a fixed seed (no network, no files): one to
    ``max_objects`` coloured shapes (circle, square, triangle, diamond in five colours, two sizes) on a plain or
    noisy background, each scene with up to ``captions_per_image`` captions from a small grammar (one per order
    of naming the objects). Each object's box is recorded, so the task can score whether the decoder looks at
    the object a word names. It is a test bed for attention, not a benchmark of natural images."""
    if not 1 <= max_objects <= 3:
        raise UserError(f"data.max_objects must be 1, 2 or 3, got {max_objects}")
    if min(train_size, val_size, test_size) < 1 or captions_per_image < 1:
        raise UserError("data.train_size, val_size, test_size and captions_per_image must be at least 1")
    if image_size < 16:
        raise UserError(f"data.image_size must be at least 16 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    splits = []
    for size in (train_size, val_size, test_size):
        images, captions, objects = [], [], []
        for _ in range(size):
            image, scene = draw_scene(rng, image_size, max_objects, noise)
            orders = list(itertools.permutations(range(len(scene))))
            chosen = rng.permutation(len(orders))[:captions_per_image]
            images.append(image)
            captions.append([describe(scene, orders[i]) for i in sorted(chosen)])
            objects.append([{k: o[k] for k in ("shape", "colour", "size", "box")} for o in scene])
        tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        names = [f"shapes-{len(splits)}-{i}" for i in range(size)]
        splits.append(CaptionSplit(TensorImages(tensor), captions, names, objects))
    data = CaptionData(*splits, source=f"data=shapes (synthetic scenes, seed {seed})", image_size=image_size,
                       nouns=SHAPE_NAMES)
    data.check()
    return data


# ---------------------------------------------------------------------------------------- real photos

SPLIT_NAMES = {"train": "train", "restval": "train", "validation": "val", "val": "val", "dev": "val",
               "test": "test"}


@dataclass
class _Listing:
    """Images of one split before the store is made: what to fetch, captions, names."""

    items: list[Any] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, item: Any, captions: list[str], name: str) -> None:
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if captions:  # an image without a caption cannot be trained on or scored
            self.items.append(item)
            self.captions.append(captions)
            self.names.append(name)

    def subset(self, index: Sequence[int]) -> _Listing:
        return _Listing([self.items[i] for i in index], [self.captions[i] for i in index],
                        [self.names[i] for i in index])

    def limit(self, limit: int | None, seed: int) -> _Listing:
        if limit is None or limit >= len(self.items):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self.items))[:limit]))


def _photo(item: bytes | Path, where: str, size: int) -> np.ndarray:
    return decode_photo(item, size, str(item) if isinstance(item, Path) else f"an image of {where}")


class _Fetched:
    """The encoded images of a split as the decode step reads them: ``take(rows)`` through ``fetch``."""

    def __init__(self, fetch: Callable[[list[int]], list[bytes | Path]], n: int) -> None:
        self.fetch, self.n = fetch, n

    def __len__(self) -> int:
        return self.n

    def take(self, rows: Sequence[int]) -> list[bytes | Path]:
        return self.fetch(list(rows))


def _store(fetch: Callable[[list[int]], list[bytes | Path]], names: list[str], size: int, source: str,
           key: dict[str, Any] | None, cache: bool, streamed: bool) -> ImageStore:
    """A split's images: decoded once (through the decode cache) and held as a tensor, or, streamed, decoded a
    batch at a time, ahead of the training step (the task prefetches ``EncodedImages`` on a thread)."""
    if streamed:
        count(streamed=len(names))
        return EncodedImages(fetch, names, size, source)
    decode = functools.partial(_photo, size=size)
    images = decoded_images("caption-images", key and {**key, "size": size}, _Fetched(fetch, len(names)), decode,
                            (3, size, size), source, cache, stream=False)
    return TensorImages(torch.from_numpy(images))


def _caption_streams(listings: dict[str, _Listing], size: int, stream: Stream, memory_budget_mb: float | None) -> bool:
    images = sum(len(listing.items) for listing in listings.values())
    return streams(stream, images * 3 * size * size, memory_budget_mb)


def _files_split(listing: _Listing, size: int, source: str, cache: bool, streamed: bool) -> CaptionSplit:
    paths = listing.items
    key = {"files": files_signature(paths)} if paths else None
    store = _store(ListItems(paths).take, listing.names, size, source, key, cache, streamed)
    return CaptionSplit(store, listing.captions, listing.names)


def _check_files(listings: dict[str, _Listing], source: str, image_root: Path) -> None:
    """Every listed image must exist: count the missing ones and show one."""
    paths = [p for listing in listings.values() for p in listing.items]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(paths)} images listed in {source} are missing under "
                        f"data.image_root={image_root}, e.g. {missing[0]}")


def _carve(listing: _Listing, fraction: float, seed: int) -> tuple[_Listing, _Listing]:
    """(rest, carved): ``fraction`` of the images carved out with a fixed seed."""
    order = np.random.default_rng(seed).permutation(len(listing.items))
    cut = int(round(fraction * len(order)))
    if fraction > 0 and len(order) > 1:
        cut = min(max(cut, 1), len(order) - 1)  # a non-zero fraction of a small set still carves one image
    return listing.subset(np.sort(order[cut:])), listing.subset(np.sort(order[:cut]))


def _finish(listings: dict[str, _Listing], source: str, image_size: int, make_split: Callable) -> CaptionData:
    data = CaptionData(*(make_split(listings[s], s) for s in ("train", "val", "test")), source=source,
                       image_size=image_size)
    data.check()
    return data


def _hub_splits(dd: Any, hub_id: str) -> dict[str, list[Any]]:
    """Our split name -> the hub splits that make it (COCO's restval joins train, as in Karpathy's split)."""
    found: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    for name in dd:
        if name in SPLIT_NAMES:
            found[SPLIT_NAMES[name]].append(dd[name])
    for split, parts in found.items():
        if not parts:
            raise UserError(f"{hub_id} has no {split} split (it has {', '.join(dd)}); its split has no captions")
    return found


def _caption_values(row: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """Captions of a row from columns holding a string each (caption_0…) or a list of strings (caption)."""
    out: list[str] = []
    for column in columns:
        value = row[column]
        out.extend(value if isinstance(value, list) else [value])
    return out


def load_caption_hub(hub_id: str = "jxie/flickr8k", image_column: str = "image",
                     caption_columns: Sequence[str] = ("caption_0", "caption_1", "caption_2", "caption_3", "caption_4"),
                     image_size: int = 224, limit: int | None = None, split_seed: int = 0, cache: bool = True,
                     stream: Stream = "auto", memory_budget_mb: float | None = None) -> CaptionData:
    """A hub parquet data set with the images inside it and one or more caption columns: Flickr8k
    (``jxie/flickr8k``: image, caption_0…caption_4; train/validation/test) and Flickr30k
    (``umaru97/flickr30k_train_val_test``: image, caption as a list; Karpathy's train/val/test). The images are
    decoded once into the cache and held in memory, or streamed (``data.stream``)."""
    import datasets

    dd = load_hub(hub_id, "use data=caption_file with local files")
    listings: dict[str, _Listing] = {}
    tables: dict[str, list[tuple[Any, int]]] = {}
    keys: dict[str, list[Any]] = {}
    for split, parts in _hub_splits(dd, hub_id).items():
        keys[split] = [hub_key(part, hub_id, split, image_column) for part in parts]
        listing, rows = _Listing(), []
        for part in parts:
            check_columns(part, hub_id, [image_column, *caption_columns])
            table = part.cast_column(image_column, datasets.Image(decode=False))
            texts = table.select_columns(list(caption_columns))
            for i, row in enumerate(texts):
                listing.add(len(rows), _caption_values(row, caption_columns), f"{split}/{len(rows)}")
                rows.append((table, i))
        listings[split] = listing.limit(limit, split_seed)
        tables[split] = rows

    def make_split(listing: _Listing, split: str) -> CaptionSplit:
        rows = tables[split]
        where = [rows[i] for i in listing.items]

        def fetch(index: list[int]) -> list[bytes]:
            return [where[i][0][where[i][1]][image_column]["bytes"] for i in index]

        parts = keys[split]
        rows = hashlib.sha256(json.dumps(listing.items).encode()).hexdigest()
        key = None if None in parts else {"parts": parts, "rows": rows}
        store = _store(fetch, listing.names, image_size, hub_id, key, cache, streamed)
        return CaptionSplit(store, listing.captions, listing.names)

    streamed = _caption_streams(listings, image_size, stream, memory_budget_mb)
    return _finish(listings, hub_id, image_size, make_split)


def load_coco(image_root: str | None = None, hub_id: str = "yerevann/coco-karpathy", image_size: int = 224,
              limit: int | None = None, split_seed: int = 0, cache: bool = True, stream: Stream = "auto",
              memory_budget_mb: float | None = None) -> CaptionData:
    """COCO 2014 with Karpathy's split: captions and splits from the hub (``yerevann/coco-karpathy``: filepath,
    filename, sentences, split), images from ``data.image_root`` holding ``train2014/`` and ``val2014/``."""
    if image_root is None:
        raise UserError("data=coco needs data.image_root=DIR, the folder holding COCO's train2014/ and val2014/")
    root = Path(image_root).expanduser()
    dd = load_hub(hub_id, "use data=caption_file with local files")
    listings = {}
    for split, parts in _hub_splits(dd, hub_id).items():
        listing = _Listing()
        for part in parts:
            check_columns(part, hub_id, ["filepath", "filename", "sentences"])
            for row in part.select_columns(["filepath", "filename", "sentences"]):
                listing.add(root / row["filepath"] / row["filename"], list(row["sentences"]), row["filename"])
        listings[split] = listing.limit(limit, split_seed)
    _check_files(listings, f"{hub_id}", root)
    streamed = _caption_streams(listings, image_size, stream, memory_budget_mb)
    return _finish(listings, f"data=coco ({hub_id})", image_size,
                   lambda listing, split: _files_split(listing, image_size, f"{root}", cache, streamed))


def _read_caption_json(path: Path, root: Path) -> tuple[dict[str, _Listing], bool]:
    """Listings per split from a Karpathy JSON or a COCO captions JSON; the flag says whether it had splits."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"data.path={path} is not a readable JSON file ({type(e).__name__})") from e
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise UserError(f"{path} has no 'images' list: expected Karpathy's layout (images[].filename, split, "
                        f"sentences[].raw) or a COCO captions file (images[], annotations[])")
    listings = {s: _Listing() for s in ("train", "val", "test")}
    if "annotations" in content:  # COCO captions: images[].id/file_name, annotations[].image_id/caption
        captions: dict[Any, list[str]] = {}
        for a in content["annotations"]:
            captions.setdefault(a["image_id"], []).append(a["caption"])
        for image in content["images"]:
            listings["train"].add(root / image["file_name"], captions.get(image["id"], []), image["file_name"])
        return listings, False
    for image in content["images"]:
        split = SPLIT_NAMES.get(image.get("split", "train"))
        if split is None:
            continue
        relative = Path(image.get("filepath", "")) / image["filename"]
        listings[split].add(root / relative, [s["raw"] for s in image.get("sentences", [])], str(relative))
    return listings, True


def load_caption_file(path: str | None = None, image_root: str | None = None, image_size: int = 224,
                      val_fraction: float = 0.05, test_fraction: float = 0.1, limit: int | None = None,
                      split_seed: int = 0, cache: bool = True, stream: Stream = "auto",
                      memory_budget_mb: float | None = None) -> CaptionData:
    """Your own captions: a Karpathy JSON (``images[].filename``, ``split``, ``sentences[].raw``, optionally
    ``filepath``; restval joins train) or a COCO captions JSON (``images[].id/file_name``,
    ``annotations[].image_id/caption``, no splits: val and test are carved from it with ``val_fraction`` and
    ``test_fraction``). Images are read from ``image_root`` (default: the JSON's folder)."""
    if path is None:
        raise UserError("data=caption_file needs data.path=FILE (a Karpathy or COCO captions JSON)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"data.path={path} does not exist")
    root = Path(image_root).expanduser() if image_root else file.parent
    listings, has_splits = _read_caption_json(file, root)
    if not has_splits:
        rest, listings["test"] = _carve(listings["train"], test_fraction, split_seed)
        listings["train"], listings["val"] = _carve(rest, val_fraction / max(1 - test_fraction, 1e-9), split_seed)
    elif not listings["val"].items and listings["train"].items:
        listings["train"], listings["val"] = _carve(listings["train"], val_fraction, split_seed)
    listings = {s: listing.limit(limit, split_seed) for s, listing in listings.items()}
    for split, listing in listings.items():
        if not listing.items:
            raise UserError(f"{file}: the {split} split has no captions; give its images a 'split' of {split} with "
                            f"at least one sentence")
    _check_files(listings, str(file), root)
    streamed = _caption_streams(listings, image_size, stream, memory_budget_mb)
    return _finish(listings, f"data.path={path}", image_size,
                   lambda listing, split: _files_split(listing, image_size, str(root), cache, streamed))
