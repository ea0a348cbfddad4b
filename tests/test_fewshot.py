"""Few-shot: episodes, every loader on a fixture in its real layout or hub schema, and the CLI end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import assert_complete_summary, attnbench, run_dirs

from attnbench.data import glyphs
from attnbench.data.episodes import ClassSplit, EpisodeSampler, FewShotData
from attnbench.data.fewshot import load_cub, load_fewshot_folder, load_miniimagenet, load_omniglot
from attnbench.data.glyphs import load_glyphs
from attnbench.errors import UserError

SMALL_GLYPHS = ("data.scripts=[latin,greek,cyrillic,armenian]", "data.images_per_class=16")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered glyphs go to a cache folder of this test session, shared by its tests (rendered once)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


def toy_split(classes: int = 6, per_class: int = 7) -> ClassSplit:
    labels = torch.arange(classes).repeat(per_class)  # interleaved: the sampler must group them itself
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8).clone()
    return ClassSplit(images, labels, [f"c{i}" for i in range(classes)])


def write_png(path: Path, value: int, size: int = 105, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size) if mode == "L" else (size, size, 3), 255, np.uint8)
    pixels[size // 4: size // 2, size // 4: 3 * size // 4] = value  # a stroke, darker than the paper
    Image.fromarray(pixels, mode).save(path)


def png_bytes(value: int, size: int = 12, mode: str = "RGB") -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3) if mode == "RGB" else (size, size), value, np.uint8), mode).save(
        buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(folder: Path, split_files: dict[str, dict], features) -> None:
    """Parquet shards named as on the hub (``data/<split>-00000-of-00001.parquet``), written by ``datasets``."""
    import datasets

    for split, columns in split_files.items():
        path = folder / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))


# ---------------------------------------------------------------------------------------- episodes


def test_episodes_are_n_way_k_shot_seeded_and_disjoint() -> None:
    split = toy_split()
    sampler = EpisodeSampler(split, "train", ways=4, shots=2, queries=3, seed=7, source="toy")
    ep = sampler.episode(epoch=3, index=5)
    assert ep.support.shape == (4, 2) and ep.query.shape == (4, 3) and ep.classes.shape == (4,)
    assert len(set(ep.classes.tolist())) == 4  # distinct classes
    for way in range(4):
        picked = torch.cat([ep.support[way], ep.query[way]])
        assert (split.labels[picked] == ep.classes[way]).all()  # every image of a way is of its class
        assert len(set(picked.tolist())) == 5  # shots and queries are distinct images
    again = EpisodeSampler(split, "train", 4, 2, 3, 7, "toy").episode(3, 5)  # a resumed run replays it
    assert torch.equal(ep.support, again.support) and torch.equal(ep.query, again.query)
    others = [sampler.episode(3, 6), sampler.episode(4, 5),
              EpisodeSampler(split, "train", 4, 2, 3, 8, "toy").episode(3, 5),  # another seed
              EpisodeSampler(split, "val", 4, 2, 3, 7, "toy").episode(3, 5)]  # another split's stream
    assert all(not torch.equal(ep.query, other.query) for other in others)


def test_sampler_refuses_impossible_episodes_with_the_numbers() -> None:
    with pytest.raises(UserError, match=r"data.ways=7 but the test split of toy has only 6 classes"):
        EpisodeSampler(toy_split(), "test", ways=7, shots=1, queries=1, seed=0, source="toy")
    with pytest.raises(UserError, match=r"5 \+ 3 = 8 but class 'c0' of the train split of toy has only 7 images"):
        EpisodeSampler(toy_split(), "train", ways=2, shots=5, queries=3, seed=0, source="toy")


def test_glyphs_are_rendered_split_by_letter_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_glyphs(scripts=["latin", "greek", "cyrillic"], images_per_class=6)
    assert isinstance(data, FewShotData) and data.channels == 1
    names = [set(data.split(s).classes) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert sum(len(n) for n in names) > 80  # look-alikes (Greek Α, Cyrillic А) are dropped, the rest kept
    letters = set().union(*names)
    assert "Α greek capital letter alpha" not in letters and "A latin capital letter a" in letters
    assert data.train.images.shape[1:] == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert (data.train.counts() == 6).all()
    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again: the cache was not used")

    monkeypatch.setattr(glyphs, "render_glyphs", no_rendering)
    again = load_glyphs(scripts=["latin", "greek", "cyrillic"], images_per_class=6)
    assert torch.equal(again.test.images, data.test.images)


# ---------------------------------------------------------------------------------------- loaders


def test_omniglot_torchvision_layout(tmp_path: Path) -> None:
    base = tmp_path / "omniglot-py"
    for part, alphabets in (("images_background", ("Latin", "Greek")), ("images_evaluation", ("Tengwar",))):
        for alphabet in alphabets:
            for c in range(1, 4):
                for k in range(4):
                    write_png(base / part / alphabet / f"character{c:02d}" / f"{c:02d}{k:02d}_{k + 1:02d}.png",
                              value=20 * c)
    data = load_omniglot(root=str(tmp_path), val_fraction=0.2)
    assert len(data.train.classes) == 5 and len(data.val.classes) == 1 and len(data.test.classes) == 3
    assert all(name.startswith("Tengwar/") for name in data.test.classes)
    assert data.test.images.shape == (12, 1, 28, 28)
    assert data.test.images[0, 0, 0, 0] == 0 and data.test.images.max() > 200  # inverted: strokes bright
    rotated = load_omniglot(root=str(tmp_path), val_fraction=0.2, rotations=True)
    assert len(rotated.test.classes) == 12 and any(name.endswith("@90") for name in rotated.test.classes)


def test_omniglot_hub_parquet(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    labels = [c for c in range(20) for _ in range(3)]
    write_parquet(tmp_path, {"full": {"image": [png_bytes(10 * c, 105, "L") for c in labels], "label": labels}},
                  features)
    data = load_omniglot(hub_id=str(tmp_path))
    sizes = [len(data.split(s).classes) for s in ("train", "val", "test")]
    assert sum(sizes) == 20 and sizes[0] > sizes[2] > sizes[1] >= 1  # Snell's 1028 / 172 / 423 proportions
    assert data.train.images.shape[1:] == (1, 28, 28)


def test_miniimagenet_hub_parquet_keeps_split_classes_apart(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    splits = {}
    for split, classes in (("train", 4), ("validation", 2), ("test", 3)):
        labels = [c for c in range(classes) for _ in range(3)]  # every split numbers its classes from 0
        splits[split] = {"image": [png_bytes(30 * c) for c in labels], "label": labels}
    write_parquet(tmp_path, splits, features)
    data = load_miniimagenet(hub_id=str(tmp_path), image_size=16)
    assert [len(data.split(s).classes) for s in ("train", "val", "test")] == [4, 2, 3]
    assert data.train.images.shape == (12, 3, 16, 16)
    data.check_disjoint()


def test_miniimagenet_csv_layout(tmp_path: Path) -> None:
    for split, classes in (("train", ("n01", "n02", "n03")), ("val", ("n04", "n05")), ("test", ("n06", "n07"))):
        with (tmp_path / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for cls in classes:
                for k in range(3):
                    name = f"{cls}0000000{k}.jpg"
                    write_png(tmp_path / "images" / name, value=40, size=20, mode="RGB")
                    writer.writerow([name, cls])
    data = load_miniimagenet(root=str(tmp_path), image_size=84)
    assert data.val.classes == ["n04", "n05"] and data.test.images.shape == (6, 3, 84, 84)
    (tmp_path / "images" / "n0600000000.jpg").unlink()
    with pytest.raises(UserError, match="listed in test.csv but does not exist"):
        load_miniimagenet(root=str(tmp_path))


def test_cub_hub_parquet_uses_the_usual_class_split(tmp_path: Path) -> None:
    import datasets

    names = [f"{i + 1:03d}.Bird_{i + 1}" for i in range(200)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "bbox": datasets.Sequence(datasets.Value("int64"))})
    rows = {split: {"image": [png_bytes(c % 250) for c in range(200)], "label": list(range(200)),
                    "bbox": [[1, 2, 10, 11]] * 200} for split in ("train", "test")}
    write_parquet(tmp_path, rows, features)
    data = load_cub(hub_id=str(tmp_path), image_size=8)
    assert [len(data.split(s).classes) for s in ("train", "val", "test")] == [100, 50, 50]
    assert data.train.classes[:2] == ["001.Bird_1", "003.Bird_3"]
    assert data.val.classes[0] == "002.Bird_2" and data.test.classes[0] == "004.Bird_4"
    assert (data.test.counts() == 2).all()  # the hub's train and test halves are pooled


def test_fewshot_folder_flat_and_grouped(tmp_path: Path) -> None:
    for c in range(5):
        for k in range(3):
            write_png(tmp_path / "flat" / f"class{c}" / f"{k}.png", 10 * c, size=10, mode="RGB")
            write_png(tmp_path / "grouped" / f"group{c % 2}" / f"class{c}" / f"{k}.jpg", 10 * c, size=10, mode="RGB")
    flat = load_fewshot_folder(path=str(tmp_path / "flat"), image_size=16)
    grouped = load_fewshot_folder(path=str(tmp_path / "grouped"))
    for data in (flat, grouped):
        assert sum(len(data.split(s).classes) for s in ("train", "val", "test")) == 5
        data.check_disjoint()
    assert flat.train.images.shape[1:] == (3, 16, 16)
    assert all("/" in name for name in grouped.train.classes)


# ---------------------------------------------------------------------------------------- the CLI


def test_bad_input_is_one_line_with_the_numbers(tmp_path: Path) -> None:
    result = attnbench("train", "data=glyphs", "data.ways=80", *SMALL_GLYPHS, "logger=none", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "data.ways=80 but the val split of data=glyphs has only" in result.stderr
    assert "Traceback" not in result.stderr

    write_png(tmp_path / "tree" / "only_class" / "a.png", 0, size=8)
    result = attnbench("train", "data=fewshot_folder", f"data.path={tmp_path / 'tree'}", "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and "holds one class (only_class)" in result.stderr


def test_train_glyphs_learns_and_writes_the_run_directory(tmp_path: Path) -> None:
    """A short ProtoNet run must classify 5-way 1-shot test episodes well above chance (0.2)."""
    result = attnbench("train", "data=glyphs", *SMALL_GLYPHS, "trainer.epochs=1", "data.train_episodes=30",
                       "data.val_episodes=10", "data.test_episodes=40", "logger=none", cwd=tmp_path, check=True)
    run = run_dirs(tmp_path / "outputs")[0]
    summary = assert_complete_summary(run)
    assert summary["task"] == "fewshot" and summary["model"] == "none"
    assert summary["metrics"]["test/acc"] > 0.45, result.stdout
    assert 0 < summary["metrics"]["test/acc_ci95"] < 0.1


def test_pair_and_feature_variants_train_and_draw_their_attention(tmp_path: Path) -> None:
    result = attnbench("train", "-m", "data=glyphs", "model=cross,coattn,cbam", *SMALL_GLYPHS, "data.shots=2",
                       "trainer.epochs=1", "data.train_episodes=6", "data.val_episodes=4", "data.test_episodes=4",
                       "data.queries=3", "logger=none", cwd=tmp_path, check=True)
    runs = run_dirs(tmp_path / "outputs")
    assert len(runs) == 3, result.stdout
    for run in runs:
        summary = assert_complete_summary(run)
        assert summary["attention_params"] > 0 and summary["metrics"]["test/entropy"] > 0
        picture = "attention.png" if summary["model"] == "cbam" else "pair_attention.png"
        assert (run / "figures" / picture).stat().st_size > 10_000, summary["model"]
