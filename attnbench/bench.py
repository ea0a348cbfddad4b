"""``attnbench bench``: what a training step costs, and whether attnbench adds anything to it.

For a data shape (random images: ``data=synthetic``), a backbone and a list of variants it measures the
training step — forward+backward+update time (median of ``--steps`` timed steps after warm-up, the device
synchronised around each), samples/s, peak memory, parameters and FLOPs — and then three comparisons, each
a ratio:

1. **trainer overhead**: attnbench's real training loop (``Trainer.train_epoch``: the device-resident data
   path of ``data/batches.py`` with its batched augmentation, the autocast context, auxiliary-loss collection,
   the trainer's step and its bookkeeping) against a bare hand-written PyTorch loop (forward, cross-entropy,
   ``zero_grad``, ``backward``, SGD ``step``) on the same model, at the same precision, fed the same batch
   tensors drawn beforehand — so everything the runner does beyond the model's own work counts against it.
   The ratio is bare time ÷ attnbench time: 1.0 means no overhead; the target is ≥ 0.97.
2. **module parity**: ``se`` and ``cbam`` against timm's ``SEModule``/``CbamModule`` at the same width and
   settings, ``mha`` against ``torch.nn.MultiheadAttention``, each pair holding the same weights (their
   outputs are checked equal); forward+backward time, attnbench ÷ peer, ≤ 1.0.
3. **attention scaling**: ``mha``, ``relpos`` and ``local`` forward+backward time and peak memory as the
   sequence grows, beside the size of one N×N×d tensor — what a naive relative-position implementation forms
   (measured as ``naive-relpos`` at the shorter lengths).

Each ratio is timed interleaved (A B, then B A, ...), so a change of machine load during the run slows both
sides alike; the ratio reported is the median of the per-round ratios. Peak memory is, on CUDA, the rise of
``torch.cuda.max_memory_allocated`` over one step; on the CPU, the peak of tensor storage allocated during
the step and still alive, tracked operator by operator (``TensorMemory``). Either way it is what a step adds
to the memory already held (weights, optimiser state, inputs).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .attention.mixer import (
    MAX_BAND,
    MultiHeadAttention,
    RelativePositionAttention,
    attention_with_lse,
    band_index,
    band_keys,
    flex_kernel,
    key_mask,
    merge_heads,
    offset_block_mask,
    padding_score_mod,
)
from .attention.scores import normalize
from .errors import CommandParser, UserError

DEFAULT_OVERRIDES = ["backbone=resnet20", "trainer.batch_size=32"]
OVERHEAD_TARGET = 0.97  # bare-loop time ÷ attnbench time
PARITY_TARGET = 1.0  # attnbench module time ÷ peer module time


# ----------------------------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised before and after."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def median_time(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int,
                budget_s: float = math.inf) -> float:
    """Median seconds of ``steps`` calls after ``warmup`` untimed ones; fewer (at least one) when the calls
    together would run past ``budget_s`` (the longest sequences on a CPU)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < steps and (not times or sum(times) < budget_s):
        times.append(timed(fn, device))
    return statistics.median(times)


def paired_ratio(a: Callable[[], Any], b: Callable[[], Any], device: torch.device, rounds: int) -> dict[str, float]:
    """Time ``a`` and ``b`` in alternating order (a b, b a, a b, ...): the median of each and the median of the
    per-round ratios b/a. Interleaving makes a change of machine load hit both sides alike."""
    times_a, times_b = [], []
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        t_first, t_second = timed(first, device), timed(second, device)
        ta, tb = (t_first, t_second) if r % 2 == 0 else (t_second, t_first)
        times_a.append(ta)
        times_b.append(tb)
    return {"a_s": statistics.median(times_a), "b_s": statistics.median(times_b),
            "ratio": statistics.median(tb / ta for ta, tb in zip(times_a, times_b))}


class TensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the block and still alive, on any device.

    Every operator's outputs are inspected; a storage seen for the first time counts until it is freed (a weak
    reference per storage). Outputs that share storage with an input (views, in-place updates of weights and
    optimiser state) are not new memory. What existed before the block is not counted, so the figure is what
    the block adds: activations, temporaries, gradients.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        self._release()
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in inputs and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    def _release(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]


