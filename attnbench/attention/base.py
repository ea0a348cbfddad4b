"""The slot protocol every attention variant speaks.

A variant is an ``nn.Module`` that fills one kind of slot (``feature``, ``mixer``, ``pool``, ``align``,
``pair``). Beyond its forward pass it may give the trainer three things, and the trainer asks every module
of a model the same way, so no variant is special-cased:

* auxiliary losses (already multiplied by their coefficients), e.g. the multi-query penalty;
* diagnostics, e.g. attention entropy or the number of open heads;
* its attention weights, kept only while capture is on (for pictures and evidence scores).

One hook runs the other way, from the task to the variants: ``send_reward(model, reward)`` hands every module
a per-sample reward of the last forward pass (the caption task sends each caption's log-likelihood). Variants
that learn from a reward (``hard`` attention's REINFORCE) override ``reinforce`` and turn it into an auxiliary
loss; every other variant ignores it, and the engine never sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Base class of every variant. Subclasses set ``slot`` and ``paper`` and call ``record``/``add_loss``."""

    slot: str = ""
    paper: str = ""
    weights_over = "positions"  # what the recorded weights are spread over: "positions", "channels", "regions"

    def __init__(self) -> None:
        super().__init__()
        self.capture = False  # set by ``capture_weights``; off in training so nothing is kept per step
        self.weights: Tensor | None = None
        self._losses: dict[str, Tensor] = {}
        self._diagnostics: dict[str, Tensor] = {}

    def record(self, weights: Tensor, mask: Tensor | None = None) -> None:
        """Keep what evaluation reports about a weight distribution over the last dimension.

        Entropy is only computed outside training, so the training step pays nothing for it.
        """
        if self.capture:
            self.weights = weights.detach()
        if not self.training:
            self._diagnostics["entropy"] = attention_entropy(weights.detach(), mask)

    def choices(self, *inputs: Any, **options: Any) -> dict[str, int]:
        """What this module's weights choose among in a forward call with these arguments, and how many:
        ``{"positions": 49}``. A weighting over fewer than two things weighs nothing, so the task refuses it
        before training. The default reads the slot's interface; a variant whose weights run over something
        else (channels and positions, pyramid regions) says so by overriding it."""
        x = inputs[0]
        if self.slot == "feature":  # (B, C, H, W)
            if self.weights_over == "channels":
                return {"channels": x.shape[1]}
            return {"positions": x.shape[2] * x.shape[3]}
        if self.slot == "align":  # query (B, Dq), memory (B, N, Dm)
            return {"regions": inputs[1].shape[1]}
        return {"positions": x.shape[-2]}  # mixer, pool, model: (B, N, D); pair: (..., N, D), each map

    def reduction(self, choices: dict[str, int]) -> str | None:
        """When ``choices`` (from ``choices``) make this variant compute what a simpler one does: a phrase
        naming that one, e.g. "equals global: ..."; None otherwise. The run goes on, with a warning."""
        return None

    def add_loss(self, name: str, value: Tensor) -> None:
        """Register an auxiliary loss of the current forward pass (coefficient already applied)."""
        self._losses[name] = value

    def reinforce(self, reward: Tensor) -> None:
        """Receive a reward (B,) for the samples of the last forward pass; higher is better, no gradient.

        The default ignores it; a variant that samples overrides this and calls ``add_loss`` with its
        surrogate loss."""

    def add_diagnostic(self, name: str, value: Tensor) -> None:
        self._diagnostics[name] = value.detach()

    def pop_losses(self) -> dict[str, Tensor]:
        losses, self._losses = self._losses, {}
        return losses

    def diagnostics(self) -> dict[str, Tensor]:
        return dict(self._diagnostics)


def attention_entropy(weights: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean entropy (nats) of distributions over the last dimension; masked positions hold zero weight.

    Weights that do not sum to one (sigmoid gates) are renormalised first, so the figure always reads as
    "how spread out is the attention". Rows with no weight at all (the rows of padded queries, which token
    mixers zero) are no distribution and are left out of the mean.
    """
    w = weights.float().clamp_min(0)
    mass = w.sum(-1, keepdim=True)
    w = w / mass.clamp_min(1e-12)
    entropy = -(w * w.clamp_min(1e-12).log()).sum(-1)
    rows = (mass.squeeze(-1) > 0).float()
    return (entropy * rows).sum() / rows.sum().clamp_min(1)


def attention_modules(model: nn.Module) -> Iterator[tuple[str, Attention]]:
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            yield name, module


def aux_losses(model: nn.Module) -> dict[str, Tensor]:
    """Auxiliary losses of the last forward pass, summed per kind over all modules, then cleared."""
    total: dict[str, Tensor] = {}
    for _, module in attention_modules(model):
        for name, value in module.pop_losses().items():
            total[name] = total[name] + value if name in total else value
    return total


def send_reward(model: nn.Module, reward: Tensor) -> None:
    """Hand the per-sample reward of the last forward pass to every attention module (see ``reinforce``).
    Call it between the forward pass and ``aux_losses``, so the surrogate losses it creates are collected."""
    reward = reward.detach()
    for _, module in attention_modules(model):
        module.reinforce(reward)


def diagnostics(model: nn.Module) -> dict[str, Tensor]:
    """Diagnostics of the last forward pass, averaged per kind over all modules that report them."""
    sums: dict[str, list[Tensor]] = {}
    for _, module in attention_modules(model):
        for name, value in module.diagnostics().items():
            sums.setdefault(name, []).append(value.float())
    return {name: torch.stack(values).mean() for name, values in sums.items()}


def attention_parameters(model: nn.Module) -> int:
    """Parameters that belong to attention variants (outermost modules only, so nothing counts twice)."""
    seen: set[int] = set()
    count = 0
    for _, module in attention_modules(model):
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                count += p.numel()
    return count


def survey(model: nn.Module, forward: Callable[[], Any], kinds: tuple[type, ...]) -> list[dict[str, Any]]:
    """Run ``forward`` (one pass of ``model``) with a hook on every attention module of the classes
    ``kinds`` (outermost ones: a variant's own parts are not listed apart) and say, per module in model
    order, what its first call weighed over, whether that reduces it to a simpler variant, and its
    parameter count. A module the pass never called has ``over`` empty."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():  # a plug-in may be a plain nn.Module: found, not probed
        if isinstance(module, kinds) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    records = {name: {"module": name, "slot": getattr(module, "slot", "plug-in"), "over": {}, "reduces_to": None,
                      "params": sum(p.numel() for p in module.parameters())} for name, module in found}

    def hook(name: str) -> Callable:
        def record(module: Attention, args: tuple, kwargs: dict) -> None:
            entry = records[name]
            if not entry["over"]:  # the first call: a decoder calls its align module once per word
                entry["over"] = {k: int(v) for k, v in module.choices(*args, **kwargs).items()}
                entry["reduces_to"] = module.reduction(entry["over"])
        return record

    handles = [module.register_forward_pre_hook(hook(name), with_kwargs=True) for name, module in found
               if isinstance(module, Attention)]  # only Attention says what it weighs over
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return list(records.values())


@contextmanager
def capture_weights(model: nn.Module) -> Iterator[dict[str, Attention]]:
    """Within the block every attention module keeps its last weights in ``module.weights``."""
    modules = dict(attention_modules(model))
    for module in modules.values():
        module.capture = True
    try:
        yield modules
    finally:
        for module in modules.values():
            module.capture = False
            module.weights = None
