"""Streaming image sets (data.stream): the same batches as the in-memory path, resumed exactly, and learning when
a capped memory budget makes ``auto`` stream."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import attnbench, fails_if_it_hangs, run_dirs, summary, wait_for

from attnbench.data import LOADERS, last_load
from attnbench.data.batches import Augment, TensorBatches
from attnbench.data.stream import StreamBatches, StreamImages


def write_colours(root: Path, per_class: int, size: int = 12, seed: int = 0) -> Path:
    """Two classes anyone can tell apart: reddish and bluish noisy squares."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(per_class // 2, 4))):
        for c, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.mark.parametrize("cache", [True, False])
def test_streamed_batches_are_the_in_memory_batches(tmp_path: Path, cache: bool) -> None:
    root = write_colours(tmp_path / "images", 30)
    memory = LOADERS["image_folder"](path=str(root), stream=False)
    streamed = LOADERS["image_folder"](path=str(root), stream=True, cache=cache)
    assert isinstance(streamed.train.images, StreamImages) and last_load().streamed == 90
    assert torch.equal(streamed.train.images[:], memory.train.images)
    mean, std = torch.tensor([0.4, 0.2, 0.5]), torch.tensor([0.2, 0.1, 0.3])
    for rank, world in ((0, 1), (1, 2)):
        kwargs = dict(mean=mean, std=std, shuffle=True, seed=3, augment=Augment(2, True), rank=rank, world=world)
        a = TensorBatches(memory.train.images, memory.train.labels, 8, generator=torch.Generator().manual_seed(5),
                          **kwargs)
        b = StreamBatches(streamed.train.images, streamed.train.labels, 8, workers=2,
                          generator=torch.Generator().manual_seed(5), **kwargs)
        assert len(a) == len(b)
        for epoch, start in ((0, 0), (1, 3)):  # a resumed epoch skips its first batches
            pairs = list(zip(a.epoch(epoch, start), b.epoch(epoch, start), strict=True))
            assert len(pairs) == len(a) - start
            for (xa, ya), (xb, yb) in pairs:
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_auto_streams_above_the_memory_budget_and_learns(tmp_path: Path) -> None:
    root = write_colours(tmp_path / "images", 48)
    size_mb = 2 * (48 + 24) * 3 * 12 * 12 / 2**20  # the decoded set: about 0.06 MB
    args = ["train", "data=image_folder", f"data.path={root}", f"data.memory_budget_mb={size_mb / 4:.4f}",
            "backbone=smallcnn", "model=none", "logger=none", "trainer.epochs=4", "trainer.batch_size=16"]
    result = attnbench(*args, cwd=tmp_path, check=True)
    assert "streaming 144 images from disk" in result.stdout, result.stdout
    s = summary(run_dirs(tmp_path / "outputs")[0])
    assert s["metrics"]["test/acc"] >= 0.9  # chance is 0.5


