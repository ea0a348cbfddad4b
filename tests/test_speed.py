"""Speed: the bench command, torch.compile of every feature and pool variant, the flex/band/dense attention
paths agreeing, the device data path, the speed-run backbone and its schedule, and no host sync in a step."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attnbench.attention import VARIANTS, aux_losses, diagnostics
from attnbench.attention import mixer as mixers
from attnbench.attention.mixer import RelativePositionAttention
from attnbench.backbones.speednet import PatchWhitening, SpeedNet
from attnbench.bench import LocalSelfAttention
from attnbench.data.batches import Augment, TensorBatches
from attnbench.engine import forward_flops
from attnbench.engine.optim import build_optimizer, lr_factor
from tests.runner import assert_complete_summary, attnbench, run_dirs

# ------------------------------------------------------------------------------------------------ bench


def test_bench_prints_the_three_comparisons_and_writes_json(tmp_path: Path) -> None:
    result = attnbench("bench", "--quick", "--variants", "se", "--json", "report.json", cwd=tmp_path, check=True)
    out = result.stdout
    for title in ("training step", "1 · trainer overhead", "2 · module parity", "3 · attention scaling"):
        assert title in out, out
    report = json.loads((tmp_path / "report.json").read_text())
    [step] = report["steps"]
    assert step["variant"] == "se" and step["step_ms"] > 0 and step["peak_mib"] > 0
    assert step["params"] > step["attention_params"] > 0 and step["gflops_per_sample"] > 0
    [overhead] = report["overhead"]
    assert overhead["ratio"] > 0 and overhead["bare_step_ms"] > 0 and overhead["attnbench_step_ms"] > 0
    parity = {r["module"]: r for r in report["parity"]}
    assert set(parity) == {"se", "cbam", "mha"}
    for row in parity.values():  # each pair holds the same weights: the same function, timed
        assert row["max_abs_difference"] < 1e-5 and row["ratio"] > 0
    scaling = {(r["variant"], r["n"]): r for r in report["scaling"]}
    assert {v for v, _ in scaling} == {"mha", "relpos", "local", "naive-relpos"}
    assert scaling[("local", 128)]["path"] == "band" and scaling[("relpos", 128)]["path"] == "dense"
    # the naive form keeps N×N×d tensors: far more memory than relpos at the same length
    assert scaling[("naive-relpos", 64)]["peak_mib"] > 2 * scaling[("relpos", 64)]["peak_mib"]


@pytest.mark.parametrize("args, message", [
    (["data=cifar"], "data= is set by the bench"),
    (["--lengths", "a,b"], "--lengths takes comma-separated integers"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--steps", "many"], "argument --steps: invalid int value"),
])
def test_bench_refuses_bad_arguments_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture, args: list[str],
                                                 message: str) -> None:
    from attnbench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------------------------------------ compile


def _feature_and_pool_variants() -> list[str]:
    return [name for name, v in VARIANTS.items() if {"feature", "pool"} & set(v.slots)]


@pytest.mark.parametrize("name", _feature_and_pool_variants())
def test_compile_every_feature_and_pool_variant(name: str) -> None:
    """torch.compile (dynamo + AOT autograd; the aot_eager backend skips only the C++ code generation that
    ``trainer.compile=true`` adds on top) traces every variant in training and evaluation, through the
    slot protocol's ``record``/``add_loss`` side effects, and computes what eager mode computes."""
    torch._dynamo.reset()
    variant = VARIANTS[name]
    kind = "feature" if "feature" in variant.slots else "pool"
    torch.manual_seed(0)
    module = variant.modules[kind](16)
    x = torch.randn(4, 16, 5, 5) if kind == "feature" else torch.randn(4, 7, 16)
    mask = None if kind == "feature" else torch.arange(7).expand(4, 7) < torch.tensor([[7], [5], [3], [1]])
    call = (lambda m: m(x)) if kind == "feature" else (lambda m: m(x, mask=mask, grid=None))
    compiled = torch.compile(module, backend="aot_eager")

    inputs = [x.requires_grad_(), *module.parameters()]
    expected = call(module)
    expected_losses = aux_losses(module)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    torch.manual_seed(0)
    out = call(compiled)
    losses = aux_losses(module)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    assert losses.keys() == expected_losses.keys()
    if name == "stochastic":  # compiled code draws its random numbers its own way: a different sample
        assert out.shape == expected.shape and all(g.isfinite().all() for g in grads)
    else:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
        for grad, want in zip(grads, expected_grads):
            torch.testing.assert_close(grad, want, atol=1e-4, rtol=1e-3)

    module.eval()
    with torch.no_grad():
        out = call(compiled)
        reported = diagnostics(module)  # what the compiled pass recorded (training records nothing)
        torch.testing.assert_close(out, call(module))
        torch.testing.assert_close(reported, diagnostics(module))


