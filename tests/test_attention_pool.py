"""The pool slot: every variant's shape, masking, gradients, hand-worked references and build-time errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbench.attention import VARIANTS, aux_losses
from attnbench.attention.pool import (
    ChunkMaxPool,
    DeepSets,
    FeedForwardAttention,
    KMaxPool,
    MultiQueryAttention,
    PyramidPool,
    StochasticPool,
    redundancy_penalty,
)
from attnbench.attention.scores import SCORES

D = 6
POOLS = {name: v.modules["pool"] for name, v in VARIANTS.items() if "pool" in v.modules}
SMALL = {"multiquery": {"r": 3, "d_a": 5}}  # Lin et al.'s r=30, d_a=350 are tested for their shapes below


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return POOLS[name](D, **{**SMALL.get(name, {}), **kwargs})


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of 12 positions, the second with 7 real ones, activations ≥ 0 (ReLU outputs)."""
    torch.manual_seed(1)
    x = torch.randn(3, 12, D).relu()
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    return x, mask


def test_every_pool_of_the_catalogue_is_tested():
    assert set(POOLS) == {"sum", "mean", "max", "kmax", "chunkmax", "stochastic", "deepsets", "ffattn",
                          "multiquery", "pyramid"}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_shapes_on_images_and_sequences(name):
    pool = build(name)
    image = torch.randn(2, 16, D).relu()
    x, mask = padded_batch()
    for training in (True, False):
        pool.train(training)
        assert pool(image, grid=(4, 4)).shape == (2, pool.out_dim)
        assert pool(x, mask).shape == (3, pool.out_dim)
        assert pool(x).shape == (3, pool.out_dim)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_padding_changes_nothing_and_equals_the_unpadded_sequence(name):
    pool = build(name).eval()  # eval: stochastic pooling's test-time form is deterministic
    x, mask = padded_batch()
    out = pool(x, mask)
    changed = x.clone()
    changed[~mask] = 1e3
    torch.testing.assert_close(pool(changed, mask), out)
    torch.testing.assert_close(pool(x[1:2, :7]), out[1:2], atol=1e-5, rtol=1e-5)
    if pool.weights_over == "positions" and name not in ("sum", "mean", "max", "kmax", "chunkmax", "deepsets"):
        assert pool.diagnostics()["entropy"] > 0


def test_weighting_pools_give_padding_exactly_zero_weight():
    x, mask = padded_batch()
    for name in ("ffattn", "multiquery", "stochastic"):
        pool = build(name).eval()
        pool.capture = True
        pool(x, mask)
        weights = pool.weights
        pad = ~mask[1]
        assert (weights[1][..., pad] == 0).all(), name


@pytest.mark.parametrize("name", sorted(n for n in POOLS if list(POOLS[n](D).parameters())))
def test_gradients_reach_every_parameter(name):
    pool = build(name).train()
    x, mask = padded_batch()
    x.requires_grad_(True)
    out = pool(x, mask)
    loss = out.square().sum() + sum(aux_losses(pool).values(), torch.tensor(0.0))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in pool.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_kmax_keeps_the_k_largest_in_their_original_order():
    x = torch.tensor([[3.0, 9.0, 1.0, 7.0, 8.0, 2.0], [5.0, 4.0, 6.0, 0.0, 1.0, 2.0]]).T.unsqueeze(0)  # (1, 6, 2)
    out = KMaxPool(2, k=3)(x)
    assert out.tolist() == [[9.0, 7.0, 8.0, 5.0, 4.0, 6.0]]  # not sorted by value: 9, 7, 8
    mask = torch.tensor([[True, True, True, True, False, False]])
    assert KMaxPool(2, k=3)(x, mask).tolist() == [[3.0, 9.0, 7.0, 5.0, 4.0, 6.0]]
    short = torch.tensor([[True, True, False, False, False, False]])  # fewer real positions than k: zeros
    assert KMaxPool(2, k=3)(x, short).tolist() == [[3.0, 9.0, 0.0, 5.0, 4.0, 0.0]]


