"""What a run's attention had to choose from: the ``attention`` record, the refusal of attention over nothing,
and the warning when shapes reduce a variant to a simpler one (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import assert_complete_summary, attnbench, run_dirs

from attnbench.attention import VARIANTS, align, feature, mixer, pool, survey
from attnbench.tasks import build_task, family_slots, shared_data
from attnbench.tasks.build import families_fitting

# each task family's embedded data set: a variant's default run is on the first family it fits
EMBEDDED = {"classify": "digits", "rate": "reviews", "caption": "shapes", "fewshot": "glyphs"}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))  # glyphs, once


def test_every_catalogue_default_records_what_it_weighs_and_none_is_degenerate(compose) -> None:
    with shared_data():
        for name, v in VARIANTS.items():
            data = EMBEDDED[families_fitting(v, family_slots())[0]]
            cfg = compose(f"model={name}", f"data={data}")
            record = build_task(cfg, dict(cfg.hydra.runtime.choices)).attention
            assert record["summary"].startswith(name), record
            assert record["degenerate"] is None and record["reduced"] is None, (name, record)
            if name == "none":
                assert record["modules"] == []
                continue
            assert record["modules"], name
            for m in record["modules"]:
                assert m["slot"] in v.slots and m["over"] and min(m["over"].values()) >= 2, (name, m)
            assert record["params"] == sum(m["params"] for m in record["modules"])


def test_survey_counts_channels_and_positions_and_names_reductions() -> None:
    net = torch.nn.Sequential(feature.CBAM(32), feature.SqueezeExcite(32))
    cbam, se = survey(net, lambda: net(torch.randn(2, 32, 1, 1)), (feature.CBAM, feature.SqueezeExcite))
    assert cbam["over"] == {"channels": 32, "positions": 1} and se["over"] == {"channels": 32}
    assert cbam["params"] == sum(p.numel() for p in net[0].parameters())

    def reduction(module: torch.nn.Module, *inputs: torch.Tensor, **options) -> str | None:
        entry, = survey(module, lambda: module(*inputs, **options), (type(module),))
        return entry["reduces_to"]

    seq = torch.randn(2, 6, 16)
    assert reduction(pool.KMaxPool(16, k=1), seq).startswith("equals max")
    assert reduction(pool.KMaxPool(16, k=6), seq).startswith("selects nothing")
    assert reduction(pool.KMaxPool(16, k=4), seq) is None
    assert reduction(pool.ChunkMaxPool(16, k=6), seq).startswith("max-pools nothing")
    assert reduction(pool.MultiQueryAttention(16, r=1, d_a=8), seq).startswith("equals ffattn")
    assert reduction(mixer.MultiHeadAttention(16, heads=1), seq).startswith("equals self")
    assert reduction(mixer.HeadPruneAttention(16, heads=1), seq).startswith("equals self")
    assert reduction(mixer.SelfAttention(16), seq) is None
    assert reduction(mixer.MultiHeadAttention(16, heads=2), seq) is None

    def local(window: int) -> str | None:
        module = align.LocalAttention(8, 16, half_window=window)
        memory = torch.randn(2, 9, 16)
        module.start(memory, grid=(3, 3))
        return reduction(module, torch.randn(2, 8), memory)

    assert local(2).startswith("equals global") and local(1) is None


def write_folder(root: Path, classes: int = 25, per_class: int = 4, size: int = 28) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for k in range(per_class):
            pixels = np.full((size, size), 255, np.uint8)
            pixels[rng.integers(0, size - 8):, c % (size - 4): c % (size - 4) + 4] = rng.integers(0, 200)
            path = root / f"class{c}" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(path)
    return root


def test_cross_on_a_1x1_map_is_refused_naming_conv4_map_and_trains_on_its_7x7_map(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "omniglot-like")
    tiny = ["data=fewshot_folder", f"data.path={folder}", "data.image_size=28", "model=cross", "logger=none",
            "data.queries=2", "trainer.epochs=1", "data.train_episodes=4", "data.val_episodes=2",
            "data.test_episodes=2", "task.episodes_per_step=2"]
    refused = attnbench("train", *tiny, "backbone=conv4", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line, = refused.stderr.strip().splitlines()
    assert "weighs 1 position" in line and "backbone=conv4_map" in line and "allow_degenerate=true" in line
    assert not (tmp_path / "outputs").exists()

    trained = attnbench("train", *tiny, cwd=tmp_path, check=True)  # the data set's default: conv4_map
    assert "attention: cross in the pair slot: positions 49" in trained.stdout
    summary = assert_complete_summary(run_dirs(tmp_path / "outputs")[0])
    assert summary["backbone"] == "conv4_map"
    assert [m["over"] for m in summary["attention"]["modules"]] == [{"positions": 49}]


def test_a_variant_without_a_slot_is_refused_alone_and_in_a_grid(tmp_path: Path) -> None:
    # a backbone without blocks is refused by the value check of backbone.stages before any model is built
    result = attnbench("train", "backbone.stages=[0,0]", "model=cbam", "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and "backbone.stages must be at least 1, got [0, 0]" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # in a grid, every job is probed before the first one starts: nothing runs, the line names the job
    result = attnbench("train", "-m", "model=se,cbam", "backbone.stages=[1,1],[0,0]", "logger=none", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: job model=se,backbone.stages=[0,0]") and "backbone.stages must be" \
        in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_local_with_a_window_over_the_whole_memory_warns_that_it_equals_global(tmp_path: Path) -> None:
    result = attnbench("train", "data=shapes", "model=local", "model.half_window=9", "logger=none", "trainer.epochs=1",
                       "data.train_size=32", "data.val_size=8", "data.test_size=8", cwd=tmp_path, check=True)
    assert "warning: model=local equals global" in result.stdout, result.stdout
    summary = assert_complete_summary(run_dirs(tmp_path / "outputs")[0])
    assert summary["attention"]["reduced"].startswith("model=local equals global")