@pytest.mark.parametrize("name", _feature_and_pool_variants())
def test_flops_are_counted_for_every_feature_and_pool_variant(name: str) -> None:
    """summary.json's flops_per_sample: the counter must get through every variant, learned queries included."""
    variant = VARIANTS[name]
    kind = "feature" if "feature" in variant.slots else "pool"
    module = variant.modules[kind](16).eval()
    call = (lambda: module(torch.randn(2, 16, 4, 4))) if kind == "feature" else \
        (lambda: module(torch.randn(2, 16, 16), mask=None, grid=(4, 4)))
    flops = forward_flops(call)
    assert flops is not None
    if any(True for _ in module.parameters()):  # learned layers multiply; parameter-free pools count nothing
        assert flops > 0


@pytest.mark.slow
def test_trainer_compile_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    """`trainer.compile=true` with inductor's C++ code generation: training, evaluation, the FLOP count and
    the inference timing all run on the compiled model (minutes on a 2-core CPU: marked slow)."""
    attnbench("train", "trainer.compile=true", "model=cbam", "trainer.epochs=1", "backbone.widths=[8,16]",
              "logger=none", cwd=tmp_path, check=True, timeout=1200)
    [run] = run_dirs(tmp_path / "outputs")
    assert assert_complete_summary(run)["flops_per_sample"] > 0


# ------------------------------------------------------------------------------------------------ attention paths