def test_chunkmax_takes_the_max_of_consecutive_chunks():
    x = torch.tensor([1.0, 5.0, 2.0, 0.0, 7.0, 3.0, 4.0, 6.0]).view(1, 8, 1)
    assert ChunkMaxPool(1, k=4)(x).tolist() == [[5.0, 2.0, 7.0, 6.0]]
    mask = torch.tensor([[True] * 4 + [False] * 4])  # chunks of the 4 real positions, not of all 8
    assert ChunkMaxPool(1, k=2)(x, mask).tolist() == [[5.0, 2.0]]


def test_stochastic_at_test_time_is_the_probability_weighted_average():
    x, mask = padded_batch()
    pool = StochasticPool(D).eval()
    a = x[1, :7]
    expected = (a * a).sum(0) / a.sum(0)  # Σ pᵢaᵢ with pᵢ = aᵢ / Σa
    torch.testing.assert_close(pool(x, mask)[1], expected)
    grid = StochasticPool(D, bins=2).eval()(x[:1, :4].repeat(1, 4, 1), grid=(4, 4))
    assert grid.shape == (1, 4 * D)


def test_stochastic_training_draws_positions_in_proportion_to_activation():
    torch.manual_seed(0)
    a = torch.tensor([1.0, 3.0, 0.0, 0.0, 50.0])
    x = a.view(1, 5, 1).repeat(4000, 1, 1)
    mask = torch.tensor([True, True, True, True, False]).repeat(4000, 1)  # 50 is padding: never drawn
    drawn = StochasticPool(1).train()(x, mask).squeeze(1)
    assert set(drawn.unique().tolist()) == {1.0, 3.0}
    assert abs((drawn == 3.0).float().mean().item() - 0.75) < 0.03
    zeros = StochasticPool(1).train()(torch.zeros(2, 5, 1))
    assert (zeros == 0).all()


def test_deepsets_is_rho_of_the_summed_phi_and_order_free():
    pool = build("deepsets").eval()
    x, mask = padded_batch()
    expected = pool.rho(pool.phi(x[1, :7]).sum(0))
    torch.testing.assert_close(pool(x, mask)[1], expected)
    perm = torch.randperm(12)
    torch.testing.assert_close(pool(x[:, perm]), pool(x), atol=1e-5, rtol=1e-5)
    assert DeepSets(D, hidden=10, pool="max").out_dim == 10


def test_ffattn_default_is_raffel_ellis():
    pool = build("ffattn").eval()
    x, mask = padded_batch()
    score = pool.scores.score
    assert score.kind == "additive" and score.v is None and score.key_proj.out_features == 1
    w = score.key_proj.weight.squeeze(0)
    b = score.key_proj.bias + score.query_proj(pool.scores.query).squeeze()
    e = torch.tanh(x[1, :7] @ w + b)  # eₜ = tanh(w·hₜ + b)
    alpha = e.softmax(0)
    torch.testing.assert_close(pool(x, mask)[1], (alpha.unsqueeze(1) * x[1, :7]).sum(0))


@pytest.mark.parametrize("name", ["ffattn", "multiquery", "pyramid"])
@pytest.mark.parametrize("score", SCORES)
def test_weighting_pools_take_every_shared_score(name, score):
    pool = build(name, score=score, norm="sigmoid", temperature=0.5)
    x, mask = padded_batch()
    assert torch.isfinite(pool(x, mask)).all()


def test_multiquery_defaults_follow_lin_et_al():
    pool = MultiQueryAttention(D)
    assert pool.keys.weight.shape == (350, D) and pool.keys.bias is None
    assert pool.scores.query.shape == (30, 350) and pool.out_dim == 30 * D


