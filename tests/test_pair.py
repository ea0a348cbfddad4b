"""The pair-slot variants: cross (CAN) and coattn (COSNet) against their formulas on small hand-built inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.attention import VARIANTS, capture_weights
from attnbench.attention.pair import CoAttention, CrossAttention


def pair_inputs(batch: int = 6, positions: int = 9, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, positions, dim, generator=g), torch.randn(batch, positions, dim, generator=g)


@pytest.mark.parametrize("cls", [CrossAttention, CoAttention])
def test_shapes_and_registry(cls: type) -> None:
    a, b = pair_inputs()
    module = cls(8, 9)
    out_a, out_b = module(a, b, grid=(3, 3))
    assert out_a.shape == a.shape and out_b.shape == b.shape
    assert module.slot == "pair" and module.paper
    assert any(cls in v.modules.values() for v in VARIANTS.values())


@pytest.mark.parametrize("cls", [CrossAttention, CoAttention])
def test_gradients_reach_every_parameter(cls: type) -> None:
    a, b = pair_inputs()
    a.requires_grad_(True)
    module = cls(8, 9).train()
    out_a, out_b = module(a, b, grid=(3, 3))
    ((out_a * torch.randn_like(out_a)).sum() + (out_b * torch.randn_like(out_b)).sum()).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert a.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [CrossAttention, CoAttention])
def test_recorded_weights_and_entropy(cls: type) -> None:
    a, b = pair_inputs()
    module = cls(8, 9).eval()
    with capture_weights(module):
        module(a, b, grid=(3, 3))
        assert module.weights.shape == (6, 9) and module.weights_a.shape == (6, 9)
        assert torch.allclose(module.weights.sum(-1), torch.ones(6), atol=1e-5)
        assert torch.allclose(module.weights_a.sum(-1), torch.ones(6), atol=1e-5)
    assert 0 < float(module.diagnostics()["entropy"]) <= torch.log(torch.tensor(9.0)) + 1e-5


@pytest.mark.parametrize("cls", [CrossAttention, CoAttention])
def test_broadcast_pairs_equal_the_expanded_pairs(cls: type) -> None:
    """Class maps (E, 1, W, P, D) against query maps (E, Q, 1, P, D): every pair, as if each were written out."""
    g = torch.Generator().manual_seed(1)
    classes, queries = torch.randn(2, 1, 3, 9, 8, generator=g), torch.randn(2, 4, 1, 9, 8, generator=g)
    module = cls(8, 9).train()
    out_a, out_b = module(classes, queries, grid=(3, 3))
    assert out_a.shape == out_b.shape == (2, 4, 3, 9, 8)
    expanded_a, expanded_b = module(classes.expand(2, 4, 3, 9, 8).reshape(-1, 9, 8),
                                    queries.expand(2, 4, 3, 9, 8).reshape(-1, 9, 8), grid=(3, 3))
    assert torch.allclose(out_a.reshape(-1, 9, 8), expanded_a, atol=1e-5)
    assert torch.allclose(out_b.reshape(-1, 9, 8), expanded_b, atol=1e-5)


def test_cross_reproduces_softmax_plus_one_on_a_hand_built_correlation() -> None:
    """Orthonormal features make R a chosen matrix; a meta-learner whose last layer is a bias alone gives a
    chosen kernel w. Then A_a = softmax(meanⱼ Rᵢⱼ wⱼ / τ) + 1 and A_b the same with Rᵀ (CAN, eq. 4-5)."""
    positions, tau = 4, 0.025
    a = torch.eye(positions).unsqueeze(0) * 3.0  # 4 positions, 4 channels, not unit length: CAM normalises
    correlation = torch.tensor([[0.9, 0.1, 0.0, 0.2],
                                [0.0, 0.5, 0.3, 0.1],
                                [0.4, 0.0, 0.8, 0.0],
                                [0.1, 0.2, 0.0, 0.6]])
    b = F.normalize(correlation.T, dim=-1).unsqueeze(0) * 2.0  # b_j ∝ column j of R
    module = CrossAttention(positions, positions, reduction=2, temperature=tau).eval()
    kernel = torch.tensor([0.5, -1.0, 2.0, 1.5])
    with torch.no_grad():
        module.meta[-1].weight.zero_()
        module.meta[-1].bias.copy_(kernel)
    out_a, out_b = module(a, b)

    r = F.normalize(a[0], dim=-1) @ F.normalize(b[0], dim=-1).T  # the correlation CAM sees
    expected_a = torch.softmax((r * kernel).mean(1) / tau, 0) + 1
    expected_b = torch.softmax((r.T * kernel).mean(1) / tau, 0) + 1
    assert torch.allclose(out_a[0], a[0] * expected_a.unsqueeze(-1), atol=1e-5)
    assert torch.allclose(out_b[0], b[0] * expected_b.unsqueeze(-1), atol=1e-5)
    assert ((expected_a >= 1) & (expected_a <= 2)).all()


def test_cross_meta_learner_reads_the_mean_correlation_profile() -> None:
    """Without hand-set weights: the kernel for a's attention comes from the column means of R."""
    a, b = pair_inputs(batch=3, positions=6, dim=5)
    module = CrossAttention(5, 6, reduction=3).eval()
    r = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
    kernel = module.meta(r.mean(1).unsqueeze(-1)).squeeze(-1)  # (B, M)
    expected = torch.softmax((r * kernel.unsqueeze(1)).mean(2) / 0.025, -1) + 1
    out_a, _ = module(a, b)
    assert torch.allclose(out_a, a * expected.unsqueeze(-1), atol=1e-5)


