"""Token mixers (the ``mixer`` slot): shapes, masking, gradients, and each variant against a reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from attnbench.attention import VARIANTS, attention_entropy, aux_losses, capture_weights, diagnostics
from attnbench.attention.mixer import (
    CompositionalDeAttention,
    HardConcreteGate,
    HeadPruneAttention,
    MultiHeadAttention,
    RelativePositionAttention,
    SelfAttention,
    TokenGate,
)
from attnbench.tasks.build import attention_slots
from tests.runner import attnbench

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
DIM, HEADS = 16, 4

MIXERS = {
    "self": lambda: SelfAttention(DIM),
    "mha": lambda: MultiHeadAttention(DIM, HEADS),
    "mha-cosine-sigmoid": lambda: MultiHeadAttention(DIM, HEADS, score="cosine", norm="sigmoid"),
    "relpos": lambda: RelativePositionAttention(DIM, HEADS, max_distance=2),
    "headprune": lambda: HeadPruneAttention(DIM, HEADS, init_log_alpha=3.0),
    "coda": lambda: CompositionalDeAttention(DIM, heads=2),
    "gate": lambda: TokenGate(DIM),
}
WEIGHTING = [name for name in MIXERS if name != "gate"]


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 9 tokens; the second has 4 padded positions at the end."""
    torch.manual_seed(0)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    return torch.randn(2, 9, DIM), mask


def _copy_from_torch(ours: MultiHeadAttention, reference: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ours.in_proj.weight.copy_(reference.in_proj_weight)
        ours.in_proj.bias.copy_(reference.in_proj_bias)
        ours.out_proj.weight.copy_(reference.out_proj.weight)
        ours.out_proj.bias.copy_(reference.out_proj.bias)


def _explicit(x, w_in, b_in, heads, mask=None, norm="softmax", scale=None, temperature=1.0):
    """softmax(QKᵀ/√d)V head by head, written out from the formula (norm as scores.normalize defines it)."""
    dim = x.shape[-1]
    d = dim // heads
    q, k, v = (x @ w_in.T + b_in).split(dim, -1)
    outs = []
    for h in range(heads):
        qh, kh, vh = (t[..., h * d:(h + 1) * d] for t in (q, k, v))
        scores = qh @ kh.transpose(1, 2) * (d ** -0.5 if scale is None else scale) / temperature
        if norm == "softmax":
            if mask is not None:
                scores = scores.masked_fill(~mask[:, None, :], -math.inf)
            weights = scores.softmax(-1)
        elif norm == "sigmoid":
            weights = torch.sigmoid(scores) * (1 if mask is None else mask[:, None, :])
        else:
            weights = F.relu(scores) * (1 if mask is None else mask[:, None, :])
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-6)
        outs.append(weights @ vh)
    return torch.cat(outs, -1)


# ------------------------------------------------------------------------------------------ every mixer


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("training", [True, False])
def test_shape_and_padding_changes_nothing(name, training, batch):
    x, mask = batch
    module = MIXERS[name]().train(training)
    torch.manual_seed(1)  # headprune samples its gates in training: the same draw for both passes
    out = module(x, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    x2 = x.clone()
    x2[~mask] = 100 * torch.randn_like(x2[~mask])
    torch.manual_seed(1)
    out2 = module(x2, mask)
    assert torch.allclose(out[mask], out2[mask], atol=1e-5)
    assert torch.isfinite(module(x).sum())  # no mask at all


@pytest.mark.parametrize("name", WEIGHTING)
def test_recorded_weights_are_zero_on_padding(name, batch):
    x, mask = batch
    module = MIXERS[name]().eval()
    with capture_weights(module):
        module(x, mask)
        weights = module.weights
    heads = 1 if name == "self" else (2 if name == "coda" else HEADS)
    assert weights.shape == (2, heads, 9, 9)
    assert (weights[1, :, :, 5:] == 0).all()  # padded keys
    assert (weights[1, :, 5:, :] == 0).all()  # rows of padded queries, left out of the entropy
    assert (weights[1, :, :5, :5] != 0).any()
    assert "entropy" in module.diagnostics()


@pytest.mark.parametrize("name", MIXERS)
def test_gradients_reach_every_parameter(name, batch):
    x, mask = batch
    module = MIXERS[name]().train()
    loss = module(x, mask)[mask].pow(2).sum() + sum(aux_losses(module).values(), torch.zeros(()))
    loss.backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MIXERS)
