"""A user's attention against the catalogue: installed plugins (entry points), model=custom, --config-dir,
backbone=timm and `attnbench check-variant`, from the command line as a user types them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from runner import assert_complete_summary, attnbench, run_dirs, summary

from attnbench.attention import VARIANTS
from attnbench.check_variant import check_variant

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_attention"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken_variants.py"
TINY = ["data=digits", "logger=none", "trainer.epochs=1", "trainer.warmup_epochs=0", "trainer.lr=0.05",
        "trainer.batch_size=16", "backbone.widths=[8,16]"]
SMALL = {"multiquery": {"r": 3, "d_a": 5}, "kmax": {"k": 2}, "chunkmax": {"k": 2}, "relpos": {"max_distance": 2}}


def installed(tmp_path: Path, entry_points: str) -> dict[str, str]:
    """The environment of a Python where the example package is installed: its code on the path and a
    distribution (the *.dist-info pip writes) declaring ``entry_points``."""
    site = tmp_path / "site"
    info = site / "my_attention-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-attention\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE), os.environ.get("PYTHONPATH", str(ROOT))])}


ECA_ENTRY_POINT = "eca = my_attention.eca:ECA"


def test_the_example_declares_the_entry_point_the_tests_install():
    assert 'eca = "my_attention.eca:ECA"' in (EXAMPLE / "pyproject.toml").read_text()


def test_the_example_plugin_is_listed_and_its_grid_ends_with_the_comparison(tmp_path: Path):
    env = installed(tmp_path, f"[attnbench.variants]\n{ECA_ENTRY_POINT}\n")
    rows = {line.split("│")[1].strip(): line for line in attnbench("list", cwd=tmp_path, env=env, check=True)
            .stdout.splitlines() if line.count("│") >= 4}
    assert "feature" in rows["eca"] and "Wang et al. 2020" in rows["eca"] and "classify" in rows["eca"], rows["eca"]
    result = attnbench("train", "-m", "model=none,se,eca", "seed=0,1", *TINY, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line.split() for line in result.stdout.splitlines() if line.split()[1:2] == ["eca"] and "±" in line]
    assert table, result.stdout[-3000:]  # the comparison table has the plugin's row (not only its attention line)
    runs = [assert_complete_summary(d) for d in run_dirs(tmp_path / "outputs") if "model=eca" in d.name]
    assert len(runs) == 2
    for s in runs:
        assert "test/entropy" in s["metrics"] and s["attention_params"] > 0 and "notes" not in s
    compare = json.loads(attnbench("compare", str(tmp_path / "outputs"), "--format", "json", cwd=tmp_path,
                                   env=env, check=True).stdout)
    assert "eca" in json.dumps(compare)


def test_a_broken_plugin_costs_one_warning_and_breaks_nothing_else(tmp_path: Path):
    env = installed(tmp_path, "[attnbench.variants]\nmissing = my_attention.eca:Nope\n"
                              "gone = not_a_module.attn:X\nse = my_attention.eca:ECA\n"
                              "eca = my_attention.eca:ECA\n")
    result = attnbench("list", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert any("'missing'" in w and "AttributeError" in w for w in warnings)
    assert any("'gone'" in w and "ModuleNotFoundError" in w for w in warnings)
    assert any("'se'" in w and "attnbench has a variant of that name" in w for w in warnings)
    assert "│ eca" in result.stdout
    refused = attnbench("train", "model=missing", *TINY, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "plugin variant 'missing'" in refused.stderr and "does not load" in refused.stderr
    assert not (tmp_path / "outputs").exists()


def test_model_custom_trains_a_class_from_a_file_outside_the_repository(tmp_path: Path):
    mine = tmp_path / "elsewhere" / "mine.py"
    mine.parent.mkdir()
    mine.write_text("from torch import nn\n\nclass Scale(nn.Module):\n"
                    "    def __init__(self, channels, /, init=1.0):\n        super().__init__()\n"
                    "        self.scale = nn.Parameter(init * __import__('torch').ones(channels, 1, 1))\n\n"
                    "    def forward(self, x):\n        return x * self.scale\n")
    result = attnbench("train", "model=custom", f"model.target={mine}:Scale", "model.slot=feature",
                       "+model.init=0.5", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    s = assert_complete_summary(run_dirs(tmp_path / "outputs")[0])
    assert s["model"] == "custom" and "plain nn.Module" in s["notes"]["attention"]
    # counted as its attention record counts it: one scale per channel in each of the two feature slots
    assert s["params"] > 0 and s["attention_params"] == s["attention"]["params"] == 8 + 16


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.target=no_such_pkg.attn:X", "model.slot=feature"], "cannot import no_such_pkg.attn"),
    (["model.target=torch:zeros", "model.slot=feature"], "zeros is not an nn.Module class"),
    ([f"model.target={BROKEN}:DeadParameter", "model.slot=sideways"], "slot kind 'sideways' does not exist"),
    ([f"model.target={BROKEN}:LeakyPool", "model.slot=mixer"], "fills the mixer slot, which backbone=smallcnn lacks"),
    ([f"model.target={BROKEN}:DeadParameter", "model.slot=feature", "+model.gain=2"], "has no key 'gain'"),
    (["model.target=torch.nn:Identity", "model.slot=feature"], "Identity's sizes must be positional-only"),
    ([f"model.target={BROKEN}:Missing", "model.slot=feature"], "has no 'Missing'"),
])
def test_bad_custom_targets_end_with_one_line(tmp_path: Path, overrides: list[str], message: str):
    result = attnbench("train", "model=custom", *overrides, "logger=none", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "outputs").exists()


def test_config_dir_adds_a_model_config(tmp_path: Path):
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "wide_se.yaml").write_text("# SE, reduction 2\nname: se\nreduction: 2\n")
    result = attnbench("train", "--config-dir", str(tmp_path / "my_conf"), "model=wide_se", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_dirs(tmp_path / "outputs")[0]
    assert summary(run)["model"] == "wide_se"
    assert "reduction: 2" in (run / ".hydra" / "config.yaml").read_text()


@pytest.mark.parametrize("name", sorted(name for name, v in VARIANTS.items() if v.slots))
def test_check_variant_passes_on_every_catalogue_variant(name: str):
    for slot, cls in VARIANTS[name].modules.items():
        assert check_variant(cls, slot, SMALL.get(name, {}), compile_backend="off") == [], (name, slot)


@pytest.mark.parametrize("name", ["se", "mha", "ffattn", "soft"])
def test_check_variant_compiles_one_variant_of_each_kind(name: str):
    (slot, cls), = VARIANTS[name].modules.items()
    assert check_variant(cls, slot, compile_backend="aot_eager") == []


@pytest.mark.parametrize(("target", "line"), [
    (["WrongShape", "--slot", "feature"], "WrongShape (feature) shape: in training the feature slot returns "
                                          "(2, 8, 4, 4), got (2, 8)"),
    (["LeakyPool"], "LeakyPool (pool) masking: changing padded positions changes the output of the real ones"),
    (["DeadParameter", "--slot", "feature"], "DeadParameter (feature) gradient: parameter unused gets no gradient"),
])
def test_check_variant_names_each_failure_in_one_line(tmp_path: Path, target: list[str], line: str):
    result = attnbench("check-variant", f"{BROKEN}:{target[0]}", *target[1:], "--compile", "off", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line in err for err in result.stderr.splitlines()), result.stderr
    assert "Traceback" not in result.stderr


def test_check_variant_passes_the_example_from_the_command_line(tmp_path: Path):
    result = attnbench("check-variant", "my_attention.eca:ECA", cwd=tmp_path,
                       env={"PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)])})
    assert result.returncode == 0 and "ECA passes every feature-slot check" in result.stdout, result.stderr


def image_folder(root: Path) -> Path:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, brightness in (("dark", 80), ("light", 255)):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(32, 32, 3, generator=generator) * brightness).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def test_timm_resnet18_with_cbam_in_its_attention_hook(tmp_path: Path):
    pytest.importorskip("timm")
    from attnbench.attention.feature import CBAM

    data = image_folder(tmp_path / "images")
    result = attnbench("train", "backbone=timm", "backbone.model_name=resnet18", "model=cbam", "data=image_folder",
                       "data.image_size=64",  # resnet18 leaves 32×32 images a 1×1 map: CBAM's spatial gate is refused
                       f"data.path={data}", "logger=none", "trainer.epochs=1", "trainer.batch_size=8",
                       cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    s = assert_complete_summary(run_dirs(tmp_path / "outputs")[0])
    widths = [64, 64, 128, 128, 256, 256, 512, 512]  # resnet18's eight basic blocks, one CBAM each
    assert s["attention_params"] == sum(sum(p.numel() for p in CBAM(c).parameters()) for c in widths)
    assert "test/entropy" in s["metrics"]


def test_timm_pool_slot_replaces_its_global_pooling():
    pytest.importorskip("timm")
    from attnbench.attention.pool import FeedForwardAttention
    from attnbench.backbones import TimmBackbone
    from attnbench.backbones.timm import has_attention_hook

    torch.manual_seed(0)
    net = TimmBackbone(3, "resnet18", slots={"pool": FeedForwardAttention}).eval()
    assert isinstance(net.pool, FeedForwardAttention) and net.out_dim == 512
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in net.net.modules())
    x = torch.randn(2, 3, 32, 32)
    fmap = net.net.forward_features(x)
    torch.testing.assert_close(net(x), net.pool(fmap.flatten(2).transpose(1, 2), grid=fmap.shape[2:]))
    assert TimmBackbone(3, "resnet18").pool.__class__.__name__ == "MeanPool"  # timm's average pooling, as a slot
    assert has_attention_hook("resnext50_32x4d") and not has_attention_hook("test_vit")


def test_timm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    import sys

    from attnbench.backbones import TimmBackbone
    from attnbench.errors import UserError

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'attnbench\[timm\]'"):
        TimmBackbone(3, "resnet18")


def test_a_feature_variant_on_a_timm_model_without_a_hook_is_refused(tmp_path: Path):
    pytest.importorskip("timm")
    data = image_folder(tmp_path / "images")
    result = attnbench("train", "backbone=timm", "backbone.model_name=test_vit", "model=se", "data=image_folder",
                       f"data.path={data}", "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and "model=se fills the feature slot, which backbone=timm lacks" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
