"""Caption data: the shapes scenes, the vocabulary, and every loader on fixtures in the real formats (hub parquet
written here and read through ``datasets`` offline; Karpathy and COCO caption JSON files with image folders)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnbench.data.captions import (
    CaptionData,
    describe,
    load_caption_file,
    load_caption_hub,
    load_coco,
    load_shapes,
)
from attnbench.data.vocab import Vocab, tokenize
from attnbench.errors import UserError

datasets = pytest.importorskip("datasets")


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_caption_vocabulary_is_the_shared_one_without_punctuation(tmp_path) -> None:
    assert tokenize("A dog's ball, on the GRASS!", punctuation=False) == ["a", "dog's", "ball", "on", "the", "grass"]
    vocab = Vocab.build(["a red circle", "a red square", "a blue circle."], min_freq=2, punctuation=False,
                        sentence_marks=True)
    assert vocab.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert set(vocab.tokens[4:]) == {"a", "red", "circle"}  # square and blue are seen once; "." is no word
    assert vocab.encode("A red square", max_length=2) == [vocab.index["a"], vocab.index["red"]]  # cut to two
    assert vocab.decode([vocab.bos, vocab.index["a"], vocab.unk, vocab.eos, vocab.index["red"]]) == ["a", "<unk>"]
    again = Vocab.load(vocab.save(tmp_path / "vocab.json", max_length=2))
    assert again.tokens == vocab.tokens and again.encode("a blue circle.") == vocab.encode("a blue circle.")


def test_shapes_scenes_match_their_captions() -> None:
    data = load_shapes(train_size=40, val_size=5, test_size=5, image_size=40, seed=1)
    again = load_shapes(train_size=40, val_size=5, test_size=5, image_size=40, seed=1)
    assert torch.equal(data.train.images.images, again.train.images.images)  # a fixed seed: the same scenes
    assert "synthetic" in data.source
    images = data.train.images.images
    assert images.shape == (40, 3, 40, 40) and images.dtype == torch.uint8
    for image, captions, objects in zip(images, data.train.captions, data.train.objects):
        assert 1 <= len(objects) <= 3 and 1 <= len(captions) <= 3
        assert len({(o["shape"], o["colour"]) for o in objects}) == len(objects)
        for caption in captions:  # every caption names every object once, with its size and colour
            for o in objects:
                assert caption.count(f"a {o['size']} {o['colour']} {o['shape']}") == 1
        for o in objects:  # the box holds the object's colour and is tight around it
            x0, y0, x1, y1 = o["box"]
            inside = image[:, y0:y1, x0:x1].float()
            assert 0 < x1 - x0 <= 15 and 0 < y1 - y0 <= 15
            assert inside.amax((1, 2)).max() > 150
    scene = [{"shape": "circle", "colour": "red", "size": "large", "centre": (10, 5)},
             {"shape": "square", "colour": "blue", "size": "small", "centre": (12, 30)}]
    assert describe(scene, (0, 1)) == "a large red circle left of a small blue square"
    assert describe(scene, (1, 0)) == "a small blue square right of a large red circle"


def write_hub_fixture(root: Path, features: dict, splits: dict[str, dict],
                      readme_splits: list[str] | None = None) -> Path:
    """A local copy of a hub data set: data/<split>-00000-of-00001.parquet written through ``datasets`` (so the
    parquet carries the hub's feature types), plus the README config when the hub names its splits there."""
    (root / "data").mkdir(parents=True)
    for split, columns in splits.items():
        ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    if readme_splits:
        files = "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in readme_splits)
        (root / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{files}\n---\n")
    return root


def check_loaded(data: CaptionData, sizes: tuple[int, int, int], image_size: int = 16) -> None:
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    batch = data.train.images.load(torch.arange(len(data.train)))
    assert batch.shape == (len(data.train), 3, image_size, image_size) and batch.dtype == torch.uint8


def test_flickr8k_hub_layout(tmp_path: Path) -> None:
    """jxie/flickr8k: image (Image), caption_0…caption_4 (string); train / validation / test."""
    value = datasets.Value("string")
    features = {"image": datasets.Image(), **{f"caption_{i}": value for i in range(5)}}

    def split(n: int, colour: int) -> dict:
        columns = {"image": [{"bytes": png_bytes((colour, i * 10, 0)), "path": None} for i in range(n)]}
        columns.update({f"caption_{i}": [f"A dog number {j} runs ." for j in range(n)] for i in range(5)})
        return columns

    root = write_hub_fixture(tmp_path / "flickr8k", features,
                             {"train": split(3, 10), "validation": split(2, 50), "test": split(2, 90)})
    data = load_caption_hub(str(root), image_size=16)
    check_loaded(data, (3, 2, 2))
    assert data.train.captions[1] == ["A dog number 1 runs ."] * 5
    red = data.val.images.load(torch.tensor([1]))[0, 0]
    assert int(red.float().mean()) == 50  # the validation split's own images, decoded from the parquet bytes


def test_flickr30k_hub_layout(tmp_path: Path) -> None:
    """umaru97/flickr30k_train_val_test: image, caption (list of strings), sentids, split, img_id, filename;
    splits train / val / test named in the README."""
    features = {"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                "sentids": datasets.Sequence(datasets.Value("string")), "split": datasets.Value("string"),
                "img_id": datasets.Value("string"), "filename": datasets.Value("string")}

    def split(name: str, n: int) -> dict:
        return {"image": [{"bytes": png_bytes((i * 20, 0, 0)), "path": None} for i in range(n)],
                "caption": [[f"Two people {i} .", f"A man {i} walks ."] for i in range(n)],
                "sentids": [[str(2 * i), str(2 * i + 1)] for i in range(n)], "split": [name] * n,
                "img_id": [str(i) for i in range(n)], "filename": [f"{i}.jpg" for i in range(n)]}

    root = write_hub_fixture(tmp_path / "flickr30k", features,
                             {"train": split("train", 4), "val": split("val", 2), "test": split("test", 3)},
                             readme_splits=["train", "val", "test"])
    data = load_caption_hub(str(root), caption_columns=["caption"], image_size=16, limit=3)
    check_loaded(data, (3, 2, 3))
    assert data.test.captions[2] == ["Two people 2 .", "A man 2 walks ."]


def coco_tree(root: Path, names: list[str], folder: str = "val2014") -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24, 18), (i * 30, 100, 0)).save(root / folder / name)