def test_runs_under_bf16_autocast(name, batch):
    """The engine trains in bf16 autocast on CUDA; the CPU flavour catches the same dtype mismatches."""
    x, mask = batch
    module = MIXERS[name]().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x, mask)
    out.float().sum().backward()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("build", [lambda: MultiHeadAttention(DIM, HEADS, dropout=0.5),
                                   lambda: RelativePositionAttention(DIM, HEADS, dropout=0.5),
                                   lambda: CompositionalDeAttention(DIM, dropout=0.5)])
def test_dropout_only_in_training(build, batch):
    x, mask = batch
    module = build()
    module.train()
    assert not torch.allclose(module(x, mask), module(x, mask))
    module.eval()
    assert torch.equal(module(x, mask), module(x, mask))


def test_empty_sequence_stays_finite():
    module = MultiHeadAttention(DIM, HEADS).train()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :2] = True
    assert torch.isfinite(module(torch.randn(2, 5, DIM), mask)).all()


@pytest.mark.parametrize("build", [
    lambda: MultiHeadAttention(18, heads=4),
    lambda: MultiHeadAttention(16, heads=0),
    lambda: MultiHeadAttention(16, score="additive"),
    lambda: MultiHeadAttention(16, norm="max"),
    lambda: MultiHeadAttention(16, temperature=0),
    lambda: MultiHeadAttention(16, dropout=1.0),
    lambda: RelativePositionAttention(16, max_distance=-1),
    lambda: HeadPruneAttention(16, stretch=(0.0, 1.1)),
    lambda: HeadPruneAttention(16, gate_temperature=0),
    lambda: CompositionalDeAttention(16, heads=3),
    lambda: CompositionalDeAttention(16, alpha=-1.0),
])
def test_impossible_hyperparameters_fail_at_construction(build):
    with pytest.raises(ValueError):
        build()


