"""scores.py: every similarity against its formula, every normalisation, masking and temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnbench.attention.scores import NORMS, SCORES, Score, check_norm, normalize

torch.manual_seed(0)
B, NQ, NK, D = 2, 3, 5, 4


@pytest.fixture
def qk() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, NQ, D, generator=g), torch.randn(B, NK, D, generator=g)


def test_dot_scaled_cosine_general_match_their_formulas(qk):
    q, k = qk
    dot = torch.einsum("bqd,bkd->bqk", q, k)
    torch.testing.assert_close(Score("dot", D, D)(q, k), dot)
    torch.testing.assert_close(Score("scaled", D, D)(q, k), dot / math.sqrt(D))
    cosine = Score("cosine", D, D, cosine_scale=3.0)
    expected = F.cosine_similarity(q.unsqueeze(2), k.unsqueeze(1), dim=-1) * 3.0
    torch.testing.assert_close(cosine(q, k), expected)
    general = Score("general", D, 6)
    k6 = torch.randn(B, NK, 6)
    torch.testing.assert_close(general(q, k6), torch.einsum("bqd,de,bke->bqk", q, general.weight.weight, k6))


def test_additive_is_bahdanau_and_fixed_v_with_one_unit_is_raffel_ellis(qk):
    q, k = qk
    additive = Score("additive", D, D, hidden=7)
    w1, w2, b, v = additive.query_proj.weight, additive.key_proj.weight, additive.key_proj.bias, additive.v.weight
    hidden = torch.tanh((q @ w1.T).unsqueeze(2) + (k @ w2.T + b).unsqueeze(1))
    torch.testing.assert_close(additive(q, k), (hidden @ v.T).squeeze(-1))

    raffel = Score("additive", D, D, hidden=1, learn_v=False)
    assert not any("v" == name.split(".")[0] for name, _ in raffel.named_parameters())
    bias = raffel.key_proj.bias + q @ raffel.query_proj.weight.T  # the query's term is a bias per query
    expected = torch.tanh((k @ raffel.key_proj.weight.T).squeeze(-1).unsqueeze(1) + bias)
    torch.testing.assert_close(raffel(q, k), expected)
    assert raffel(q, k).abs().max() <= 1


@pytest.mark.parametrize("kind", SCORES)
def test_every_score_has_its_shape_and_gradients(kind, qk):
    q, k = qk
    score = Score(kind, D, D)
    q.requires_grad_(True)
    out = score(q, k)
    assert out.shape == (B, NQ, NK)
    out.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    for name, p in score.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_impossible_scores_are_refused():
    with pytest.raises(ValueError, match="score must be one of"):
        Score("dots", D, D)
    with pytest.raises(ValueError, match="equal query and key widths"):
        Score("dot", D, D + 1)
    with pytest.raises(ValueError, match="at least 1"):
        Score("additive", D, D, hidden=-2)
    with pytest.raises(ValueError, match="norm must be one of"):
        check_norm("softmin", 1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        check_norm("softmax", 0.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        normalize(torch.zeros(2, 3), norm="max")


def _padded_scores() -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.randn(3, 6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    return scores, mask


@pytest.mark.parametrize("norm", NORMS)
def test_padding_gets_zero_weight_and_changing_it_changes_nothing(norm):
    scores, mask = _padded_scores()
    weights = normalize(scores, mask, norm)
    assert (weights[~mask] == 0).all()
    assert torch.isfinite(weights).all()  # also the row that is all padding
    changed = scores.masked_fill(~mask, 1e4)
    torch.testing.assert_close(normalize(changed, mask, norm), weights)


def test_each_normalisation_matches_its_formula():
    scores, mask = _padded_scores()
    tau = 0.5
    softmax = normalize(scores, mask, "softmax", tau)
    torch.testing.assert_close(softmax[1, :4], (scores[1, :4] / tau).softmax(-1))
    torch.testing.assert_close(softmax[:2].sum(-1), torch.ones(2))
    assert (softmax[2] == 0).all()
    torch.testing.assert_close(normalize(scores, mask, "sigmoid", tau), torch.sigmoid(scores / tau) * mask)
    total = normalize(scores, mask, "sum", tau)
    relu = F.relu(scores[1, :4])
    torch.testing.assert_close(total[1, :4], relu / relu.sum())


def test_lower_temperature_sharpens_softmax():
    scores = torch.randn(4, 10)

    def entropy(w: torch.Tensor) -> torch.Tensor:
        return -(w * w.log()).sum(-1)

    hot, cold = normalize(scores, temperature=5.0), normalize(scores, temperature=0.2)
    assert (entropy(cold) < entropy(hot)).all()
    torch.testing.assert_close(normalize(scores, temperature=2.0), (scores / 2).softmax(-1))


def test_mask_broadcasts_over_query_rows():
    scores = torch.randn(2, 3, 5)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    weights = normalize(scores, mask.unsqueeze(1))
    assert (weights[1, :, 2:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