def test_coco_karpathy_hub_layout(tmp_path: Path) -> None:
    """yerevann/coco-karpathy: filepath, sentids, filename, imgid, split, sentences (list of strings), cocoid,
    url; train / validation / test / restval (restval joins train). Images from data.image_root."""
    value = datasets.Value("string")
    features = {"filepath": value, "sentids": datasets.Sequence(datasets.Value("int64")), "filename": value,
                "imgid": datasets.Value("int64"), "split": value, "sentences": datasets.Sequence(value),
                "cocoid": datasets.Value("int64"), "url": value}
    images = tmp_path / "coco"

    def split(name: str, ids: list[int]) -> dict:
        folder = "train2014" if name in ("train", "restval") else "val2014"
        files = [f"COCO_{folder}_{i:012d}.jpg" for i in ids]
        coco_tree(images, files, folder)
        return {"filepath": [folder] * len(ids), "sentids": [[i] for i in ids], "filename": files, "imgid": ids,
                "split": [name] * len(ids), "sentences": [[f"a cat on a mat {i}"] for i in ids], "cocoid": ids,
                "url": [f"http://images.cocodataset.org/{folder}/{f}" for f in files]}

    root = write_hub_fixture(tmp_path / "hub", features, {
        "train": split("train", [1, 2]), "restval": split("restval", [3]), "validation": split("val", [4]),
        "test": split("test", [5, 6])})
    data = load_coco(str(images), hub_id=str(root), image_size=16)
    check_loaded(data, (3, 1, 2))
    assert data.train.names == ["COCO_train2014_000000000001.jpg", "COCO_train2014_000000000002.jpg",
                                "COCO_train2014_000000000003.jpg"]
    (images / "val2014" / "COCO_val2014_000000000005.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of 6 images .* missing .*COCO_val2014_000000000005.jpg"):
        load_coco(str(images), hub_id=str(root), image_size=16)


