"""Attacks on the file, data and run machinery beyond the named findings: what a folder, a cache or a run
directory can hold that attnbench did not put there. Each ends in one line (a ``UserError``), a warning and a
rebuild, or is read as nothing, and never hangs, never follows a link it did not make, never loses a file."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnbench.data import LOADERS
from attnbench.errors import UserError
from attnbench.track.lock import LOCK_NAME, DirectoryLock
from attnbench.track.run import RunDirectory


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A FIFO opened blocking would hang the suite: fail after 30 s instead."""
    def hung(*_: object) -> None:
        raise TimeoutError("hung (a FIFO or device opened blocking?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _images(root: Path, per_class: int = 4) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((8, 8, 3), 40 + 100 * c + i, np.uint8)).save(folder / f"{i}.png")
    return root


def _plant(kind: str) -> Callable[[Path], None]:
    """Something put into train/a of an image folder."""
    def plant(folder: Path) -> None:
        target = folder / "train" / "a"
        if kind == "zero-byte file":
            (target / "z.png").write_bytes(b"")
        elif kind == "text named .png":
            (target / "z.png").write_text("hello")
        elif kind == "truncated png":
            (target / "z.png").write_bytes((target / "0.png").read_bytes()[:40])
        elif kind == "fifo":
            os.mkfifo(target / "z.png")
        elif kind == "link to /dev/zero":
            (target / "z.png").symlink_to("/dev/zero")
        elif kind == "dangling link":
            (target / "z.png").symlink_to("/nonexistent/z.png")
        elif kind == "link loop":
            (target / "y.png").symlink_to("z.png")
            (target / "z.png").symlink_to("y.png")
        elif kind == "folder named .png":
            (target / "z.png").mkdir()
        elif kind == "decompression bomb":
            Image.new("L", (20000, 20000)).save(target / "z.png")
    return plant


@pytest.mark.parametrize("kind,message", [
    ("zero-byte file", "cannot decode"), ("text named .png", "cannot decode"), ("truncated png", "cannot decode"),
    ("fifo", "is not a regular file"), ("link to /dev/zero", "is not a regular file"),
    ("dangling link", "is not a regular file"), ("link loop", "is not a regular file"),
    ("folder named .png", "is not a regular file"), ("decompression bomb", "DecompressionBombError"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_an_image_folder_holding_what_is_no_image_is_one_line(tmp_path: Path, kind: str, message: str,
                                                              stream: bool) -> None:
    from attnbench.data.stream import StreamBatches

    root = _images(tmp_path / "images")
    _plant(kind)(root)
    import torch

    with pytest.raises(UserError, match=message) as raised:
        data = LOADERS["image_folder"](path=str(root), stream=stream, cache=False)
        # streamed: a file is read when its batch is
        batches = StreamBatches(data.train.images, data.train.labels, 4, mean=torch.zeros(3), std=torch.ones(3),
                                shuffle=False, workers=1)
        list(batches.epoch(0))
    assert "\n" not in str(raised.value)


def test_a_file_name_that_is_not_utf8_loads(tmp_path: Path) -> None:
    root = _images(tmp_path / "images")
    os.rename(root / "train" / "a" / "1.png", os.fsencode(root / "train" / "a") + b"/\xff\xfe.png")
    data = LOADERS["image_folder"](path=str(root), val_fraction=0.25)
    assert len(data.train) + len(data.val) == 8


@pytest.mark.parametrize("where", ["a file", "/dev/null", "missing"])
def test_data_path_that_is_no_folder_is_one_line(tmp_path: Path, where: str) -> None:
    path = {"a file": str(tmp_path / "f.txt"), "/dev/null": "/dev/null", "missing": str(tmp_path / "nope")}[where]
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        LOADERS["image_folder"](path=path)


def test_test_split_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    root = _images(tmp_path / "images")
    for f in (root / "test" / "a").iterdir():
        f.unlink()
    (root / "test" / "a").rmdir()
    for f in (root / "test" / "b").iterdir():
        f.unlink()
    (root / "test" / "b").rmdir()
    (root / "test").rmdir()
    (root / "test").write_text("x")
    with pytest.raises(UserError, match="test is missing"):
        LOADERS["image_folder"](path=str(root))


# ---------------------------------------------------------------------------------------- text files


@pytest.mark.parametrize("content,outcome", [
    ("\ufefftext,label\r\n" + "".join(f"row {i} good,pos\r\nrow {i} bad,neg\r\n" for i in range(20)), "loads"),
    ("text,label\r\n" + "".join(f"row {i} good,pos\r\nrow {i} bad,neg\r\n" for i in range(20)), "loads"),
    ("text,label\n" + "".join(f"row {i},\n" for i in range(10)), "has no label"),
    ("", "is empty"),
])
def test_text_files_with_bom_crlf_or_empty_labels(tmp_path: Path, content: str, outcome: str) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(content.encode())
    if outcome == "loads":
        data = LOADERS["text_file"](path=str(path))
        assert set(data.classes) == {"pos", "neg"}
    else:
        with pytest.raises(UserError, match=outcome):
            LOADERS["text_file"](path=str(path))


@pytest.mark.parametrize("make", ["fifo", "folder", "binary"])
def test_a_text_file_that_is_no_text_file_is_one_line(tmp_path: Path, make: str) -> None:
    path = tmp_path / "t.csv"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "folder":
        path.mkdir()
    else:
        path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError):
        LOADERS["text_file"](path=str(path))


# ---------------------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("content", ["dir", "fifo", "[1, 2]", "{not json", '"a string"', "[" * 100000])
def test_a_summary_that_is_no_summary_reads_as_none(tmp_path: Path, content: str) -> None:
    run = RunDirectory(tmp_path)
    if content == "dir":
        run.summary_path.mkdir()
    elif content == "fifo":
        os.mkfifo(run.summary_path)
    else:
        run.summary_path.write_text(content)
    assert run.read_summary() is None


@pytest.mark.parametrize("content", ["dir", "fifo"])
def test_a_lock_file_that_is_no_file_is_refused_and_left(tmp_path: Path, content: str) -> None:
    lock = tmp_path / LOCK_NAME
    lock.mkdir() if content == "dir" else os.mkfifo(lock)
    with pytest.raises(UserError, match="not a plain file"):
        DirectoryLock(tmp_path).acquire()
    assert lock.exists()


def test_a_lock_file_with_garbage_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_bytes(b"\xff\x00 not a pid")
    with DirectoryLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_checkpoint_that_is_a_symlink_is_replaced_never_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pt"
    target.write_bytes(b"keep")
    run = RunDirectory(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.last.symlink_to(target)
    run.save_checkpoint(run.last, {"step": 1})
    assert target.read_bytes() == b"keep" and not run.last.is_symlink()


def test_a_summary_that_is_a_symlink_is_replaced_never_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.summary_path.symlink_to(target)
    run.write_summary({"status": "completed"})
    assert target.read_text() == "keep" and json.loads(run.summary_path.read_text())["status"] == "completed"


@pytest.mark.parametrize("damage", ["empty", "garbage", "folder"])
def test_a_damaged_checkpoint_is_one_line(tmp_path: Path, damage: str) -> None:
    run = RunDirectory(tmp_path)
    run.checkpoints.mkdir()
    if damage == "folder":
        run.last.mkdir()
    else:
        run.last.write_bytes(b"" if damage == "empty" else os.urandom(1000))
    with pytest.raises(UserError, match="cannot be loaded"):
        run.load_checkpoint(run.last)


# ---------------------------------------------------------------------------------------- the decode cache


@pytest.mark.parametrize("damage", ["checksum folder", "checksum garbage", "checksum missing", "entry folder"])
def test_a_damaged_cache_entry_or_checksum_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], damage: str) -> None:
    from attnbench.data.cache import cache_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = _images(tmp_path / "images")
    first = LOADERS["image_folder"](path=str(root), val_fraction=0.25)
    entry = max(cache_folder().glob("folder-images-*.npy"), key=lambda e: e.stat().st_size)
    checksum = entry.with_name(entry.name + ".crc32")
    if damage == "checksum folder":
        checksum.unlink()
        checksum.mkdir()
    elif damage == "checksum garbage":
        checksum.write_text("twelve")
    elif damage == "checksum missing":
        checksum.unlink()
    else:
        entry.unlink()
        entry.mkdir()
    capsys.readouterr()
    again = LOADERS["image_folder"](path=str(root), val_fraction=0.25)
    import torch

    assert torch.equal(again.train.images, first.train.images)
    err = capsys.readouterr().err
    assert "Traceback" not in err and 1 <= err.count("warning:") <= 2, err


@pytest.mark.parametrize("name,make", [("summary.json", "dir"), ("metrics.jsonl", "dir"), ("train.log", "fifo"),
                                       ("figures", "file"), ("checkpoints", "file"), (".hydra", "file")])
def test_a_run_directory_with_an_entry_of_the_wrong_kind_is_refused_before_a_resume(tmp_path: Path, name: str,
                                                                                      make: str) -> None:
    """On main: a train.log FIFO hung the resume; the others failed after training, claiming a failed
    summary.json that could not be written."""
    entry = tmp_path / name
    {"dir": entry.mkdir, "fifo": lambda: os.mkfifo(entry), "file": lambda: entry.write_text("x")}[make]()
    with pytest.raises(UserError, match="the run directory is damaged"):
        RunDirectory(tmp_path).check_layout()
    assert os.path.lexists(entry)


def test_a_run_directory_whose_checkpoints_folder_is_a_link_to_a_folder_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bigdisk").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "bigdisk")
    RunDirectory(tmp_path / "run").check_layout()