# ------------------------------------------------------------------------------------------ self, mha


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("training", [True, False])  # the fused kernel in training, the explicit path otherwise
def test_mha_equals_torch_multihead_attention(padded, training, batch):
    x, mask = batch
    reference = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    ours = MultiHeadAttention(DIM, HEADS).train(training)
    _copy_from_torch(ours, reference)
    expected, _ = reference(x, x, x, key_padding_mask=~mask if padded else None, need_weights=False)
    got = ours(x, mask if padded else None)
    rows = mask if padded else torch.ones_like(mask)
    assert torch.allclose(got[rows], expected[rows], atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_self_and_mha_equal_explicit_softmax_attention(training, temperature, batch):
    x, mask = batch
    single = SelfAttention(DIM, temperature=temperature).train(training)
    expected = _explicit(x, single.in_proj.weight, single.in_proj.bias, 1, mask, temperature=temperature)
    assert isinstance(single.out_proj, nn.Identity)
    assert torch.allclose(single(x, mask)[mask], expected[mask], atol=1e-5)

    multi = MultiHeadAttention(DIM, HEADS, temperature=temperature).train(training)
    heads = _explicit(x, multi.in_proj.weight, multi.in_proj.bias, HEADS, mask, temperature=temperature)
    assert torch.allclose(multi(x, mask)[mask], multi.out_proj(heads)[mask], atol=1e-5)


@pytest.mark.parametrize("norm", ["sigmoid", "sum"])
@pytest.mark.parametrize("score", ["scaled", "dot"])
def test_mha_norm_and_score_are_not_ignored(norm, score, batch):
    """Non-softmax norms cannot run in the fused kernel: the explicit path computes them, in training too."""
    x, mask = batch
    module = MultiHeadAttention(DIM, HEADS, score=score, norm=norm, temperature=2.0).train()
    scale = None if score == "scaled" else 1.0
    heads = _explicit(x, module.in_proj.weight, module.in_proj.bias, HEADS, mask, norm, scale, temperature=2.0)
    assert torch.allclose(module(x, mask)[mask], module.out_proj(heads)[mask], atol=1e-5)


def test_mha_entropy_averages_real_queries(batch):
    x, mask = batch
    module = MultiHeadAttention(DIM, HEADS).eval()
    with capture_weights(module):
        module(x, mask)
        weights = module.weights
    rows = torch.cat([weights[0].reshape(-1, 9), weights[1, :, :5].reshape(-1, 9)])
    expected = -(rows * rows.clamp_min(1e-12).log()).sum(-1).mean()
    assert torch.allclose(module.diagnostics()["entropy"], expected, atol=1e-5)
    assert torch.allclose(attention_entropy(weights), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------ relpos


def test_relpos_with_zero_relative_vectors_is_plain_attention(batch):
    x, mask = batch
    relative = RelativePositionAttention(DIM, HEADS, max_distance=3)
    plain = MultiHeadAttention(DIM, HEADS)
    plain.load_state_dict({k: v for k, v in relative.state_dict().items() if not k.startswith("rel_")})
    with torch.no_grad():
        relative.rel_key.zero_()
        relative.rel_value.zero_()
    for training in (True, False):
        relative.train(training), plain.train(training)
        assert torch.allclose(relative(x, mask)[mask], plain(x, mask)[mask], atol=1e-5)


@pytest.mark.parametrize("max_distance", [0, 3, 16])
def test_relpos_equals_naive_n_by_n_by_d_reference(max_distance, batch):
    x, mask = batch
    module = RelativePositionAttention(DIM, HEADS, max_distance=max_distance).eval()
    n, d = x.shape[1], DIM // HEADS
    q, k, v = module.in_proj(x).split(DIM, -1)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    clipped = (j - i).clamp(-max_distance, max_distance) + max_distance
    a_key, a_value = module.rel_key[clipped], module.rel_value[clipped]  # (N, N, d): the tensor relpos avoids
    outs = []
    for h in range(HEADS):
        qh, kh, vh = (t[..., h * d:(h + 1) * d] for t in (q, k, v))
        scores = torch.einsum("bid,bijd->bij", qh, kh[:, None, :, :] + a_key) / math.sqrt(d)
        weights = scores.masked_fill(~mask[:, None, :], -math.inf).softmax(-1)
        outs.append(torch.einsum("bij,bijd->bid", weights, vh[:, None, :, :] + a_value))
    expected = module.out_proj(torch.cat(outs, -1))
    assert torch.allclose(module(x, mask)[mask], expected[mask], atol=1e-5)
    module.train()
    assert torch.allclose(module(x, mask)[mask], expected[mask], atol=1e-5)


def test_relpos_distance_buckets_clip():
    module = RelativePositionAttention(DIM, HEADS, max_distance=2)
    buckets = module.distance_buckets(6, torch.device("cpu"))
    assert buckets[0].tolist() == [2, 3, 4, 4, 4, 4]
    assert buckets[5].tolist() == [0, 0, 0, 0, 1, 2]


# ------------------------------------------------------------------------------------------ headprune


def test_headprune_test_gates_are_stretched_clipped_sigmoid(batch):
    x, mask = batch
    log_alpha = torch.tensor([-4.0, -2.0, 0.5, 4.0])
    module = HeadPruneAttention(DIM, HEADS).eval()
    with torch.no_grad():
        module.gate.log_alpha.copy_(log_alpha)
    expected = (torch.sigmoid(log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(module.gate(), expected)
    assert expected[0] == 0 and 0 < expected[1] < 1 and expected[3] == 1

    # the closed head contributes nothing: the same as plain mha without that head's output columns
    plain = MultiHeadAttention(DIM, HEADS).eval()
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if not k.startswith("gate.")})
    with torch.no_grad():
        d = DIM // HEADS
        plain.out_proj.weight.mul_(expected.repeat_interleave(d)[None, :])
    assert torch.allclose(module(x, mask)[mask], plain(x, mask)[mask], atol=1e-5)
    assert module.diagnostics()["open_heads"] == 3
    assert diagnostics(module)["open_heads"] == 3


def test_headprune_expected_open_heads_and_l0_penalty(batch):
    x, mask = batch
    module = HeadPruneAttention(DIM, HEADS, l0_weight=0.5).train()
    with torch.no_grad():
        module.gate.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 2.0]))
    temperature, low, high = 0.33, -0.1, 1.1
    expected = torch.sigmoid(module.gate.log_alpha - temperature * math.log(-low / high))
    torch.manual_seed(0)
    open_fraction = (module.gate.sample(40_000) > 0).float().mean(0)
    assert torch.allclose(open_fraction, expected.detach(), atol=0.01)
    assert math.isclose(open_fraction.sum().item(), expected.sum().item(), abs_tol=0.03)
    module(x, mask)
    assert torch.allclose(aux_losses(module)["l0"], 0.5 * expected.sum())
    assert aux_losses(module) == {}  # popped once


def test_headprune_paper_temperature_flag():
    gate = HardConcreteGate(3, temperature=0.667, stretch=(-0.1, 1.1), init_log_alpha=None)
    assert gate.log_alpha.abs().max() <= math.sqrt(3 / 3)
    assert torch.allclose(gate.open_probability(), torch.sigmoid(gate.log_alpha - 0.667 * math.log(0.1 / 1.1)))


# ------------------------------------------------------------------------------------------ coda