def peak_memory(fn: Callable[[], Any], device: torch.device) -> float:
    """MiB one call of ``fn`` adds at its peak to the memory already allocated (see the module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with TensorMemory() as tracker:
        fn()
    return tracker.peak / 2**20


def machine() -> dict[str, Any]:
    """Where the numbers come from: processor, cores, load, versions, accelerator."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "python": platform.python_version(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ----------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Everything a bench run measures with; its field defaults are the command line's defaults."""

    variants: list[str] = field(default_factory=lambda: ["none", "se", "cbam"])
    overrides: list[str] = field(default_factory=lambda: list(DEFAULT_OVERRIDES))
    steps: int = 5  # timed steps per figure (after warm-up)
    warmup: int = 2
    rounds: int = 12  # interleaved rounds of the trainer-overhead ratio
    overhead_steps: int = 3  # steps per round of the trainer-overhead comparison (one epoch of the trainer)
    overhead_variants: list[str] | None = None  # variants whose trainer overhead is measured (default: the first)
    scaling_steps: int = 3  # timed steps per (variant, N) of the scaling
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    width: int = 128  # model width D of the scaling mixers
    heads: int = 2  # head width d = width / heads
    naive_max: int = 512  # longest N the naive N×N×d relpos is run at
    half_window: int = 16  # local's half-width D, and relpos's max_distance k
    feature_shape: tuple[int, int, int, int] = (32, 64, 16, 16)  # (B, C, H, W) of the se/cbam parity
    mixer_shape: tuple[int, int, int] = (8, 256, 128)  # (B, N, D) of the mha parity
    point_budget_s: float = 5.0  # timing one (variant, N) of the scaling stops after this long (≥ 1 step)
    parity_rounds: int = 24  # interleaved rounds of each module-parity ratio (the command line: 2 × --rounds)
    parity_call_s: float = 0.02  # each timed parity call repeats the module until it takes about this long
    device: str = "auto"


# ----------------------------------------------------------------------------------------------- 1. step cost


@dataclass
class Setup:
    """A variant built the way ``attnbench train`` builds it: task, trainer (placed, with its optimiser)."""

    variant: str
    task: Any
    trainer: Any
    batches: list[tuple[Tensor, Tensor]]  # one epoch of the trainer's own batches, drawn beforehand


def build(variant: str, settings: Settings) -> Setup:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import composer
    from .engine import Trainer
    from .job import fingerprint, seed_everything
    from .tasks import build_task
    from .track import Logger, RunDirectory

    overrides = ["data=synthetic", "logger=none", f"model={variant}", f"trainer.device={settings.device}",
                 *settings.overrides]
    try:
        with composer("bench") as compose:
            batch = compose(overrides).trainer.batch_size
            overrides.append(f"data.train_size={batch * settings.overhead_steps}")
            cfg = compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(f"bench: {str(e).strip().splitlines()[0]}") from e
    seed_everything(cfg.seed)
    task = build_task(cfg, dict(cfg.hydra.runtime.choices))
    trainer = Trainer(cfg.trainer, task, RunDirectory(tempfile.gettempdir()), Logger(), seed=cfg.seed,
                      fingerprint=fingerprint(cfg))
    trainer.setup()
    task.model.train()
    return Setup(variant, task, trainer, list(task.train_batches(0)))


def step_cost(setup: Setup, settings: Settings) -> dict[str, Any]:
    """Time, throughput, memory, size and FLOPs of the trainer's step on one batch."""
    from .attention import attention_parameters
    from .engine import forward_flops

    trainer, task = setup.trainer, setup.task
    batch = setup.batches[0]
    size = len(batch[1])
    step = median_time(lambda: trainer.train_step(batch), trainer.device, settings.steps, settings.warmup)
    memory = peak_memory(lambda: trainer.train_step(batch), trainer.device)
    model = task.model
    flops = forward_flops(lambda: task.predict(model, batch[0]))
    return {"variant": setup.variant, "step_ms": step * 1e3, "samples_per_s": size / step, "peak_mib": memory,
            "params": sum(p.numel() for p in model.parameters()), "attention_params": attention_parameters(model),
            "gflops_per_sample": flops / size / 1e9 if flops is not None else None, "batch": size}


# ----------------------------------------------------------------------------------------------- 2. overhead


