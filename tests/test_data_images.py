"""Image classification loaders on small fixtures written in the exact formats of the real sources."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnbench.data.batches import Augment, TensorBatches
from attnbench.data.images import load_cifar, load_digits, load_image_folder
from attnbench.errors import UserError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_torchvision_cifar10(root: Path, per_batch: int = 20) -> Path:
    """The pickled batches torchvision downloads: data (N, 3072) uint8 rows, labels, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {"batch_label": name, "data": _images(per_batch, i).reshape(per_batch, 3072),
                 "labels": [j % 10 for j in range(per_batch)], "filenames": [f"{j}.png" for j in range(per_batch)]}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return folder


def write_torchvision_cifar100(root: Path, n: int = 60) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for i, name in enumerate(["train", "test"]):
        batch = {"data": _images(n, i).reshape(n, 3072), "fine_labels": [j % 100 for j in range(n)],
                 "coarse_labels": [j % 20 for j in range(n)], "filenames": [f"{j}.png" for j in range(n)]}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    return folder


def write_hub_cifar10(root: Path, n: int = 40) -> Path:
    """uoft-cs/cifar10 as stored on the hub: plain_text/{train,test}-00000-of-00001.parquet with an Image
    column ``img`` and a ClassLabel column ``label``."""
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR10_NAMES)})
    for split, seed in (("train", 0), ("test", 1)):
        images = [Image.fromarray(a.transpose(1, 2, 0)) for a in _images(n, seed)]
        ds = datasets.Dataset.from_dict({"img": images, "label": [i % 10 for i in range(n)]}, features=features)
        (root / "plain_text").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return root


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6,
                       suffix: str = ".png") -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((16, 16, 3), 40 + 100 * c, np.uint8) + i
                Image.fromarray(pixels).save(folder / f"{i:04d}{suffix}")
    return root


def test_digits_split_is_fixed_stratified_and_scaled() -> None:
    a, b = load_digits(), load_digits()
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.train.images, b.train.images)
    total = len(a.train) + len(a.val) + len(a.test)
    assert total == 1797 and a.train.images.shape[1:] == (1, 8, 8) and a.train.images.dtype == torch.uint8
    assert a.train.images.max() == 255
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 30  # every digit represented in test, roughly equally
    assert len(a.test) == pytest.approx(0.2 * 1797, abs=2)


def test_cifar10_torchvision_layout(tmp_path: Path) -> None:
    write_torchvision_cifar10(tmp_path)
    data = load_cifar(root=str(tmp_path), val_size=20)
    assert data.classes == CIFAR10_NAMES
    assert len(data.train) + len(data.val) == 100 and len(data.val) == 20 and len(data.test) == 20
    assert data.train.images.shape[1:] == (3, 32, 32)
    # rows of 3072 bytes are channel-major: the first 1024 bytes are the red plane
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert torch.equal(data.test.images[0, 0].flatten(), torch.from_numpy(raw["data"][0, :1024]))


def test_cifar100_torchvision_layout_fine_and_coarse(tmp_path: Path) -> None:
    write_torchvision_cifar100(tmp_path)
    fine = load_cifar(root=str(tmp_path), label_column="fine_label", val_size=10)
    coarse = load_cifar(root=str(tmp_path), label_column="coarse_label", val_size=10)
    assert len(fine.classes) == 100 and len(coarse.classes) == 20
    assert int(coarse.test.labels.max()) < 20


def test_cifar10_hub_parquet(tmp_path: Path) -> None:
    write_hub_cifar10(tmp_path)
    data = load_cifar(hub_id=str(tmp_path), val_size=10)
    assert data.classes == CIFAR10_NAMES
    assert len(data.test) == 40 and len(data.val) == 10 and len(data.train) == 30
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8


def test_hub_missing_column_names_the_columns(tmp_path: Path) -> None:
    write_hub_cifar10(tmp_path)
    with pytest.raises(UserError, match="no column 'fine_label'.*img, label"):
        load_cifar(hub_id=str(tmp_path), label_column="fine_label")


