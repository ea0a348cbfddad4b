"""The decode cache: a second load reads the decoded images back, a changed file invalidates them, a corrupt
entry is rebuilt and an unwritable cache folder leaves the run uncached, each after one warning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import fails_if_it_hangs

from attnbench.data import LOADERS, last_load
from attnbench.data.cache import cache_folder


def write_folder(root: Path, per_class: int = 8) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((8, 8, 3), 30 + 120 * c + i, np.uint8)).save(folder / f"{i:03d}.png")
    return root


def load(root: Path, **kwargs):
    data = LOADERS["image_folder"](path=str(root), **kwargs)
    return data, last_load()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return cache_folder()


def test_second_load_is_cached_and_touching_a_file_invalidates_it(tmp_path: Path, cache: Path) -> None:
    root = write_folder(tmp_path / "images")
    first, report = load(root)
    assert (report.decoded, report.cached) == (32, 0), report
    assert report.line().startswith("data ready in ") and "decoded 32 files" in report.line()
    again, report = load(root)
    assert (report.decoded, report.cached) == (0, 32) and "cached 32 images" in report.line()
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.images, again.test.images)

    changed = root / "test" / "dog" / "003.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed)  # new pixels, new size
    os.utime(changed, ns=(1, 1))  # and an old modification time: still a different file
    after, report = load(root)
    assert report.decoded == 16 and report.cached == 16  # test/ decoded again, train/ still cached
    assert int(after.test.images.sum()) < int(first.test.images.sum())
    assert torch.equal(after.train.images, first.train.images)


def test_corrupt_entry_is_rebuilt_after_one_warning(tmp_path: Path, cache: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "images")
    first, _ = load(root)
    entries = sorted(cache.glob("folder-images-*.npy"))
    assert len(entries) == 2
    entries[0].write_bytes(b"\x93NUMPY garbage")
    capsys.readouterr()
    again, report = load(root)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{entries[0]} is unreadable" in err and "decoding again" in err
    assert report.decoded == 16 and torch.equal(again.train.images, first.train.images)
    assert np.load(entries[0], allow_pickle=False).dtype == np.uint8  # rebuilt
    assert sorted(cache.glob("folder-images-*.npy")) == entries  # nothing else lost or added
    _, report = load(root)
    assert report.cached == 32


def test_unwritable_cache_folder_runs_uncached_after_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")  # root ignores permissions; a file cannot be one
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    root = write_folder(tmp_path / "images")
    capsys.readouterr()
    data, report = load(root)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "is not writable" in err and "uncached" in err
    assert report.decoded == 32 and len(data.train) + len(data.val) == 16
    assert blocked.read_text() == "a file where the cache folder would be"


def test_cache_false_decodes_every_time_and_writes_nothing(tmp_path: Path, cache: Path) -> None:
    root = write_folder(tmp_path / "images")
    for _ in range(2):
        _, report = load(root, cache=False)
        assert (report.decoded, report.cached) == (32, 0)
    assert not cache.exists() or not list(cache.iterdir())


def test_fewshot_folder_and_caption_files_are_cached(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "classes"
    for c in range(5):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    first = LOADERS["fewshot_folder"](path=str(root), val_fraction=0.2, test_fraction=0.2)
    assert last_load().decoded == 15
    again = LOADERS["fewshot_folder"](path=str(root), val_fraction=0.2, test_fraction=0.2)
    assert last_load().cached == 15 and torch.equal(first.train.images, again.train.images)
    assert LOADERS["fewshot_folder"](path=str(root), cache=False) and last_load().cached == 0

    photos = tmp_path / "photos"
    photos.mkdir()
    listed = []
    for i, split in enumerate(("train", "val", "test")):
        Image.fromarray(np.full((10, 14, 3), 50 * i, np.uint8)).save(photos / f"p{i}.png")
        listed.append({"filename": f"p{i}.png", "split": split, "sentences": [{"raw": "a grey photo"}]})
    (photos / "captions.json").write_text(json.dumps({"images": listed}))
    first = LOADERS["caption_file"](path=str(photos / "captions.json"), image_size=8)
    assert last_load().decoded == 3
    again = LOADERS["caption_file"](path=str(photos / "captions.json"), image_size=8)
    assert last_load().cached == 3 and torch.equal(again.test.images.images, first.test.images.images)


def test_hub_cifar_is_cached_and_streams(tmp_path: Path, cache: Path) -> None:
    from test_data_images import write_hub_cifar10

    from attnbench.data.stream import StreamImages

    write_hub_cifar10(tmp_path / "hub")
    first = LOADERS["cifar"](hub_id=str(tmp_path / "hub"), val_size=10)
    assert last_load().decoded == 80
    again = LOADERS["cifar"](hub_id=str(tmp_path / "hub"), val_size=10)
    assert last_load().cached == 80 and torch.equal(first.train.images, again.train.images)
    for cached in (True, False):
        streamed = LOADERS["cifar"](hub_id=str(tmp_path / "hub"), val_size=10, stream="auto", memory_budget_mb=0.1,
                                    cache=cached)
        assert isinstance(streamed.train.images, StreamImages) and last_load().streamed == 80
        assert torch.equal(streamed.train.images[:], first.train.images)
        assert torch.equal(streamed.test.images[torch.tensor([3, 1])], first.test.images[[3, 1]])


def test_two_sets_at_the_same_relative_path_never_share_an_entry(tmp_path: Path, cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Same file names, sizes (BMP: uncompressed) and modification times; other pixels."""
    for project, value in (("a", 10), ("b", 200)):
        for split in ("train", "test"):
            for c in ("cat", "dog"):
                folder = tmp_path / project / "images" / split / c
                folder.mkdir(parents=True)
                for i in range(4):
                    Image.fromarray(np.full((8, 8, 3), value + i, np.uint8)).save(folder / f"{i}.bmp")
                    os.utime(folder / f"{i}.bmp", ns=(10**18, 10**18))
    loaded = {}
    for project in ("a", "b"):
        monkeypatch.chdir(tmp_path / project)
        loaded[project], _ = load(Path("images"), val_fraction=0.25)
    assert int(loaded["a"].test.images.max()) < 20 and int(loaded["b"].test.images.min()) >= 200