def trainer_overhead(setup: Setup, settings: Settings) -> dict[str, Any]:
    """attnbench's epoch loop against a bare loop over the same batch tensors (see the module docstring)."""
    from .engine.trainer import StopSignals
    from .track.console import TrainingProgress

    trainer, task = setup.trainer, setup.task
    cfg, model = trainer.cfg, trainer.forward_model
    # the bare loop's own optimiser, as a hand-written loop makes it: one group, the same hyperparameters
    fused = trainer.device.type == "cuda" or None
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(task.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
                                    fused=fused)
    else:
        optimizer = torch.optim.AdamW(task.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                      weight_decay=cfg.weight_decay, fused=fused)
    precision = trainer.autocast

    def bare() -> None:
        for x, y in setup.batches:
            with precision():
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    stop, bar = StopSignals(), TrainingProgress(len(setup.batches), 1)  # the bar is not started: no display
    epoch = iter(range(1, 1_000_000))

    def attnbench_epoch() -> None:
        trainer.state.batch = 0  # a fresh epoch each call, as ``fit`` starts one
        trainer.train_epoch(next(epoch), stop, bar)

    for _ in range(max(1, settings.warmup // 2)):
        attnbench_epoch()
        bare()
    timing = paired_ratio(attnbench_epoch, bare, trainer.device, settings.rounds)
    steps = len(setup.batches)
    return {"variant": setup.variant, "attnbench_step_ms": timing["a_s"] / steps * 1e3,
            "bare_step_ms": timing["b_s"] / steps * 1e3, "ratio": timing["ratio"], "steps_per_round": steps,
            "rounds": settings.rounds, "target": OVERHEAD_TARGET}


# ----------------------------------------------------------------------------------------------- 3. parity


def _forward_backward(module: nn.Module, x: Tensor, call: Callable[[nn.Module, Tensor], Tensor]) -> Callable[[], None]:
    def step() -> None:
        call(module, x).sum().backward()
    return step


def _copy_se(ours: nn.Module, peer: nn.Module) -> None:
    with torch.no_grad():
        for a, b in ((ours.fc1, peer.fc1), (ours.fc2, peer.fc2)):
            b.weight.copy_(a.weight.view_as(b.weight))  # a fully connected layer as timm's 1×1 convolution
            b.bias.copy_(a.bias)


def _copy_cbam(ours: nn.Module, peer: nn.Module) -> None:
    with torch.no_grad():
        first, second = ours.channel.mlp[0], ours.channel.mlp[2]
        for a, b in ((first, peer.channel.fc1), (second, peer.channel.fc2)):
            b.weight.copy_(a.weight.view_as(b.weight))
            b.bias.copy_(a.bias)
        # timm stacks [mean, max] where the CBAM code (and attnbench) stacks [max, mean]
        peer.spatial.conv.conv.weight.copy_(ours.spatial.conv.weight[:, [1, 0]])
        peer.spatial.conv.bn.weight.copy_(ours.spatial.norm.weight)
        peer.spatial.conv.bn.bias.copy_(ours.spatial.norm.bias)


def _copy_mha(ours: nn.Module, peer: nn.Module) -> None:
    with torch.no_grad():
        peer.in_proj_weight.copy_(ours.in_proj.weight)
        peer.in_proj_bias.copy_(ours.in_proj.bias)
        peer.out_proj.weight.copy_(ours.out_proj.weight)
        peer.out_proj.bias.copy_(ours.out_proj.bias)


def parity_pairs(settings: Settings, device: torch.device) -> list[dict[str, Any]]:
    """(name, ours, peer, input, how to call the peer) for every module that has a public peer here."""
    from .attention.feature import CBAM, SqueezeExcite
    from .attention.mixer import MultiHeadAttention

    b, c, h, w = settings.feature_shape
    n_batch, n, d = settings.mixer_shape
    pairs = []
    feature_x = torch.randn(b, c, h, w, device=device, requires_grad=True)
    try:
        from timm.layers.cbam import CbamModule
        from timm.layers.squeeze_excite import SEModule
    except ImportError:
        pairs.append({"name": "se/cbam", "skipped": "timm is not installed: pip install 'attnbench[bench]'"})
    else:
        se = SqueezeExcite(c)
        peer_se = SEModule(c, rd_channels=se.fc1.out_features)  # timm rounds C/16 to a multiple of 8 otherwise
        _copy_se(se, peer_se)
        pairs.append({"name": "se", "peer": "timm SEModule", "ours": se, "other": peer_se, "x": feature_x,
                      "call": lambda m, x: m(x), "shape": f"B,C,H,W = {b},{c},{h},{w}"})
        cbam = CBAM(c)
        peer_cbam = CbamModule(c, rd_channels=cbam.channel.mlp[0].out_features, spatial_kernel_size=7,
                               mlp_bias=True)
        _copy_cbam(cbam, peer_cbam)
        pairs.append({"name": "cbam", "peer": "timm CbamModule", "ours": cbam, "other": peer_cbam, "x": feature_x,
                      "call": lambda m, x: m(x), "shape": f"B,C,H,W = {b},{c},{h},{w}"})
    heads = 4
    mha = MultiHeadAttention(d, heads)
    peer_mha = nn.MultiheadAttention(d, heads, batch_first=True)
    _copy_mha(mha, peer_mha)
    sequence_x = torch.randn(n_batch, n, d, device=device, requires_grad=True)
    pairs.append({"name": "mha", "peer": "torch.nn.MultiheadAttention", "ours": mha, "other": peer_mha,
                  "x": sequence_x, "call": lambda m, x: m(x, x, x, need_weights=False)[0],
                  "ours_call": lambda m, x: m(x), "shape": f"B,N,D = {n_batch},{n},{d}, {heads} heads"})
    return pairs


def _repeat(fn: Callable[[], None], times: int) -> None:
    for _ in range(times):
        fn()


def module_parity(settings: Settings, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for pair in parity_pairs(settings, device):
        if "skipped" in pair:
            rows.append({"module": pair["name"], "skipped": pair["skipped"]})
            continue
        ours, other, x = pair["ours"].to(device).train(), pair["other"].to(device).train(), pair["x"]
        ours_call = pair.get("ours_call", pair["call"])
        with torch.no_grad():
            difference = (ours_call(ours, x) - pair["call"](other, x)).abs().max().item()
        a = _forward_backward(ours, x, ours_call)
        b = _forward_backward(other, x, pair["call"])
        # enough calls per timing that a fast GPU kernel is not lost in the timer's resolution
        single = median_time(a, device, 3, settings.warmup)
        repeat = max(1, math.ceil(settings.parity_call_s / max(single, 1e-6)))

        for _ in range(settings.warmup):
            b()
        timing = paired_ratio(functools.partial(_repeat, b, repeat), functools.partial(_repeat, a, repeat), device,
                              settings.parity_rounds)
        rows.append({"module": pair["name"], "peer": pair["peer"], "shape": pair["shape"],
                     "attnbench_ms": timing["b_s"] / repeat * 1e3, "peer_ms": timing["a_s"] / repeat * 1e3,
                     "ratio": timing["ratio"], "max_abs_difference": difference, "target": PARITY_TARGET})
    return rows


# ----------------------------------------------------------------------------------------------- 4. scaling


def naive_relpos(module: nn.Module, x: Tensor) -> Tensor:
    """Shaw et al.'s formula with the (N, N, d) tensors aᴷ_ij and aⱽ_ij formed explicitly: the reference that
    ``RelativePositionAttention`` must not become."""

    q, k, v = module.project(x)
    n = x.shape[1]
    buckets = module.distance_buckets(n, x.device)
    a_key, a_value = module.rel_key[buckets], module.rel_value[buckets]  # (N, N, d) each
    scores = (q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, a_key)) * module.scale
    weights = scores.softmax(-1)
    out = weights @ v + torch.einsum("bhij,ijd->bhid", weights, a_value)
    return module.out_proj(merge_heads(out))


class LocalSelfAttention(MultiHeadAttention):
    """Local attention as a token mixer: each position attends within [i − D, i + D], with a Gaussian falloff.

    The windowed row of the attention-scaling section (and the GPU check's flex-against-dense check): a mixer
    whose cost grows with N·D rather than N². It is no catalogue variant; the survey's local attention is
    ``model=local``, in the captioning decoder's ``align`` slot.

    Luong et al., "Effective Approaches to Attention-based Neural Machine Translation", EMNLP 2015, section 3.2,
    in its monotonic form (local-m, aligned position p_i = i) applied to self-attention: α_ij = align(q_i, k_j)
    · exp(−(j − i)²/2σ²) for |j − i| ≤ D, σ = D/2, where align is the softmax (or ``norm``) of the scaled
    scores inside the window — as in the paper the falloff is applied after normalising, so a row's weights sum
    to less than one. h heads over learned Q/K/V projections and an output projection, as ``mha``.

    Paths (``path``): ``band`` scores only the 2D+1 keys of each window, from an (N, 2D+1, d) gather — O(N·D)
    memory, exact, on any device (windows up to ``MAX_BAND`` wide); ``flex`` on CUDA (softmax, no dropout): a
    window block mask, the log-falloff as a score modification, and a second pass for the window's plain
    normaliser; ``dense`` forms the N×N weights (evaluation and captured weights, which are (B, h, N, N)).
    """

    paper = "Luong et al. 2015, Effective Approaches to Attention-based NMT (local-m, as self-attention)"
    one_head = None

    def __init__(self, dim: int, heads: int = 4, half_window: int = 2, sigma: float | None = None,
                 norm: str = "softmax", temperature: float = 1.0, dropout: float = 0.0, bias: bool = True) -> None:
        if half_window < 1:
            raise ValueError(f"half_window (D) must be at least 1, got {half_window}")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        super().__init__(dim, heads, "scaled", norm, temperature, dropout, bias)
        self.half_window = half_window
        self.sigma = sigma if sigma is not None else half_window / 2

    def path(self, n: int, device: torch.device) -> str:
        if self.recording:
            return "dense"
        if (self.norm == "softmax" and not (self.training and self.dropout)
                and flex_kernel(device) is not None):
            return "flex"
        return "band" if 2 * self.half_window + 1 <= MAX_BAND else "dense"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        path = self.path(q.shape[-2], q.device)
        if path == "flex":
            return self.attend_flex(q, k, v, mask, flex_kernel(q.device))
        return self.attend_band(q, k, v, mask) if path == "band" else self.attend_dense(q, k, v, mask)

    def falloff(self, offset: Tensor) -> Tensor:
        """exp(−(j − i)²/2σ²) for offsets j − i."""
        return torch.exp(-offset.float().square() / (2 * self.sigma ** 2))

    def attend_dense(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        position = torch.arange(q.shape[-2], device=q.device)
        offset = position[None, :] - position[:, None]  # j − i, (N, N)
        inside = offset.abs() <= self.half_window
        if mask is not None:
            inside = inside & key_mask(mask)
        weights = normalize((q * self.scale) @ k.transpose(-2, -1), inside, self.norm)
        weights = weights * self.falloff(offset).to(weights.dtype)
        self.record_rows(weights, mask)
        return self.drop(weights) @ v

    def attend_band(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        index, inside = band_index(q.shape[-2], self.half_window, q.device)
        scores = ((q * self.scale).unsqueeze(-2) @ k[:, :, index].transpose(-2, -1)).squeeze(-2)  # (B,h,N,2D+1)
        weights = normalize(scores, band_keys(mask, index, inside), self.norm)
        offsets = torch.arange(-self.half_window, self.half_window + 1, device=q.device)
        weights = weights * self.falloff(offsets).to(weights.dtype)
        return (self.drop(weights).unsqueeze(-2) @ v[:, :, index]).squeeze(-2)

    def attend_flex(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, kernel: Callable) -> Tensor:
        """Σ_j softmax_window(s)_ij g_ij v_j = (the window attention of s + log g) · exp(lse(s + log g) − lse(s))."""
        n, inverse = q.shape[-2], 1 / (2 * self.sigma ** 2)

        def log_falloff(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, kv: Tensor) -> Tensor:
            return score - (kv - qi).float().square() * inverse

        window = offset_block_mask("within", n, self.half_window, q.device)
        out, lse_falloff = attention_with_lse(kernel, q, k, v, padding_score_mod(mask, log_falloff), window,
                                              self.scale)
        _, lse = attention_with_lse(kernel, q, k, v, padding_score_mod(mask), window, self.scale)
        # a query whose window holds no real key gets no weight at all (as ``normalize`` gives it)
        shift = torch.where(torch.isfinite(lse), lse_falloff - lse, -float("inf"))
        return (out.float() * shift.exp()[..., None]).to(q.dtype)


def scaling_module(name: str, settings: Settings) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """The module of one scaling row and the function its step runs."""
    d, h, k = settings.width, settings.heads, settings.half_window
    if name == "mha":
        module = MultiHeadAttention(d, h)
    elif name == "local":
        module = LocalSelfAttention(d, h, half_window=k)
    else:
        module = RelativePositionAttention(d, h, max_distance=k)
    if name == "naive-relpos":
        return module, lambda x: naive_relpos(module, x)
    return module, module


SCALING = ("mha", "relpos", "local", "naive-relpos")


def attention_scaling(settings: Settings, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    head_dim = settings.width // settings.heads
    for n in settings.lengths:
        for name in SCALING:
            if name == "naive-relpos" and n > settings.naive_max:
                continue
            torch.manual_seed(0)
            module, forward = scaling_module(name, settings)
            module.to(device).train()
            x = torch.randn(1, n, settings.width, device=device, requires_grad=True)
            step = functools.partial(_mixer_step, forward, x)
            seconds = median_time(step, device, settings.scaling_steps, 1, settings.point_budget_s)
            memory = peak_memory(step, device)
            rows.append({"variant": name, "n": n, "width": settings.width, "heads": settings.heads,
                         "head_dim": head_dim, "ms": seconds * 1e3, "peak_mib": memory,
                         "bytes_per_n2": memory * 2**20 / n**2,
                         "path": "N×N×d" if name == "naive-relpos" else module.path(n, device),
                         "nnd_tensor_mib": n * n * head_dim * 4 / 2**20})
    return rows


def _mixer_step(forward: Callable[[Tensor], Tensor], x: Tensor) -> None:
    forward(x).square().mean().backward()


# ----------------------------------------------------------------------------------------------- reporting


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from .track.console import console

    if not console.is_terminal:  # a pipe or a log file: the tables' full width rather than rich's 80 columns
        console = Console(highlight=False, width=140)

    m = report["machine"]
    load = " → ".join(f"{pair[0]:.1f}" for pair in (m["load_average_at_start"], m["load_average"]) if pair)
    console.print(f"[bold]attnbench bench[/bold] · {report['device']} · {m['cpu']} · {m['cores']} cores, "
                  f"{m['torch_threads']} torch threads · load average {load or '-'} · torch {m['torch']}"
                  + (f" · {m['gpu']}" if m["gpu"] else ""))

    table = Table(title=f"training step · {' '.join(report['overrides'])}")
    for column in ("model=", "batch", "step ms", "samples/s", "peak MiB", "params", "attn params",
                   "fwd GFLOP/sample"):
        table.add_column(column, justify="left" if column == "model=" else "right")
    for r in report["steps"]:
        table.add_row(r["variant"], _fmt(r["batch"]), _fmt(r["step_ms"]), _fmt(r["samples_per_s"]),
                      _fmt(r["peak_mib"]), _fmt(r["params"]), _fmt(r["attention_params"]),
                      _fmt(r["gflops_per_sample"]))
    console.print(table)

    table = Table(title="1 · trainer overhead: bare PyTorch loop ÷ attnbench's loop (same model, batches, "
                        f"precision; ≥ {OVERHEAD_TARGET} wanted)")
    for column in ("model=", "attnbench ms/step", "bare ms/step", "ratio", ""):
        table.add_column(column, justify="left" if column == "model=" else "right")
    for r in report["overhead"]:
        table.add_row(r["variant"], _fmt(r["attnbench_step_ms"]), _fmt(r["bare_step_ms"]), f"{r['ratio']:.3f}",
                      "[green]ok[/green]" if r["ratio"] >= OVERHEAD_TARGET else "[red]below target[/red]")
    console.print(table)

    table = Table(title=f"2 · module parity: attnbench ÷ peer, forward+backward (≤ {PARITY_TARGET} wanted)")
    for column in ("module", "peer", "input", "attnbench ms", "peer ms", "ratio", "max |Δ| of outputs", ""):
        table.add_column(column, justify="left" if column in ("module", "peer", "input") else "right")
    for r in report["parity"]:
        if "skipped" in r:
            table.add_row(r["module"], "-", "-", "-", "-", "-", "-", r["skipped"])
            continue
        table.add_row(r["module"], r["peer"], r["shape"], _fmt(r["attnbench_ms"]), _fmt(r["peer_ms"]),
                      f"{r['ratio']:.3f}", f"{r['max_abs_difference']:.1e}",
                      "[green]ok[/green]" if r["ratio"] <= PARITY_TARGET else "[red]slower[/red]")
    console.print(table)

    s = report["settings"]
    table = Table(title=f"3 · attention scaling: forward+backward, batch 1, D={s['width']}, {s['heads']} heads "
                        f"(d={s['width'] // s['heads']}), half-window/max distance {s['half_window']}")
    for column in ("model", "N", "path", "ms", "peak MiB", "peak bytes / N²", "one N×N×d tensor MiB"):
        table.add_column(column, justify="left" if column in ("model", "path") else "right")
    for r in report["scaling"]:
        table.add_row(r["variant"], _fmt(r["n"]), r["path"], _fmt(r["ms"]), _fmt(r["peak_mib"]),
                      _fmt(r["bytes_per_n2"]), _fmt(r["nnd_tensor_mib"]))
    console.print(table)
    for line in report["notes"]:
        console.print(line, soft_wrap=True)


def scaling_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Growth of the peak per doubling of N, and what the naive form would need at the longest N."""
    notes = []
    by = {(r["variant"], r["n"]): r for r in rows}
    lengths = sorted({r["n"] for r in rows})
    for variant in ("mha", "relpos", "local"):
        present = [n for n in lengths if (variant, n) in by]
        if len(present) >= 2:
            a, b = present[-2], present[-1]
            growth = by[(variant, b)]["peak_mib"] / max(by[(variant, a)]["peak_mib"], 1e-9)
            notes.append(f"{variant}: N {a} → {b} multiplies the peak by {growth:.2f} (N² would be "
                         f"{(b / a) ** 2:.0f})")
    naive = [n for n in lengths if ("naive-relpos", n) in by]
    if naive and ("relpos", lengths[-1]) in by:
        longest, measured = lengths[-1], naive[-1]
        per = by[("naive-relpos", measured)]["peak_mib"] / by[("naive-relpos", measured)]["nnd_tensor_mib"]
        need = per * by[("relpos", longest)]["nnd_tensor_mib"]
        notes.append(f"relpos at N={longest} peaked at {by[('relpos', longest)]['peak_mib']:,.0f} MiB; the naive "
                     f"N×N×d form peaked at {per:.1f}× one N×N×d tensor at N={measured}, i.e. about "
                     f"{need / 1024:,.1f} GiB at N={longest} (one such tensor alone: "
                     f"{by[('relpos', longest)]['nnd_tensor_mib'] / 1024:,.1f} GiB)")
    return notes


# ----------------------------------------------------------------------------------------------- command


def parse(args: list[str]) -> tuple[Settings, str | None, int | None, str, bool]:
    """The settings, the JSON path, torch's threads, which sections run (``all``, ``no-runs`` or ``runs``:
    section 4 alone) and whether they are the quick ones."""
    parser = CommandParser(
        prog="attnbench bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Training-step cost per variant, trainer overhead against a bare PyTorch loop, module "
                    "parity against timm/torch, attention scaling with the sequence length.",
        epilog="Other arguments are config overrides, as for `attnbench train` (data=synthetic is fixed; its\n"
               "shape is data.channels, data.image_size, data.classes). Defaults: "
               + " ".join(DEFAULT_OVERRIDES))
    defaults = Settings()
    parser.add_argument("--variants", default=",".join(defaults.variants),
                        help="comma-separated model= variants (feature/pool)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps per figure, after warm-up")
    parser.add_argument("--overhead-models", help="comma-separated variants whose trainer overhead is measured "
                                                 "(default: the first of --variants)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds,
                        help="interleaved rounds of the trainer-overhead ratio (twice as many for module parity)")
    parser.add_argument("--lengths", default=",".join(map(str, defaults.lengths)),
                        help="sequence lengths of the scaling")
    parser.add_argument("--width", type=int, default=defaults.width, help="model width D of the scaling")
    parser.add_argument("--heads", type=int, default=defaults.heads, help="heads of the scaling (head width D/heads)")
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--json", help="where to write the JSON report (default outputs/bench/<time>.json)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test in seconds (without "
                                                             "section 4 unless --runs)")
    parser.add_argument("--runs", action="store_true", help="only section 4, run efficiency: real `attnbench "
                                                            "train` processes split into phases (minutes)")
    parser.add_argument("--no-runs", action="store_true", help="sections 1-3 only")
    options, rest = parser.parse_known_args(args)
    unknown = [a for a in rest if a.startswith("-") or "=" not in a]
    if unknown:
        raise UserError(f"bench: unknown argument {unknown[0]!r} (`attnbench bench --help` lists the options)")
    for override in rest:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in ("data", "model"):
            raise UserError(f"bench: {key}= is set by the bench (data=synthetic; variants with --variants); "
                            f"give the data shape with data.image_size=..., data.channels=..., data.classes=...")
    variants = [v for v in options.variants.split(",") if v]
    try:
        lengths = [int(n) for n in options.lengths.split(",") if n]
    except ValueError as e:
        raise UserError(f"bench: --lengths takes comma-separated integers, got {options.lengths!r}") from e
    if not variants or not lengths or options.steps < 1 or options.rounds < 1:
        raise UserError("bench: --variants and --lengths must not be empty; --steps and --rounds at least 1")
    if options.width % options.heads:
        raise UserError(f"bench: --heads {options.heads} does not divide --width {options.width}")
    overhead_variants = [v for v in (options.overhead_models or "").split(",") if v] or None
    if options.quick:
        settings = Settings(variants, ["backbone=smallcnn", "trainer.batch_size=8", "data.image_size=16", *rest],
                            steps=2, warmup=1, rounds=2, overhead_steps=2, scaling_steps=1, lengths=[64, 128],
                            parity_rounds=2, parity_call_s=0.0,
                            width=32, heads=2, naive_max=64, half_window=4, feature_shape=(4, 32, 8, 8),
                            mixer_shape=(2, 32, 32), overhead_variants=overhead_variants, device=options.device)
    else:
        settings = Settings(variants, [*DEFAULT_OVERRIDES, *rest], steps=options.steps, rounds=options.rounds,
                            parity_rounds=2 * options.rounds,
                            lengths=lengths, width=options.width, heads=options.heads,
                            overhead_variants=overhead_variants, device=options.device)
    sections = "runs" if options.runs else "no-runs" if options.no_runs or options.quick else "all"
    return settings, options.json, options.threads, sections, options.quick


def progress(message: str) -> None:
    from .track.console import console

    console.print(f"[dim]· {message}[/dim]", soft_wrap=True)


def run(settings: Settings) -> dict[str, Any]:
    from .engine import resolve_device

    device = resolve_device(settings.device)
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    steps, overhead, sections = [], [], {}
    overhead_variants = settings.overhead_variants or settings.variants[:1]
    for variant in dict.fromkeys([*settings.variants, *overhead_variants]):
        measured = "training step" if variant in settings.variants else ""
        if variant in overhead_variants:
            measured += (", then " if measured else "") + f"trainer overhead ({settings.rounds} interleaved rounds)"
        progress(f"model={variant}: {measured}")
        section = time.perf_counter()
        setup = build(variant, settings)
        if variant in settings.variants:
            steps.append(step_cost(setup, settings))
        if variant in overhead_variants:
            overhead.append(trainer_overhead(setup, settings))
        sections[f"model={variant}"] = time.perf_counter() - section
        del setup
    progress("module parity: se, cbam against timm; mha against torch.nn.MultiheadAttention")
    section = time.perf_counter()
    parity = module_parity(settings, device)
    sections["parity"] = time.perf_counter() - section
    progress(f"attention scaling: N = {', '.join(map(str, settings.lengths))}")
    section = time.perf_counter()
    scaling = attention_scaling(settings, device)
    sections["scaling"] = time.perf_counter() - section
    report = {
        "command": "attnbench bench", "time": datetime.now().isoformat(timespec="seconds"),
        "device": str(device), "machine": {**machine(), "load_average_at_start": load_before},
        "overrides": settings.overrides, "settings": {k: v for k, v in vars(settings).items()},
        "steps": steps, "overhead": overhead, "parity": parity, "scaling": scaling,
        "notes": scaling_notes(scaling), "section_s": sections, "wall_time_s": time.perf_counter() - started,
    }
    return report


def check_before_running(settings: Settings, report: Path) -> None:
    """What would fail only after minutes of measuring: a report path that exists (or whose folder cannot
    be), and a device (``--device``, or a ``trainer.device=`` override) that is none."""
    from .engine import resolve_device

    if report.exists() or report.is_symlink():
        raise UserError(f"bench: --json {report} exists; give a new file name (the bench never replaces a file)")
    folder = report.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"bench: cannot write the report {report}: {folder} is not a writable folder")
    devices = [settings.device] + [o.split("=", 1)[1] for o in settings.overrides if o.startswith("trainer.device=")]
    for device in devices:
        resolve_device(device)


def main(args: list[str]) -> int:
    from . import run_efficiency
    from .track.console import console, info

    settings, json_path, threads, sections, quick = parse(args)
    path = Path(json_path) if json_path else Path("outputs/bench") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    check_before_running(settings, path)
    if threads:
        torch.set_num_threads(threads)
    if sections == "runs":
        report = {"command": "attnbench bench --runs", "time": datetime.now().isoformat(timespec="seconds"),
                  "machine": machine()}
    else:
        report = run(settings)
        print_report(report)
    if sections != "no-runs":
        started = time.perf_counter()
        report["runs"] = run_efficiency.run_section(quick=quick, progress=progress)
        report["machine"]["load_average_after_runs"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        report["wall_time_s"] = report.get("wall_time_s", 0.0) + time.perf_counter() - started
        run_efficiency.print_section(report["runs"], console)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x") as f:  # never over a file that appeared while the bench ran
        f.write(json.dumps(report, indent=1, default=str))
    info(f"{report['wall_time_s']:.0f} s · report: {path}")
    return 0
