"""The image-side catalogue from the command line: every feature and pool variant trains on digits, and an
impossible hyperparameter ends with one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner import assert_complete_summary, attnbench, run_dirs

IMAGE_GRID = ["none", "se", "cbam", "dual", "gate", "mean", "max", "kmax", "chunkmax", "stochastic", "deepsets",
              "ffattn", "multiquery", "pyramid"]
TINY = ["data=digits", "logger=none", "trainer.epochs=1", "trainer.warmup_epochs=0", "trainer.lr=0.05",
        "trainer.batch_size=16", "backbone.widths=[8,16]"]


def test_list_shows_every_image_variant_with_its_slot_and_source(tmp_path: Path):
    out = attnbench("list", cwd=tmp_path, check=True).stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    for name, slot, source in [("dual", "feature", "Fu et al. 2019"), ("gate", "feature", "GRU-style"),
                               ("kmax", "pool", "Kalchbrenner"), ("chunkmax", "pool", "chunk-max"),
                               ("stochastic", "pool", "Zeiler & Fergus"), ("deepsets", "pool", "Zaheer"),
                               ("ffattn", "pool", "Raffel & Ellis"), ("multiquery", "pool", "Lin et al. 2017"),
                               ("pyramid", "pool", "Zhu et al. 2018")]:
        assert slot in rows[name] and source in rows[name] and "classify" in rows[name], rows[name]
    families = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines()
                if line.count("│") == 4}  # the data sets' table: data=, task, what it is
    assert (families["cub"], families["shapes"], families["reviews"]) == ("fewshot", "caption", "rate")


def test_the_whole_image_grid_trains_with_complete_summaries(tmp_path: Path):
    """The issue's grid (model=none,se,cbam,dual,gate,mean,max,kmax,...) at a tiny size: every job completes."""
    result = attnbench("train", "-m", f"model={','.join(IMAGE_GRID)}", *TINY, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summaries = {s["model"]: s for s in map(assert_complete_summary, run_dirs(tmp_path / "outputs"))}
    assert sorted(summaries) == sorted(IMAGE_GRID)
    accuracy = {name: s["metrics"]["test/acc"] for name, s in summaries.items()}
    assert sorted(accuracy.values())[len(accuracy) // 2] > 0.3, accuracy  # one epoch: the median is well above 0.1
    for name in ("dual", "gate", "ffattn", "multiquery", "stochastic", "pyramid"):
        assert "test/entropy" in summaries[name]["metrics"], name  # every weighting variant reports its entropy
        assert summaries[name]["attention_params"] > 0 or name == "stochastic"
    run = next(d for d in run_dirs(tmp_path / "outputs") if "model=multiquery" in d.name)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/aux/multiquery" in line for line in lines)  # the penalty reached the loss


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=kmax", "model.k=17"], "model=kmax does not fit backbone=smallcnn on data=digits: kmax: k=17 is "
                                   "larger than the 16 positions it pools"),
    (["model=se", "model.reduction=0"], "model.reduction must be at least 1, got 0 (model=se)"),
    (["data=shapes", "model=soft", "+model.memory_dim=8"], "model=soft has no key 'memory_dim'"),
])
def test_impossible_hyperparameters_end_with_one_line(tmp_path: Path, overrides: list[str], message: str):
    result = attnbench("train", "data=digits", "logger=none", *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _size_arguments() -> list[tuple[str, str, str]]:
    """(variant, its slot's data set, size argument) for every size argument of every catalogue variant."""
    import inspect

    from attnbench.attention import VARIANTS
    from attnbench.tasks import family_slots
    from attnbench.tasks.build import families_fitting

    embedded = {"classify": "digits", "rate": "reviews", "caption": "shapes", "fewshot": "glyphs"}
    found = []
    for name, v in VARIANTS.items():
        for cls in v.modules.values():
            sizes = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                     if p.kind == p.POSITIONAL_ONLY][1:]
            assert sizes, f"{cls.__name__}: its sizes are not positional-only"
            found += [(name, embedded[families_fitting(v, family_slots())[0]], size) for size in sizes]
    return found


SIZES = _size_arguments()


def test_every_variant_declares_its_sizes_positional_only() -> None:
    assert {v for v, _, _ in SIZES} == set(__import__("attnbench.attention").attention.VARIANTS) - {"none"}
    assert ("soft", "shapes", "memory_dim") in SIZES and ("cross", "glyphs", "positions") in SIZES


def test_a_size_argument_given_as_a_key_is_refused_for_every_variant() -> None:
    """Sizes come from the backbone: `+model.<size>=8` is an unknown key, refused before anything runs."""
    from attnbench.cli import preflight

    for name, data, size in SIZES:
        problem = preflight([f"model={name}", f"data={data}", f"+model.{size}=8", "logger=none"], False)
        assert problem and f"has no key {size!r}" in problem, (name, size, problem)
