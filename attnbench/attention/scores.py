"""Similarity scores and their normalisation, shared by every variant that computes weights.

Masks follow one convention everywhere: a bool tensor that is True where a position holds a real element
and False on padding. Padding is removed *before* normalising, so it receives exactly zero weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORES = ("dot", "scaled", "cosine", "general", "additive")
NORMS = ("softmax", "sigmoid", "sum")


class Score(nn.Module):
    """s(q, k) for every query against every key: (B, Nq, Dq) x (B, Nk, Dk) -> (B, Nq, Nk).

    ``dot`` qᵀk · ``scaled`` qᵀk/√d · ``cosine`` cos(q, k)·scale (learned, starts at ``cosine_scale``) ·
    ``general`` qᵀWk (Luong) · ``additive`` vᵀtanh(W₁q + W₂k + b) (Bahdanau), ``hidden`` wide (default: the
    key width). ``learn_v=False`` fixes v to ones instead of learning it: with ``hidden=1`` and a learned
    query, W₁q folds into the bias and the score is exactly Raffel & Ellis's e = tanh(wᵀk + b).
    """

    def __init__(self, kind: str, query_dim: int, key_dim: int, hidden: int | None = None,
                 cosine_scale: float = 10.0, learn_v: bool = True) -> None:
        super().__init__()
        if kind not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, not {kind!r}")
        if kind in ("dot", "scaled", "cosine") and query_dim != key_dim:
            raise ValueError(f"score={kind} needs equal query and key widths, got {query_dim} and {key_dim}")
        self.kind = kind
        self.scale = 1.0 / math.sqrt(key_dim) if kind == "scaled" else 1.0
        if kind == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(math.log(cosine_scale)))
        elif kind == "general":
            self.weight = nn.Linear(key_dim, query_dim, bias=False)
        elif kind == "additive":
            hidden = hidden or key_dim
            if hidden < 1:
                raise ValueError(f"the additive score's hidden width must be at least 1, got {hidden}")
            self.query_proj = nn.Linear(query_dim, hidden, bias=False)
            self.key_proj = nn.Linear(key_dim, hidden)
            self.v = nn.Linear(hidden, 1, bias=False) if learn_v else None

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return self.compare(q, self.keys(k))

    def keys(self, k: Tensor) -> Tensor:
        """The part of the score that depends on the keys alone. A decoder that scores one query per step
        against the same memory computes it once per sequence and calls ``compare`` at every step."""
        if self.kind == "additive":
            return self.key_proj(k)
        if self.kind == "cosine":
            return F.normalize(k, dim=-1)
        if self.kind == "general":
            return self.weight(k)
        return k

    def compare(self, q: Tensor, keys: Tensor) -> Tensor:
        """Scores (B, Nq, Nk) of queries (B, Nq, Dq) against keys prepared by ``keys``."""
        if self.kind == "additive":
            hidden = torch.tanh(self.query_proj(q).unsqueeze(2) + keys.unsqueeze(1))
            return self.v(hidden).squeeze(-1) if self.v is not None else hidden.sum(-1)
        if self.kind == "cosine":
            return F.normalize(q, dim=-1) @ keys.transpose(1, 2) * self.log_scale.exp()
        return q @ keys.transpose(1, 2) * self.scale


def normalize(scores: Tensor, mask: Tensor | None = None, norm: str = "softmax",
              temperature: float = 1.0) -> Tensor:
    """Turn scores (..., N) into weights over the last dimension; ``mask`` broadcasts against them.

    ``softmax`` exp(s/τ)/Σexp · ``sigmoid`` σ(s/τ), each weight on its own · ``sum`` f(s/τ)/Σf with f = ReLU.
    """
    if temperature != 1.0:  # skip a pass over an N×N tensor in the common case
        scores = scores / temperature
    if norm == "softmax":
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)
    elif norm == "sigmoid":
        weights = torch.sigmoid(scores)
    elif norm == "sum":
        weights = F.relu(scores)
    else:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if mask is not None:
        weights = weights * mask  # exact zeros on padding, also for a row that is all padding
    if norm == "sum":
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-6)
    return weights


def check_norm(norm: str, temperature: float) -> None:
    """Build-time check for the normalisation hyperparameters of a variant."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
