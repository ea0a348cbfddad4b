"""The feature slot: shapes, gradients, parameter counts worked out by hand, DANet and the gate's formulas."""

from __future__ import annotations

import pytest
import torch

from attnbench.attention import VARIANTS
from attnbench.attention.feature import CBAM, DualAttention, Gate, SqueezeExcite

C = 32
FEATURES = {name: v.modules["feature"] for name, v in VARIANTS.items() if "feature" in v.modules}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def feature_map() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, C, 5, 6)


def test_every_feature_variant_of_the_catalogue_is_tested():
    assert set(FEATURES) == {"se", "cbam", "dual", "gate"}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_shape_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    module = FEATURES[name](C).train()
    if isinstance(module, DualAttention):  # γ = β = 0 at the start would stop every gradient behind them
        torch.nn.init.constant_(module.gamma, 0.5)
        torch.nn.init.constant_(module.beta, 0.5)
    x = feature_map().requires_grad_(True)
    out = module(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    module.eval()
    module(x)
    assert module.diagnostics()["entropy"] > 0


@pytest.mark.parametrize("r", [4, 16])
def test_parameter_counts_equal_the_hand_derived_formulas(r):
    assert count(SqueezeExcite(C, reduction=r)) == 2 * C * C // r + C // r + C
    assert count(SqueezeExcite(C, reduction=r, bias=False)) == 2 * C * C // r
    spatial = 2 * 7 * 7 + 2  # the 7×7 conv over [max, mean] without bias, then BatchNorm's scale and shift
    assert count(CBAM(C, reduction=r)) == 2 * C * C // r + C // r + C + spatial
    assert count(CBAM(C, reduction=r, mlp_bias=False, spatial_norm=False)) == 2 * C * C // r + 2 * 7 * 7
    hidden = C // r
    assert count(DualAttention(C, reduction=r)) == 2 * (C * hidden + hidden) + (C * C + C) + 2
    assert count(Gate(C)) == 4 * C * C + 2 * C
    assert count(Gate(C, bias=False)) == 4 * C * C


@pytest.mark.parametrize("max_minus", [True, False])
def test_dual_is_the_identity_at_initialisation(max_minus):
    module = DualAttention(C, max_minus=max_minus)
    x = feature_map()
    assert module.gamma.item() == 0 and module.beta.item() == 0
    for training in (True, False):
        module.train(training)
        torch.testing.assert_close(module(x), x)


def test_dual_follows_the_danet_formulas():
    torch.manual_seed(0)
    module = DualAttention(C).eval()
    torch.nn.init.constant_(module.gamma, 0.7)
    torch.nn.init.constant_(module.beta, -0.3)
    x = feature_map()
    b, n = x.shape[0], x.shape[2] * x.shape[3]
    flat = x.flatten(2)  # (B, C, N)
    pos = module.position
    q = (pos.query.weight.flatten(1) @ flat + pos.query.bias.view(1, -1, 1)).transpose(1, 2)
    k = (pos.key.weight.flatten(1) @ flat + pos.key.bias.view(1, -1, 1)).transpose(1, 2)
    v = pos.value.weight.flatten(1) @ flat + pos.value.bias.view(1, -1, 1)  # (B, C, N)
    attention = (q @ k.transpose(1, 2)).softmax(-1)  # (B, N, N), no 1/√d
    position = v @ attention.transpose(1, 2)
    energy = flat @ flat.transpose(1, 2)
    channel = (energy.amax(-1, keepdim=True) - energy).softmax(-1) @ flat  # official: max(energy) − energy
    expected = x + (0.7 * position + (-0.3) * channel).view_as(x)
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    assert module.diagnostics()["entropy"] > 0 and attention.shape == (b, n, n)

    module.train()  # training takes the fused scaled_dot_product_attention path: the same numbers
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)

    paper = DualAttention(C, max_minus=False)
    paper.load_state_dict(module.state_dict())
    paper_channel = energy.softmax(-1) @ flat
    torch.testing.assert_close(paper.eval()(x), x + (0.7 * position - 0.3 * paper_channel).view_as(x),
                               atol=1e-5, rtol=1e-5)


def test_gate_mixes_the_input_and_a_context_candidate():
    torch.manual_seed(0)
    module = Gate(C).eval()
    x = feature_map()
    w_x, b, w_c = (module.from_input.weight.flatten(1), module.from_input.bias,
                   module.from_context.weight.flatten(1))
    context = x.mean((2, 3))  # (B, C): the globally pooled feature
    z = torch.einsum("oc,bchw->bohw", w_x, x) + (context @ w_c.T + b).view(2, -1, 1, 1)  # W[x; c] + b
    g, candidate = torch.sigmoid(z[:, :C]), torch.tanh(z[:, C:])
    torch.testing.assert_close(module(x), g * x + (1 - g) * candidate, atol=1e-5, rtol=1e-5)
    assert module.from_input.bias.abs().sum() == 0  # g starts near 0.5

    elsewhere = x.clone()
    elsewhere[:, :, 0, 0] += 5.0  # another position changes the context, hence the output everywhere
    assert not torch.allclose(module(elsewhere)[:, :, 4, 5], module(x)[:, :, 4, 5])


@pytest.mark.parametrize("cls", [SqueezeExcite, CBAM, DualAttention])
def test_reduction_below_one_is_refused(cls):
    with pytest.raises(ValueError, match="reduction must be at least 1"):
        cls(C, reduction=0)


def test_cbam_spatial_kernel_must_be_odd():
    with pytest.raises(ValueError, match="positive odd number"):
        CBAM(C, spatial_kernel=4)