def test_cross_meta_learner_is_sized_from_the_map() -> None:
    module = CrossAttention(16, 25)  # a 5×5 map, not CAN's hard-coded 6×6
    assert module.meta[0].in_channels == 25 and module.meta[0].out_channels == 25 // 6
    with pytest.raises(ValueError, match="built for maps of 25 positions"):
        module(*pair_inputs(positions=36, dim=16))


def test_coattn_affinity_and_normalisation_on_a_hand_example() -> None:
    """W = I, gate weight 0 (gate = 0.5), a 1×1 fusion that keeps the attended half: the outputs are
    0.5·Z where Z_b = V_a·softmax_over_a(S), Z_a = V_b·softmax_over_b(S), S = V_aᵀV_b (COSNet eq. 2-4)."""
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])  # 3 positions, 2 channels
    b = torch.tensor([[[1.0, 1.0], [3.0, 0.0], [0.0, 0.5]]])
    module = CoAttention(2, 3, fuse_kernel=1).eval()
    with torch.no_grad():
        module.affinity.weight.copy_(torch.eye(2))
        module.gate.weight.zero_()
        for conv in (module.fuse_a, module.fuse_b):
            conv.weight.zero_()
            conv.weight[:, :2, 0, 0] = torch.eye(2)  # output = the attended half, the original half dropped
    s = [[1.0, 3.0, 0.0], [2.0, 0.0, 1.0], [2.0, 3.0, 0.5]]  # S[i][j] = a_i · b_j, by hand
    over_a = torch.tensor(s).softmax(0)  # each column normalised over a's three positions
    over_b = torch.tensor(s).softmax(1)  # each row normalised over b's three positions
    z_b = over_a.T @ a[0]  # (3, 2)
    z_a = over_b @ b[0]  # (3, 2)
    bn = 1 / (1 + 1e-5) ** 0.5  # BatchNorm at its initial running statistics
    out_a, out_b = module(a, b)
    assert torch.allclose(out_a[0], 0.5 * z_a * bn, atol=1e-5)
    assert torch.allclose(out_b[0], 0.5 * z_b * bn, atol=1e-5)
    row = over_b[0]  # a's first position spreads its attention over b's three positions
    assert torch.allclose(out_a[0, 0], 0.5 * bn * (row[0] * b[0, 0] + row[1] * b[0, 1] + row[2] * b[0, 2]), atol=1e-5)


def test_impossible_hyperparameters_are_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        CrossAttention(8, 9, temperature=0.0)
    with pytest.raises(ValueError, match="fuse_kernel"):
        CoAttention(8, 9, fuse_kernel=2)
    with pytest.raises(ValueError, match="needs the grid"):
        CoAttention(8, 9)(*pair_inputs())
    with pytest.raises(ValueError, match="do not broadcast"):
        CrossAttention(8, 9)(torch.randn(2, 9, 8), torch.randn(3, 9, 8))