def karpathy_json(path: Path, images: list[dict]) -> Path:
    path.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    return path


def karpathy_image(name: str, split: str, sentences: list[str]) -> dict:
    return {"filename": name, "split": split, "imgid": 0,
            "sentences": [{"raw": s, "tokens": tokenize(s), "imgid": 0, "sentid": 0} for s in sentences]}


def test_caption_file_karpathy_and_coco_json(tmp_path: Path) -> None:
    names = [f"im{i}.jpg" for i in range(6)]
    coco_tree(tmp_path, names, "photos")
    listed = [karpathy_image(n, s, [f"a photo {i}", f"another photo {i}"])
              for i, (n, s) in enumerate(zip(names, ["train", "train", "restval", "val", "test", "test"]))]
    file = karpathy_json(tmp_path / "dataset_flickr8k.json", listed)
    data = load_caption_file(str(file), str(tmp_path / "photos"), image_size=16)
    check_loaded(data, (3, 1, 2))
    assert data.test.captions[0] == ["a photo 4", "another photo 4"]

    coco = {"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
            "annotations": [{"id": 10 + i, "image_id": i, "caption": f"a photo {i}"} for i in range(6)]}
    (tmp_path / "captions_val2014.json").write_text(json.dumps(coco))
    data = load_caption_file(str(tmp_path / "captions_val2014.json"), str(tmp_path / "photos"), image_size=16,
                             val_fraction=0.2, test_fraction=0.2)
    check_loaded(data, (4, 1, 1))  # no splits in a COCO file: val and test are carved from it


def test_caption_file_bad_input(tmp_path: Path) -> None:
    names = [f"im{i}.jpg" for i in range(3)]
    coco_tree(tmp_path, names, "photos")
    listed = [karpathy_image(n, s, ["a photo"]) for n, s in zip(names, ["train", "val", "test"])]
    listed.append(karpathy_image("gone.jpg", "train", ["a photo"]))
    file = karpathy_json(tmp_path / "missing.json", listed)
    with pytest.raises(UserError, match=r"1 of 4 images listed in .* are missing .* e\.g\. .*gone\.jpg"):
        load_caption_file(str(file), str(tmp_path / "photos"))
    no_test = karpathy_json(tmp_path / "no_test.json", [karpathy_image(n, "train", ["a photo"]) for n in names]
                            + [karpathy_image("im0.jpg", "test", [])])
    with pytest.raises(UserError, match="the test split has no captions"):
        load_caption_file(str(no_test), str(tmp_path / "photos"))
    (tmp_path / "photos" / "im2.jpg").write_bytes(b"not an image at all")
    ok = karpathy_json(tmp_path / "ok.json", listed[:3])
    with pytest.raises(UserError, match=r"cannot decode .*im2\.jpg"):  # decoded once, at load time
        load_caption_file(str(ok), str(tmp_path / "photos"), image_size=16)
    data = load_caption_file(str(ok), str(tmp_path / "photos"), image_size=16, stream=True)
    with pytest.raises(UserError, match=r"cannot decode .*im2\.jpg"):  # streamed: when its batch is read
        data.test.images.load(torch.tensor([0]))


def test_real_photos_are_resized_and_centre_cropped(tmp_path: Path) -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # a white middle half: what a centre crop of the wide image keeps
    Image.fromarray(image).save(tmp_path / "wide.png")
    listed = [karpathy_image("wide.png", s, ["a wide photo"]) for s in ("train", "val", "test")]
    data = load_caption_file(str(karpathy_json(tmp_path / "wide.json", listed)), image_size=10)
    crop = data.train.images.load(torch.tensor([0]))[0].float()
    assert crop.shape == (3, 10, 10) and crop.mean() > 240