def test_multiquery_penalty_is_zero_for_orthonormal_rows_and_reaches_the_loss():
    one_hot = torch.eye(5)[:3].unsqueeze(0)  # three distributions on distinct positions: orthonormal rows
    assert redundancy_penalty(one_hot).item() == 0
    same = torch.full((1, 3, 4), 0.25)  # three identical uniform rows over 4 positions
    expected = 3 * (0.25 - 1) ** 2 + 6 * 0.25 ** 2
    assert redundancy_penalty(same).item() == pytest.approx(expected)

    pool = build("multiquery", penalty_weight=0.5).train()
    pool.capture = True
    x, mask = padded_batch()
    pool(x, mask)
    loss = aux_losses(pool)["multiquery"]
    torch.testing.assert_close(loss, 0.5 * redundancy_penalty(pool.weights))
    pool.eval()
    pool(x, mask)
    assert aux_losses(pool) == {}  # the penalty trains; evaluation does not pay for it


def test_pyramid_weighs_normalised_region_maxima():
    x = torch.randn(2, 16, D).relu()
    pool = build("pyramid", levels=[1, 2]).eval()
    assert pool.scale.item() == pytest.approx(D ** 0.5)
    out = pool(x, grid=(4, 4)) / pool.scale
    torch.testing.assert_close(out[:, :D], F.normalize(x.amax(1), dim=-1))  # one region: weight 1
    quadrants = x.view(2, 2, 2, 2, 2, D).amax((2, 4)).reshape(2, 4, D)  # 2×2 bins of the 4×4 grid
    regions = F.normalize(quadrants, dim=-1)
    w = (regions @ pool.scores.query.squeeze(0)).softmax(-1)
    torch.testing.assert_close(out[:, D:], (w.unsqueeze(-1) * regions).sum(1))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("kmax", {"k": 17}, "k=17 is larger than the 16 positions"),
    ("chunkmax", {"k": 17}, "17 chunks do not fit a sequence of 16 positions"),
    ("pyramid", {"levels": [1, 8]}, "8 bins per side do not fit the 4×4 feature grid"),
    ("stochastic", {"bins": 5}, "5 bins per side do not fit the 4×4 feature grid"),
])
def test_hyperparameters_too_large_for_the_input_fail_on_the_first_forward(name, kwargs, message):
    pool = build(name, **kwargs).eval()
    with pytest.raises(ValueError, match=message):
        pool(torch.randn(1, 16, D), grid=(4, 4))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("kmax", {"k": 0}, "k must be at least 1"),
    ("chunkmax", {"k": -1}, "k must be at least 1"),
    ("stochastic", {"bins": 0}, "bins must be at least 1"),
    ("pyramid", {"levels": []}, "at least one level"),
    ("pyramid", {"levels": [1, 0]}, "every pyramid level must be at least 1"),
    ("deepsets", {"pool": "median"}, "deepsets pool must be one of"),
    ("multiquery", {"r": 0}, "r must be at least 1"),
    ("multiquery", {"penalty_weight": -1.0}, "penalty_weight must be non-negative"),
    ("ffattn", {"score": "bilinear"}, "score must be one of"),
    ("ffattn", {"temperature": 0.0}, "temperature must be positive"),
    ("pyramid", {"norm": "softmin"}, "norm must be one of"),
])
def test_impossible_hyperparameters_fail_at_construction(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(name, **kwargs)


def test_ffattn_records_its_weights_and_multiquery_keeps_every_row():
    x, mask = padded_batch()
    for pool, shape in ((build("ffattn"), (3, 12)), (build("multiquery"), (3, 3, 12))):
        pool.eval()
        pool.capture = True
        pool(x, mask)
        assert pool.weights.shape == shape
        torch.testing.assert_close(pool.weights.sum(-1), torch.ones(shape[:-1]))
    assert isinstance(build("pyramid"), PyramidPool) and FeedForwardAttention.weights_over == "positions"