def test_coda_is_bounded_by_the_values_and_uses_no_softmax(batch, monkeypatch):
    x, mask = batch
    module = CompositionalDeAttention(DIM, heads=2, alpha=3.0, beta=3.0).eval()

    def no_softmax(*args, **kwargs):
        raise AssertionError("CoDA must not normalise with a softmax")

    monkeypatch.setattr(torch, "softmax", no_softmax)
    monkeypatch.setattr(torch.Tensor, "softmax", no_softmax)
    monkeypatch.setattr(F, "softmax", no_softmax)
    with capture_weights(module):
        out = module(x, mask)
    values = module.in_proj(x)[..., 4 * DIM:] * mask[..., None]
    bound = values.abs().sum(1, keepdim=True)  # Σ_j |v_j| per channel: |out| < bound as |M| < 1
    assert (out.abs() < bound).all()
    _, _, qn, kn, _ = module.in_proj(x).unflatten(-1, (5, 2, DIM // 2)).permute(2, 0, 3, 1, 4)
    qe, ke = (t.unflatten(-1, (2, DIM // 2)).transpose(1, 2) for t in module.in_proj(x)[..., :2 * DIM].split(DIM, -1))
    m = module.composition(qe, ke, qn, kn, mask)
    assert (m.abs() < 1).all() and (m < 0).any() and (m > 0).any()
    assert not torch.allclose(m[0].sum(-1), torch.ones(()))  # rows are no distribution


def test_coda_centring_lifts_the_gate_cap(batch):
    x, mask = batch
    capped = CompositionalDeAttention(DIM, alpha=5.0, centre=False).eval()
    centred = CompositionalDeAttention(DIM, alpha=5.0).eval()
    centred.load_state_dict(capped.state_dict())
    for module, above_half in ((capped, False), (centred, True)):
        with capture_weights(module):
            module(x, mask)
            assert ((module.weights > 0.5).any()) == above_half  # |M| ≤ σ(N) ≤ 0.5 without centring


def test_coda_equals_its_formula(batch):
    x, mask = batch
    module = CompositionalDeAttention(DIM, alpha=0.7, beta=0.3).eval()
    qe, ke, qn, kn, v = module.in_proj(x).split(DIM, -1)
    e = 0.7 * qe @ ke.transpose(1, 2)
    dist = (qn[:, :, None, :] - kn[:, None, :, :]).abs().sum(-1)
    n = -0.3 * dist
    real = mask[:, None, :].float()
    n = n - (n * real).sum(-1, keepdim=True) / real.sum(-1, keepdim=True)
    m = torch.tanh(e) * torch.sigmoid(n) * real
    assert torch.allclose(module(x, mask), m @ v, atol=1e-5)


# ------------------------------------------------------------------------------------------ gate


def test_token_gate_records_kept_fraction_per_token(batch):
    x, mask = batch
    module = TokenGate(DIM).eval()
    with capture_weights(module):
        module(x, mask)
        weights = module.weights
    assert weights.shape == (2, 9) and (weights[1, 5:] == 0).all() and (weights[mask] > 0).all()
    assert "entropy" in module.diagnostics()


def test_token_gate_equals_its_formula(batch):
    x, mask = batch
    module = TokenGate(DIM)
    real = mask[..., None].float()
    context = ((x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)).expand_as(x)
    w = torch.cat([module.from_token.weight, module.from_context.weight], 1)  # W acting on [x; c]
    z = torch.cat([x, context], -1) @ w.T + module.from_token.bias
    g, h = torch.sigmoid(z[..., :DIM]), torch.tanh(z[..., DIM:])
    assert torch.allclose(module(x, mask), g * x + (1 - g) * h, atol=1e-6)


# ------------------------------------------------------------------------------------------ config, CLI


@pytest.mark.parametrize("name", ["self", "mha", "relpos", "headprune", "coda"])
def test_model_config_builds_the_registered_mixer(name, batch):
    x, mask = batch
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert VARIANTS[name].slots == ("mixer",)
    factory = attention_slots(cfg, ("mixer", "pool"), "backbone=test", {"rate": ("mixer", "pool")})["mixer"]
    module = factory(DIM)
    assert isinstance(module, VARIANTS[name].modules["mixer"])
    assert module(x, mask).shape == x.shape


def test_gate_registered_as_mixer():
    assert VARIANTS["gate"].modules["mixer"] is TokenGate


def test_mixer_on_image_task_is_refused(tmp_path):
    result = attnbench("train", "data=digits", "model=mha", "logger=none", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "fills the mixer slot, which backbone=smallcnn lacks" in lines[0] and "fits" in lines[0]
    assert not (tmp_path / "outputs").exists()