def test_stream_true_on_a_set_that_cannot_stream_is_one_line(tmp_path: Path) -> None:
    result = attnbench("train", "data=digits", "data.stream=true", "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "data=digits cannot stream" in result.stderr and "Traceback" not in result.stderr



def test_streamed_run_stopped_by_sigterm_resumes_like_an_uninterrupted_one(tmp_path: Path) -> None:
    root = write_colours(tmp_path / "images", 96)
    args = ["train", "data=image_folder", f"data.path={root}", "data.stream=true", "data.crop_pad=2",
            "backbone=smallcnn", "model=se", "logger=none", "trainer.epochs=6", "trainer.batch_size=16"]
    attnbench(*args, "hydra.run.dir=straight", cwd=tmp_path, check=True)

    process = subprocess.Popen([sys.executable, "-m", "attnbench", *args, "hydra.run.dir=stopped"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    wait_for(metrics, process)
    while metrics.read_text().count('"split": "val"') < 2:  # stopped in the third epoch
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    stopped = summary(tmp_path / "stopped")
    assert stopped["status"] == "interrupted" and stopped["epochs"] < 6

    attnbench("train", "resume=stopped", cwd=tmp_path, check=True)
    resumed, straight = summary(tmp_path / "stopped"), summary(tmp_path / "straight")
    assert resumed["status"] == "completed"
    assert resumed["metrics"] == straight["metrics"]
    lines = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounts a tiny tmpfs: needs root")
def test_stream_onto_a_full_cache_file_system_warns_and_runs_uncached(tmp_path: Path) -> None:
    """The entry is 245 KB, the cache's file system 64 KB: SIGBUS on main (a write through the map), here the
    space is taken before mapping, so the run goes on from the files with one warning."""
    root = write_colours(tmp_path / "images", 40, size=32)
    cache = tmp_path / "cache"
    cache.mkdir()
    command = (f"mount -t tmpfs -o size=64k tmpfs {cache} && exec {sys.executable} -m attnbench train "
               f"data=image_folder data.path={root} data.stream=true backbone=smallcnn logger=none "
               f"trainer.epochs=1 hydra.run.dir={tmp_path / 'run'}; ")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is not permitted here")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", command], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "is not writable (No space left on device)" in result.stderr
    assert summary(tmp_path / "run")["status"] == "completed"
    assert not (tmp_path / "run" / ".attnbench.lock").exists()
    assert not list(cache.rglob("*.tmp"))  # the mount is gone with its namespace; nothing was left here either


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "entry cut short"])
def test_a_file_damaged_while_streaming_stops_with_one_line(tmp_path: Path, damage: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in DataLoader workers: the worker's exception used to reach the trainer as a 27-line traceback
    in the message (a truncated entry, as the worker's bus error)."""
    from attnbench.data.cache import cache_folder
    from attnbench.errors import UserError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = write_colours(tmp_path / "images", 12)
    data = LOADERS["image_folder"](path=str(root), stream=True, cache=damage == "entry cut short")
    victim = root / "train" / "class1" / "0005.png"
    if damage == "deleted":
        victim.unlink()
    elif damage == "corrupted":
        victim.write_bytes(b"not a png")
    else:
        entry = max(cache_folder().glob("folder-images-*.npy"), key=lambda e: e.stat().st_size)  # train's
        os.truncate(entry, entry.stat().st_size // 2)
    batches = StreamBatches(data.train.images, data.train.labels, 4, mean=torch.zeros(3), std=torch.ones(3),
                            shuffle=False, workers=2)
    with pytest.raises(UserError) as raised:
        list(batches.epoch(0))
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert ("0005.png" in message) if damage != "entry cut short" else ("was cut short" in message), message


def test_a_fifo_named_like_an_image_is_refused_without_hanging(tmp_path: Path) -> None:
    from attnbench.errors import UserError

    root = write_colours(tmp_path / "images", 4)
    os.mkfifo(root / "train" / "class1" / "9999.png")

    with fails_if_it_hangs("the load hung on the FIFO"):
        for stream in (False, True):
            with pytest.raises(UserError, match="9999.png is not a regular file"):
                LOADERS["image_folder"](path=str(root), stream=stream, cache=False)


def test_sigterm_to_the_job_and_its_decode_workers_ends_in_one_line(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (or a scheduler's SIGTERM) reaches the whole process group: the decode workers
    inherited the job's handler and raised in their chunks, and the job hung; they leave it to the job now."""
    root = write_colours(tmp_path / "images", 350, size=16)  # 1,050 files: decoded on worker processes
    job = subprocess.Popen([sys.executable, "-m", "attnbench", "train", "data=image_folder", f"data.path={root}",
                            "data.cache=false", "backbone=smallcnn", "logger=none", "trainer.epochs=1",
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert any(job.stdout.readline().startswith("preparing") for _ in range(3))  # after the recipe line
        time.sleep(1.0)  # decoding
        os.killpg(job.pid, signal.SIGTERM)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: "), err
    assert summary(tmp_path / "run")["status"] == "interrupted"