def test_image_folder_png_and_jpg_val_carved(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "png")
    data = load_image_folder(str(tmp_path / "png"), val_fraction=0.5)
    assert data.classes == ["cat", "dog"] and len(data.test) == 12 and len(data.val) == 6
    assert data.train.images.shape[1:] == (3, 16, 16)
    write_image_folder(tmp_path / "jpg", suffix=".jpg")
    resized = load_image_folder(str(tmp_path / "jpg"), image_size=8)
    assert resized.train.images.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("problem, message", [
    ("missing", "is not a folder"),
    ("empty", "holds no images"),
    ("one_class", "one class"),
    ("corrupt", "cannot decode .*0000.png"),
])
def test_image_folder_bad_input(tmp_path: Path, problem: str, message: str) -> None:
    root = tmp_path / "data"
    if problem == "empty":
        (root / "train" / "cat").mkdir(parents=True)
        (root / "test").mkdir()
    elif problem == "one_class":
        write_image_folder(root, classes=("cat",))
    elif problem == "corrupt":
        write_image_folder(root)
        (root / "test" / "dog" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=message):
        load_image_folder(str(root))


def test_augment_translates_and_flips_within_bounds() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    out = Augment(crop_pad=1, flip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}  # pixels moved or zero padding
    same = Augment()(x, torch.Generator())
    assert torch.equal(same, x)


def test_batches_shard_global_batch_across_ranks() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    kw = dict(mean=torch.zeros(1), std=torch.ones(1), shuffle=True, seed=3)
    whole = [y for _, y in TensorBatches(images, labels, 4, **kw).epoch(1)]
    parts = [[y for _, y in TensorBatches(images, labels, 4, rank=r, world=2, **kw).epoch(1)] for r in (0, 1)]
    for i, batch in enumerate(whole):
        assert sorted(torch.cat([parts[0][i], parts[1][i]]).tolist()) == sorted(batch.tolist())
    # the order is a function of (seed, epoch): resuming at batch 2 replays the same batches
    resumed = [y for _, y in TensorBatches(images, labels, 4, **kw).epoch(1, start=2)]
    assert [b.tolist() for b in resumed] == [b.tolist() for b in whole[2:]]


def test_png_bytes_round_trip_matches_decoder() -> None:
    """The hub stores PNG bytes; decoding must give back the exact pixels."""
    from attnbench.data.images import _decode_all

    pixels = _images(2, 5)
    encoded = []
    for a in pixels:
        buf = io.BytesIO()
        Image.fromarray(a.transpose(1, 2, 0)).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    assert np.array_equal(_decode_all(encoded, "test"), pixels)


def _gradient(mode: str) -> Image.Image:
    """A 16×16 image whose values span its mode's whole range, in that mode."""
    ramp = np.linspace(0, 1, 256).reshape(16, 16)
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 65535).astype(np.int32))
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32))
    gray = Image.fromarray((ramp * 255).astype(np.uint8))
    if mode == "1":
        return gray.convert("1", dither=Image.Dither.NONE)
    if mode == "P":
        return Image.merge("RGB", [gray] * 3).convert("P", palette=Image.Palette.ADAPTIVE)
    return gray.convert(mode)


@pytest.mark.parametrize("mode,suffix", [("I;16", "png"), ("I", "tif"), ("F", "tif"), ("LA", "png"), ("P", "png"),
                                         ("CMYK", "jpg"), ("1", "png"), ("L", "png")])
def test_every_bit_depth_and_mode_keeps_its_contrast(tmp_path: Path, mode: str, suffix: str) -> None:
    from attnbench.data.decode import decode_image

    path = tmp_path / f"gradient.{suffix}"
    _gradient(mode).save(path)
    assert Image.open(path).mode == mode
    decoded = decode_image(path, None, None)
    assert decoded.shape[2] == (3 if mode in ("P", "CMYK") else 1)
    assert int(decoded.max()) - int(decoded.min()) >= 240, (decoded.min(), decoded.max())
    assert len(np.unique(decoded)) >= (2 if mode == "1" else 64)  # levels, not two values


def test_a_run_on_16_bit_images_learns(tmp_path: Path) -> None:
    """Two classes told apart only by which half is brighter, every value above 255: decoded to one white
    level on main, they looked alike and trained to chance."""
    from runner import attnbench, summary

    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        for c in range(2):
            folder = tmp_path / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                halves = np.full((12, 12), 20000.0)
                halves[:, :6] = 60000.0
                pixels = (halves if c == 0 else halves[:, ::-1]) + rng.normal(0, 3000, (12, 12))
                Image.fromarray(np.clip(pixels, 300, 65535).astype(np.uint16)).save(folder / f"{i}.png")
    result = attnbench("train", "data=image_folder", f"data.path={tmp_path / 'images'}", "backbone=smallcnn",
                       "model=none", "trainer.epochs=3", "trainer.batch_size=8", "logger=none",
                       f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path / "run")["metrics"]["test/acc"] >= 0.9