def _padded_batch(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mask = torch.ones(3, n, dtype=torch.bool)
    mask[1, n // 2:] = False
    mask[2, :] = False  # a sequence with no real token stays finite
    return torch.randn(3, n, dim), mask


@pytest.mark.parametrize("reach", [0, 1, 3])
def test_relpos_flex_path_equals_dense_path(reach: int) -> None:
    """The three-region flex form (far before, 2k+1 nearest keys, far after) equals the dense form. flex runs
    here uncompiled, forward only (the CPU has no flex backward); CUDA runs the same code compiled."""
    if mixers.flex_attention is None:
        pytest.skip("this torch has no flex_attention")
    module = RelativePositionAttention(16, heads=2, max_distance=reach).eval()
    module.capture = False
    x, mask = _padded_batch(20, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex warns that uncompiled it is unfused
        q, k, v = module.project(x)
        dense = module.attend_dense(q, k, v, mask)
        flex = module.attend_flex(q, k, v, mask, mixers.flex_attention)
    real = mask[:, None, :, None]  # what a mixer computes at padded positions is free (every pool ignores it)
    torch.testing.assert_close(flex * real, dense * real, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(flex).all()


def test_local_band_and_flex_paths_equal_dense_path_with_gradients() -> None:
    module = LocalSelfAttention(16, heads=2, half_window=3)
    x, mask = _padded_batch(24, 16)
    q, k, v = (t.detach().requires_grad_() for t in module.project(x))
    module.train()
    assert module.path(24, torch.device("cpu")) == "band"
    band = module.attend_band(q, k, v, mask)
    band_grads = torch.autograd.grad(band.square().sum(), (q, k, v))
    dense = module.attend_dense(q, k, v, mask)
    dense_grads = torch.autograd.grad(dense.square().sum(), (q, k, v))
    torch.testing.assert_close(band, dense, atol=1e-5, rtol=1e-4)
    for a, b in zip(band_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Luong's local-m: softmax inside the hard window, then the Gaussian falloff (σ = D/2); rows sum below one
    module.eval()
    with torch.no_grad():
        q0, k0, v0 = module.project(x[:1])
        offset = torch.arange(24)[None, :] - torch.arange(24)[:, None]
        scores = (q0 * module.scale) @ k0.transpose(-2, -1)
        weights = scores.masked_fill(offset.abs() > 3, -math.inf).softmax(-1) * torch.exp(-offset ** 2 / 4.5)
        torch.testing.assert_close(module.attend_dense(q0, k0, v0, None), weights @ v0, atol=1e-5, rtol=1e-4)
        assert (weights.sum(-1) < 1).all()
    if mixers.flex_attention is not None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex = module.attend_flex(q.detach(), k.detach(), v.detach(), mask, mixers.flex_attention)
        torch.testing.assert_close(flex, dense.detach(), atol=1e-5, rtol=1e-4)


def test_local_mixer_refuses_impossible_windows() -> None:
    with pytest.raises(ValueError, match="window"):
        LocalSelfAttention(16, half_window=0)
    with pytest.raises(ValueError, match="sigma"):
        LocalSelfAttention(16, sigma=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", [lambda: RelativePositionAttention(64, heads=4, max_distance=8),
                                  lambda: LocalSelfAttention(64, heads=4, half_window=8)])
def test_flex_path_trains_like_dense_path_on_cuda(make) -> None:
    module = make().cuda().train()
    assert module.path(300, torch.device("cuda")) == "flex"
    x, mask = _padded_batch(300, 64)
    x, mask = x.cuda(), mask.cuda()
    q, k, v = (t.detach().requires_grad_() for t in module.project(x))
    flex = module.attend(q, k, v, mask)
    flex_grads = torch.autograd.grad(flex.square().sum(), (q, k, v))
    dense = module.attend_dense(q, k, v, mask)
    dense_grads = torch.autograd.grad(dense.square().sum(), (q, k, v))
    real = mask[:, None, :, None]
    torch.testing.assert_close(flex * real, dense * real, atol=2e-4, rtol=2e-3)
    for a, b in zip(flex_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-3)


# ------------------------------------------------------------------------------------------------ data path


def test_augment_is_one_gather_equal_to_pad_crop_then_flip() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    out = Augment(crop_pad=2, flip=True)(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order: shifts, then flips
    shift = torch.randint(0, 5, (6, 2), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        crop = padded[i, :, shift[i, 0]:shift[i, 0] + 5, shift[i, 1]:shift[i, 1] + 7]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert out.dtype == torch.uint8


def test_batches_normalise_uint8_images_after_augmenting() -> None:
    images = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])
    [(x, y)] = list(TensorBatches(images, torch.arange(8), 8, mean=mean, std=std, shuffle=False).epoch(0))
    expected = (images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    torch.testing.assert_close(x, expected)
    assert y.tolist() == list(range(8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_never_waits_for_the_gpu(tmp_path: Path) -> None:
    """A host-device synchronisation anywhere in the data path or the trainer's step raises here."""
    from attnbench import bench

    settings = bench.Settings(["cbam"], [*bench.DEFAULT_OVERRIDES, "trainer.device=cuda"], overhead_steps=3)
    setup = bench.build("cbam", settings)
    setup.trainer.train_step(setup.batches[0])  # warm-up: lazy initialisation may synchronise once
    batches = setup.task.train_batches(1)
    first = next(batches)  # the epoch's order is copied to the device once, before its first batch
    torch.cuda.set_sync_debug_mode("error")
    try:
        setup.trainer.train_step(first)
        for batch in batches:
            setup.trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)


# ------------------------------------------------------------------------------------------------ speed run


def test_schedule_linear_one_cycle_and_norm_learning_rate(compose) -> None:
    cfg = compose("trainer.epochs=10", "trainer.schedule=linear", "trainer.warmup_epochs=2",
                  "trainer.warmup_start_factor=0.2", "trainer.end_factor=0.1", "trainer.norm_lr_scale=64",
                  "trainer.lr=0.5").trainer
    factor = lr_factor(cfg, steps_per_epoch=10)
    assert factor(0) == pytest.approx(0.2 + 0.8 / 20)
    assert factor(19) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(100) == pytest.approx(0.1)
    cosine = lr_factor(compose("trainer.epochs=10", "trainer.schedule=cosine", "trainer.end_factor=0.1",
                               "trainer.warmup_epochs=0").trainer, 10)
    assert cosine(0) == pytest.approx(1.0) and cosine(100) == pytest.approx(0.1)

    net = SpeedNet(3, [4, 8])
    optimizer = build_optimizer(cfg, net, torch.device("cpu"))
    norm_group = optimizer.param_groups[-1]
    assert norm_group["lr"] == pytest.approx(32.0) and norm_group["weight_decay"] == 0
    norms = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
             if p.requires_grad}
    assert {id(p) for p in norm_group["params"]} == norms and norms


def test_patch_whitening_decorrelates_patches() -> None:
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.3], [0.0, 0.5, 0.4], [0.0, 0.0, 0.2]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 12, 12))
    layer = PatchWhitening(3, kernel_size=2, eps=0.0)
    assert not layer.conv.weight.requires_grad and layer.conv.bias.requires_grad
    layer.fit(images)
    with torch.no_grad():
        out = layer(images)[:, :12]  # the first half; the second is its negative
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    torch.testing.assert_close(covariance, torch.eye(12), atol=0.05, rtol=0)


def _stripes_folder(root: Path, per_class: int) -> Path:
    """32×32 JPEGs in three classes by orientation (horizontal, vertical, diagonal stripes), random phase,
    period, colour and noise: nothing a colour statistic can tell apart."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    for split in ("train", "test"):
        for c, name in enumerate(("horizontal", "vertical", "diagonal")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                period, phase = rng.uniform(4, 8), rng.uniform(0, 2 * np.pi)
                coordinate = (y, x, (x + y) / np.sqrt(2))[c]
                wave = np.sin(2 * np.pi * coordinate / period + phase)
                colour = rng.uniform(0.3, 1.0, 3)
                pixels = 127 + 100 * wave[..., None] * colour + rng.normal(0, 20, (32, 32, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg")
    return root


def test_speedrun_recipe_trains_speednet_on_an_image_folder(tmp_path: Path) -> None:
    """`attnbench train experiment=speedrun data=image_folder data.path=...` (narrowed for a CPU test) learns."""
    folder = _stripes_folder(tmp_path / "stripes", per_class=100)
    attnbench("train", "experiment=speedrun", "data=image_folder", f"data.path={folder}", "model=se",
              "backbone.widths=[16,32,32]", "trainer.batch_size=32", "trainer.epochs=4", "trainer.warmup_epochs=0.7",
              "trainer.lr=0.2", "logger=none", cwd=tmp_path, check=True)
    [run] = run_dirs(tmp_path / "outputs")
    s = assert_complete_summary(run)
    assert (s["backbone"], s["model"]) == ("speednet", "se")
    assert s["primary"]["value"] >= 0.85, s["metrics"]  # chance is 1/3; 0.98 and 0.99 with seeds 0 and 2
