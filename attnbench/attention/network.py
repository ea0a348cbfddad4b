"""Whole-network variants: the ``network`` slot, word embeddings (B, N, E) with a mask -> (B, out_dim).

Some papers propose a complete network rather than a module to insert. Such a variant fills a backbone's
``network`` slot: it keeps the backbone's word embedding and replaces everything after it (encoder, mixer,
pool); the task's output layer reads its ``out_dim`` vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention


def _masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over positions of (B, N, C), padding excluded."""
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)


class LocalWordAttention(Attention):
    """D-Attn's local attention: s_i = σ(w · [x_{i-w/2} … x_{i+w/2}] + b), one score per word from the window
    of ``window`` embeddings around it; the embeddings are scaled by their scores."""

    slot = "network"
    paper = "Seo et al. 2017 (D-Attn, local attention)"

    def __init__(self, dim: int, window: int = 5) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        self.score = nn.Conv1d(dim, 1, window, padding=window // 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        s = torch.sigmoid(self.score(x.transpose(1, 2)).squeeze(1)) * mask
        self.record(s, mask)
        return x * s.unsqueeze(-1)


class GlobalWordAttention(Attention):
    """D-Attn's global attention: one sigmoid score per word that sees the whole review.

    The paper computes it with a convolution whose window spans the whole review. A window that grows with
    the review cannot have fixed weights, so here each word's score comes from the word and the mean of the
    whole review: s_i = σ(w · [x_i; x̄] + b), x̄ the masked mean embedding.
    """

    slot = "network"
    paper = "Seo et al. 2017 (D-Attn, global attention)"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(2 * dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        valid = mask.unsqueeze(-1).to(x.dtype)
        review = (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
        s = torch.sigmoid(self.score(torch.cat([x, review.expand_as(x)], -1)).squeeze(-1)) * mask
        self.record(s, mask)
        return x * s.unsqueeze(-1)


class DAttn(Attention):
    """D-Attn: dual local and global attention over word embeddings, CNNs on each, an MLP on top.

    Seo et al., "Interpretable Convolutional Neural Networks with Dual Local and Global Attention for Review
    Rating Prediction", RecSys 2017. Local branch: window scores (width 5) scale the embeddings, then a
    convolution with 200 filters (width 1: the window is already in the score), tanh, max over time. Global
    branch: review-wide scores scale the embeddings, then convolutions of widths 2, 3, 4 with 100 filters
    each, tanh, max over time. The 500 features go through an MLP (500 hidden units, dropout 0.5) to a
    50-wide review vector. The paper feeds a user's and an item's review vectors to a dot product; here one
    review's vector feeds the task's output layer. See ``GlobalWordAttention`` for the global score.
    """

    slot = "network"
    paper = "Seo et al. 2017, Interpretable CNNs with Dual Local and Global Attention for Review Rating Prediction"

    def __init__(self, dim: int, /, window: int = 5, local_filters: int = 200, global_filters: int = 100,
                 global_widths: tuple[int, ...] = (2, 3, 4), hidden: int = 500, out_dim: int = 50,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if min(local_filters, global_filters, hidden, out_dim) < 1 or not global_widths or min(global_widths) < 1:
            raise ValueError("filters, widths, hidden and out_dim must be positive")
        self.local = LocalWordAttention(dim, window)
        self.local_conv = nn.Conv1d(dim, local_filters, 1)
        self.global_ = GlobalWordAttention(dim)
        self.global_widths = list(global_widths)
        self.global_convs = nn.ModuleList(nn.Conv1d(dim, global_filters, w) for w in self.global_widths)
        features = local_filters + global_filters * len(self.global_widths)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        local = torch.tanh(self.local_conv(self.local(x, mask).transpose(1, 2))).transpose(1, 2)
        features = [_masked_max(local, mask)]
        scaled = self.global_(x, mask).transpose(1, 2)
        for width, conv in zip(self.global_widths, self.global_convs):
            # pad on the right so every real word starts a window, even in a review shorter than the width
            out = torch.tanh(conv(F.pad(scaled, (0, width - 1)))).transpose(1, 2)
            features.append(_masked_max(out, mask))
        return self.mlp(torch.cat(features, 1))