def _entries(cache: Path, kind: str) -> list[Path]:
    return sorted(cache.glob(f"{kind}-*.npy"))


@pytest.mark.parametrize("damage,why", [
    ("other pixels", "does not match its checksum"),
    ("wrong shape", "holds an array of shape (3, 3, 8, 8)"),
    ("absurd header", "holds an array of shape (1099511627776, 3)"),
    ("truncated", "where its header says"),
    ("fifo", "is not a regular file"),
])
def test_an_image_entry_that_does_not_match_its_description_is_rebuilt(
        tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str], damage: str, why: str) -> None:

    root = write_folder(tmp_path / "images")
    first, _ = load(root)
    entry = next(e for e in _entries(cache, "folder-images") if np.load(e).shape[0] == 16)
    stored = np.load(entry)
    entry.unlink()
    if damage == "other pixels":
        np.save(entry, 255 - stored)
    elif damage == "wrong shape":
        np.save(entry, stored[:3])
    elif damage == "absurd header":
        header = {"descr": "|u1", "fortran_order": False, "shape": (2**40, 3)}
        with entry.open("wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(stored.tobytes())
    elif damage == "truncated":
        np.save(entry, stored)
        entry.write_bytes(entry.read_bytes()[:-100])
    else:
        os.mkfifo(entry)
    capsys.readouterr()
    with fails_if_it_hangs("the load hung (a FIFO opened blocking)"):
        for stream in (False, True):
            again, _ = load(root, stream=stream)
            assert torch.equal(again.train.images[:], first.train.images)
            assert torch.equal(again.test.images[:], first.test.images)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and why in err and "decoding again" in err, err
    assert np.array_equal(np.load(entry), stored)  # rebuilt


@pytest.mark.parametrize("carved", [[-3, -2, -1], [0, 1, 99], [2, 2, 3], [], "absurd header"])
def test_a_split_entry_with_indices_out_of_bounds_is_rebuilt(tmp_path: Path, cache: Path, carved: list[int],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "images")
    first, _ = load(root, val_fraction=0.25)
    [entry] = _entries(cache, "split")
    entry.unlink()
    if carved == "absurd header":  # 8 TB of indices claimed, 24 bytes there
        with entry.open("wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (2**40,)})
            f.write(np.arange(3, dtype=np.int64).tobytes())
    else:
        np.save(entry, np.array(carved, np.int64))
    capsys.readouterr()
    again, _ = load(root, val_fraction=0.25)
    assert torch.equal(again.val.images, first.val.images) and torch.equal(again.train.images, first.train.images)
    assert capsys.readouterr().err.count("warning:") == 1
