"""The ``align`` variants (soft, hard, global, local): shapes, masks, gradients and the checks of issue 3."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.attention import aux_losses, send_reward
from attnbench.attention.align import (
    GlobalAttention,
    HardAttention,
    LocalAttention,
    MeanAlign,
    SoftAttention,
    doubly_stochastic_penalty,
)
from attnbench.attention.registry import VARIANTS

B, N, DQ, DM = 3, 12, 8, 6
GRID = (3, 4)


def make(name: str, **kwargs) -> torch.nn.Module:
    classes = {"soft": SoftAttention, "hard": HardAttention, "global": GlobalAttention, "local": LocalAttention,
               "mean": MeanAlign}
    return classes[name](DQ, DM, **kwargs)


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, DQ, generator=g)
    memory = torch.randn(B, N, DM, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 9:] = False  # the second sample has three padded positions
    return query, memory, mask


def run_sequence(module: torch.nn.Module, steps: int = 4, grid=GRID, seed: int = 0):
    """start, ``steps`` forward steps with varying queries, finish: the way the caption decoder drives a module."""
    query, memory, mask = inputs(seed)
    module.start(memory, mask, grid)
    outputs, weights = [], []
    for t in range(steps):
        out, w = module(torch.tanh(query * (t + 1)), memory, mask)
        outputs.append(out)
        weights.append(w)
    stacked = torch.stack(weights, 1)
    module.finish(stacked, torch.ones(B, steps, dtype=torch.bool))
    return torch.stack(outputs, 1), stacked


@pytest.mark.parametrize("name", ["soft", "hard", "global", "local", "mean"])
@pytest.mark.parametrize("training", [True, False])
def test_shapes_and_padding(name: str, training: bool) -> None:
    torch.manual_seed(0)
    module = make(name).train(training)
    outputs, weights = run_sequence(module)
    assert outputs.shape == (B, 4, module.out_dim)
    assert weights.shape == (B, 4, N)
    assert torch.all(weights[1, :, 9:] == 0), "padding must get exactly zero weight"
    if name in ("soft", "hard", "global", "mean"):
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, 4))


@pytest.mark.parametrize("name", ["soft", "hard", "global", "local", "mean"])
def test_padded_memory_changes_nothing(name: str) -> None:
    module = make(name).eval()
    query, memory, mask = inputs()
    changed = memory.clone()
    changed[1, 9:] = 100.0
    with torch.no_grad():
        module.start(memory, mask, GRID)
        first = module(query, memory, mask)
        module.start(changed, mask, GRID)
        second = module(query, changed, mask)
    torch.testing.assert_close(first[0], second[0])
    torch.testing.assert_close(first[1], second[1])


@pytest.mark.parametrize("name", ["soft", "hard", "global", "local"])
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"hard": {"soft_mix": 0.0, "gate": True}, "soft": {"doubly_stochastic_weight": 1.0}}.get(name, {})
    module = make(name, **kwargs).train()
    outputs, _ = run_sequence(module)
    loss = outputs.pow(2).mean()
    send_reward(module, torch.tensor([-3.0, -1.0, -2.0]))
    loss = loss + sum(aux_losses(module).values())
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_registered_in_the_align_slot() -> None:
    for name, cls in (("soft", SoftAttention), ("hard", HardAttention), ("global", GlobalAttention),
                      ("local", LocalAttention)):
        assert VARIANTS[name].modules == {"align": cls}
        assert cls.paper


@pytest.mark.parametrize("alignment", ["monotonic", "predictive"])
def test_local_gives_zero_weight_outside_the_window(alignment: str) -> None:
    torch.manual_seed(0)
    grid = (5, 6)
    module = LocalAttention(DQ, DM, half_window=1, alignment=alignment).eval()
    query = torch.randn(2, DQ)
    memory = torch.randn(2, 30, DM)
    module.start(memory, None, grid)
    rows, cols = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    for step in range(8):
        centre = module.centre(query)
        _, weights = module(query, memory)
        near_row = (rows.flatten()[None] - centre[:, :1]).abs() <= 1
        inside = near_row & ((cols.flatten()[None] - centre[:, 1:]).abs() <= 1)
        assert torch.all(weights[~inside] == 0)
        assert torch.all(weights[inside] > 0)
        if alignment == "monotonic":  # p_t = t in raster order: row t // 6, column t % 6
            assert centre[0].tolist() == [step // 6, step % 6]


def test_local_on_a_sequence_uses_a_1d_window() -> None:
    module = LocalAttention(DQ, DM, half_window=2, alignment="monotonic").eval()
    query, memory = torch.randn(1, DQ), torch.randn(1, 10, DM)
    module.start(memory)  # no grid: a sequence of 10 positions
    for _ in range(3):
        _, weights = module(query, memory)
    assert (weights[0] > 0).nonzero().flatten().tolist() == [0, 1, 2, 3, 4]  # p = 2, window [0, 4]


@pytest.mark.parametrize("score", ["general", "dot", "additive"])
def test_local_with_a_wide_window_and_flat_gaussian_is_global(score: str) -> None:
    torch.manual_seed(0)
    local = LocalAttention(DQ, DQ, half_window=50, sigma=1e6, score=score).eval()
    global_ = GlobalAttention(DQ, DQ, score=score).eval()
    global_.score.load_state_dict(local.score.state_dict())
    global_.combine.load_state_dict(local.combine.state_dict())
    query, memory = torch.randn(B, DQ), torch.randn(B, N, DQ)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, -2:] = False
    with torch.no_grad():
        local.start(memory, mask, GRID)
        global_.start(memory, mask, GRID)
        out_l, w_l = local(query, memory, mask)
        out_g, w_g = global_(query, memory, mask)
    torch.testing.assert_close(w_l, w_g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_l, out_g, atol=1e-6, rtol=1e-5)


def test_doubly_stochastic_term_on_a_hand_example() -> None:
    # two steps over three regions: the coverage Σₜ α is (0.5, 1, 0.5), so Σᵢ(1 − cover)² = 0.25 + 0 + 0.25,
    # over two words (the penalty is per word, like the caption loss)
    weights = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]])
    both = torch.ones(1, 2, dtype=torch.bool)
    assert doubly_stochastic_penalty(weights, both).item() == pytest.approx(0.5 / 2)
    # the second step is padding: coverage (0.5, 0.5, 0) -> 0.25 + 0.25 + 1, over one word
    first_only = torch.tensor([[True, False]])
    assert doubly_stochastic_penalty(weights, first_only).item() == pytest.approx(1.5)
    # a padded region is left out of the sum
    assert doubly_stochastic_penalty(weights, first_only, torch.tensor([[True, True, False]])).item() == \
        pytest.approx(0.5)
    # through the module, with its coefficient, during training only
    module = SoftAttention(DQ, DM, doubly_stochastic_weight=2.0).train()
    module.start(torch.randn(1, 3, DM))
    module.finish(weights, both)
    assert aux_losses(module)["doubly_stochastic"].item() == pytest.approx(0.5)
    module.eval()
    module.finish(weights, both)
    assert aux_losses(module) == {}


def test_hard_reinforce_surrogate_on_a_hand_example() -> None:
    """One step over three one-hot regions: the sampled region's log-probability is pushed by
    −λ_r (r − b) / tokens, with b the moving average of the reward."""
    torch.manual_seed(3)
    module = HardAttention(4, 3, soft_mix=0.0, entropy_weight=0.0, signal_scale=0.1, gate=False).train()
    memory = torch.eye(3).unsqueeze(0)  # region i is the one-hot vector e_i, so the context names the sample
    query = torch.randn(1, 4)
    module.start(memory)
    context, weights = module(query, memory)
    weights.retain_grad()
    chosen = int(context.argmax())
    assert context[0].tolist() == torch.eye(3)[chosen].tolist()
    module.finish(weights.unsqueeze(1), torch.ones(1, 1, dtype=torch.bool))
    send_reward(module, torch.tensor([-2.0]))  # log-likelihood −2 against the initial baseline 0
    surrogate = aux_losses(module)["reinforce"]
    alpha = weights[0, chosen].item()
    # signal = 0.1·(−2 − 0) = −0.2; surrogate = −signal·log α_s = 0.2·log α_s over one token
    assert surrogate.item() == pytest.approx(0.2 * math.log(alpha), rel=1e-5)
    surrogate.backward()
    expected = torch.zeros(3)
    expected[chosen] = 0.2 / alpha  # descent lowers α_s: this sample did worse than the baseline
    torch.testing.assert_close(weights.grad[0], expected)
    assert module.baseline.item() == pytest.approx(-0.2)  # b ← 0.9·0 + 0.1·(−2)

    # a reward above the baseline flips the sign: descent now raises the sampled region's weight
    module.start(memory)
    context, weights = module(query, memory)
    weights.retain_grad()
    chosen = int(context.argmax())
    module.finish(weights.unsqueeze(1), torch.ones(1, 1, dtype=torch.bool))
    send_reward(module, torch.tensor([1.8]))
    aux_losses(module)["reinforce"].backward()
    assert weights.grad[0, chosen].item() == pytest.approx(-0.1 * (1.8 + 0.2) / weights[0, chosen].item(), rel=1e-5)


def test_hard_reports_baseline_and_signal_at_evaluation() -> None:
    module = HardAttention(DQ, DM, soft_mix=0.0)
    for reward in (-4.0, -2.0):
        module.train()
        run_sequence(module, steps=2)
        send_reward(module, torch.full((B,), reward))
        aux_losses(module)
    module.eval()
    run_sequence(module, steps=2)
    found = module.diagnostics()
    assert found["reinforce_baseline"].item() == pytest.approx(0.9 * -0.4 + 0.1 * -2.0)
    assert {"reinforce_signal", "reinforce_signal_std", "entropy"} <= set(found)


def test_hard_mixes_in_the_soft_context() -> None:
    """soft_mix=1: every batch uses the expected context, so nothing is sampled and there is no surrogate."""
    module = HardAttention(DQ, DM, soft_mix=1.0, entropy_weight=0.0, gate=False).train()
    outputs, weights = run_sequence(module, steps=1)
    _, memory, _ = inputs()
    torch.testing.assert_close(outputs[:, 0], torch.bmm(weights[:, :1], memory).squeeze(1))
    send_reward(module, torch.zeros(B))
    assert "reinforce" not in aux_losses(module)


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (LocalAttention, {"half_window": 0}, "half_window"),
    (LocalAttention, {"alignment": "sideways"}, "alignment"),
    (HardAttention, {"norm": "sigmoid"}, "sum to one"),
    (HardAttention, {"soft_mix": 1.5}, "soft_mix"),
    (SoftAttention, {"temperature": 0.0}, "temperature"),
    (GlobalAttention, {"score": "dot"}, "equal query and key widths"),
])
def test_impossible_hyperparameters_are_refused(cls, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        cls(DQ, DM, **kwargs)
