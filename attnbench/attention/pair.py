"""Two-set attention: the ``pair`` slot, (B, N, D) and (B, M, D) -> both re-weighted, (B, N, D) and (B, M, D).

Each row of the batch is one pair of feature maps (in few-shot learning: a class map and a query map),
flattened to positions; the first set is ``a``, the second ``b``. The leading dimensions may also broadcast:
``a`` (E, 1, W, N, D) against ``b`` (E, Q, 1, M, D) pairs every query with every class, and the work that
depends on one map alone (normalising it, projecting it) is done once per map instead of once per pair; the
outputs then have the broadcast leading shape (E, Q, W). ``grid`` is (H, W) when the positions come from an
image, for the parts that convolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention, attention_entropy


@dataclass(frozen=True)
class CosineClassifier:
    """How a pair variant's paper scores a query against a class after re-weighting, when it is not the
    task's own nearest-neighbour rule: cosine of the pooled maps × ``scale``; during training the loss is
    taken at every query position (``dense``) with weight ``weight``, plus ``global_weight`` × a
    classification loss over all training classes at every position of the re-weighted query map."""

    scale: float
    dense: bool
    weight: float
    global_weight: float


class PairAttention(Attention):
    """Shared by the pair variants: both sets' weights are kept, ``weights`` for ``b``, ``weights_a`` for ``a``."""

    slot = "pair"
    classifier: CosineClassifier | None = None  # None: the task's own nearest-neighbour rule

    def __init__(self) -> None:
        super().__init__()
        self.weights_a: Tensor | None = None

    def record_pair(self, weights_a: Tensor, weights_b: Tensor) -> None:
        """Where the attention falls on each map: (..., N) over ``a``'s positions, (..., M) over ``b``'s."""
        if self.capture:
            self.weights, self.weights_a = weights_b.detach(), weights_a.detach()
        else:
            self.weights_a = None
        if not self.training:
            entropy = (attention_entropy(weights_a.detach()) + attention_entropy(weights_b.detach())) / 2
            self.add_diagnostic("entropy", entropy)


def _check_pairs(a: Tensor, b: Tensor, positions: int, name: str) -> None:
    """Refuses mismatched widths, map sizes, or leading dimensions that do not broadcast."""
    if a.dim() < 3 or b.dim() < 3 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name} needs (..., N, D) and (..., M, D) with the same D, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[-2] != positions or b.shape[-2] != positions:
        raise ValueError(f"{name} was built for maps of {positions} positions, got {a.shape[-2]} and {b.shape[-2]}")
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError as e:
        raise ValueError(f"{name}: the leading dimensions of {tuple(a.shape)} and {tuple(b.shape)} do not "
                         f"broadcast") from e


class CrossAttention(PairAttention):
    """Cross Attention Network's cross-attention module (CAM).

    Hou et al., "Cross Attention Network for Few-shot Classification", NeurIPS 2019. R is the cosine
    correlation of every position of ``a`` with every position of ``b``. For the attention over ``a``, each
    position of ``b`` is summarised by its mean correlation with ``a``; a meta-learner (1×1 conv P→P/6, BN,
    ReLU, 1×1 conv back to P, over the P positions as channels) turns that profile into a kernel w, and
    aᵢ = meanⱼ Rᵢⱼ wⱼ, A = softmax(a/τ) + 1, out = x·A. The same meta-learner, on Rᵀ, gives ``b``'s attention.
    Defaults follow the official code (τ = 0.025, P/6 hidden); the meta-learner is sized from the feature map
    (``positions`` = H·W), where the code fixes it at 6×6 = 36.

    CAN classifies with the cosine of the pooled re-weighted maps × 7, trains that nearest-neighbour loss at
    every query position with weight 0.5, and adds a classification loss over all training classes with
    weight 1 (the official ``loss1 + 0.5 * loss2``): ``classifier`` carries these for the few-shot task.

    ``reweight=False`` is the matched control: no meta-learner and no re-weighting (A = 1 everywhere), with the
    classifier and both losses kept, so the difference to ``reweight=True`` is the cross attention alone.
    """

    paper = "Hou et al. 2019, Cross Attention Network for Few-shot Classification"

    def __init__(self, dim: int, positions: int, /, reduction: int = 6, temperature: float = 0.025,
                 scale: float = 7.0, nn_weight: float = 0.5, global_weight: float = 1.0,
                 reweight: bool = True) -> None:
        super().__init__()
        if positions < 1:
            raise ValueError(f"positions must be at least 1, got {positions}")
        if reduction < 1:
            raise ValueError(f"reduction must be at least 1, got {reduction}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if nn_weight < 0 or global_weight < 0:
            raise ValueError(f"loss weights must be non-negative, got nn_weight={nn_weight}, "
                             f"global_weight={global_weight}")
        hidden = max(1, positions // reduction)
        self.positions, self.temperature = positions, temperature
        self.classifier = CosineClassifier(scale=scale, dense=True, weight=nn_weight, global_weight=global_weight)
        self.meta: nn.Sequential | None = None
        if not reweight:
            return
        # the official first conv also has a bias, which the BatchNorm after it cancels exactly: left out
        self.meta = nn.Sequential(nn.Conv1d(positions, hidden, 1, bias=False), nn.BatchNorm1d(hidden),
                                  nn.ReLU(inplace=True), nn.Conv1d(hidden, positions, 1))
        for m in self.meta:
            if isinstance(m, nn.Conv1d):  # the official initialisation: N(0, 2/n), n = kernel area × outputs
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.out_channels))

    def attention(self, correlation: Tensor) -> tuple[Tensor, Tensor]:
        """(..., N, M) correlations -> (A over the N rows, its softmax part) for the set whose positions are rows."""
        profile = correlation.mean(-2)  # (..., M): each column position's mean correlation with the rows
        kernel = self.meta(profile.reshape(-1, profile.shape[-1], 1)).view(profile.shape)
        logits = (correlation * kernel.unsqueeze(-2)).mean(-1)  # (..., N)
        weights = (logits / self.temperature).softmax(-1)
        return weights + 1, weights

    def forward(self, a: Tensor, b: Tensor, grid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        _check_pairs(a, b, self.positions, "cross attention")
        if self.meta is None:  # the control: both maps as they came (broadcast to every pair), to the same classifier
            shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            return a.expand(*shape, *a.shape[-2:]), b.expand(*shape, *b.shape[-2:])
        correlation = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)  # (..., N, M)
        attention_a, weights_a = self.attention(correlation)
        attention_b, weights_b = self.attention(correlation.transpose(-1, -2))
        self.record_pair(weights_a, weights_b)
        return a * attention_a.unsqueeze(-1).to(a.dtype), b * attention_b.unsqueeze(-1).to(b.dtype)


class CoAttention(PairAttention):
    """COSNet co-attention between two feature maps.

    Lu et al., "See More, Know More: Unsupervised Video Object Segmentation with Co-Attention Siamese
    Networks", CVPR 2019. S = VₐᵀWV_b (W learned, no bias); A = softmax over ``a``'s positions (each column),
    B = softmax over ``b``'s positions (each row); Z_b = VₐA, Z_a = V_bB; a sigmoid gate from one shared 1×1
    conv (no bias) scales each Z; then each side is fused with its original: conv over [Z·gate; V] (its own
    weights per side, no bias), BatchNorm, ReLU. Defaults follow the official code: a 3×3 fusion conv (it needs
    ``grid``), weights drawn from N(0, 0.01²), and like the code (``all_dim``) the module is built for one map
    size, ``positions`` = H·W; ``fuse_kernel=1`` fuses position by position.

    The recorded weights are the attention each position receives, averaged over the other map's positions.

    ``reweight=False`` is the matched control: no affinity W, and each side's attended map Z is the plain mean of
    the other map at every position (uniform weights, nothing chosen); the gate, the fusion convs and their
    BatchNorm are kept, so the difference to ``reweight=True`` is the co-attention alone.
    """

    paper = "Lu et al. 2019, COSNet: See More, Know More (co-attention Siamese networks)"

    def __init__(self, dim: int, positions: int, /, fuse_kernel: int = 3, reweight: bool = True) -> None:
        super().__init__()
        if positions < 1:
            raise ValueError(f"positions must be at least 1, got {positions}")
        if fuse_kernel < 1 or fuse_kernel % 2 == 0:
            raise ValueError(f"fuse_kernel must be a positive odd number, got {fuse_kernel}")
        self.positions, self.fuse_kernel = positions, fuse_kernel
        self.affinity = nn.Linear(dim, dim, bias=False) if reweight else None
        self.gate = nn.Linear(dim, 1, bias=False)
        self.fuse_a = nn.Conv2d(2 * dim, dim, fuse_kernel, padding=fuse_kernel // 2, bias=False)
        self.fuse_b = nn.Conv2d(2 * dim, dim, fuse_kernel, padding=fuse_kernel // 2, bias=False)
        self.norm_a, self.norm_b = nn.BatchNorm2d(dim), nn.BatchNorm2d(dim)
        for layer in (self.affinity, self.gate, self.fuse_a, self.fuse_b):
            if layer is not None:
                nn.init.normal_(layer.weight, 0.0, 0.01)

    def _fuse(self, attended: Tensor, original: Tensor, grid: tuple[int, int] | None, conv: nn.Conv2d,
              norm: nn.BatchNorm2d) -> Tensor:
        """ReLU(BN(conv([attended; original]))), with the conv split in its two halves: the original's half is
        computed once per map and broadcast over the pairs that share it (the same sum, less work)."""
        n, d = original.shape[-2:]
        if grid is None:
            if self.fuse_kernel > 1:
                raise ValueError(f"co-attention with fuse_kernel={self.fuse_kernel} needs the grid of the maps; "
                                 f"use fuse_kernel=1 for sequences")
            grid = (n, 1)
        if grid[0] * grid[1] != n:
            raise ValueError(f"grid {tuple(grid)} does not hold {n} positions")

        def convolve(x: Tensor, weight: Tensor) -> Tensor:  # (..., N, D) -> (..., D, H, W)
            maps = x.reshape(-1, n, d).transpose(1, 2).reshape(-1, d, *grid)
            return F.conv2d(maps, weight, padding=self.fuse_kernel // 2).view(*x.shape[:-2], d, *grid)

        fused = convolve(attended, conv.weight[:, :d]) + convolve(original, conv.weight[:, d:])
        out = F.relu(norm(fused.reshape(-1, d, *grid)), inplace=True)
        return out.flatten(2).transpose(1, 2).reshape(*attended.shape[:-2], n, d)

    def forward(self, a: Tensor, b: Tensor, grid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        _check_pairs(a, b, self.positions, "co-attention")
        if self.affinity is None:  # the control: uniform weights, Z = the other map's mean at every position
            shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            attended_a = b.mean(-2, keepdim=True).expand(*shape, a.shape[-2], a.shape[-1])
            attended_b = a.mean(-2, keepdim=True).expand(*shape, b.shape[-2], b.shape[-1])
        else:
            scores = self.affinity(a) @ b.transpose(-1, -2)  # (..., N, M)
            over_a = scores.softmax(-2)  # each column: a distribution over a's positions
            over_b = scores.softmax(-1)  # each row: a distribution over b's positions
            attended_b = over_a.transpose(-1, -2) @ a  # Z_b: (..., M, D)
            attended_a = over_b @ b  # Z_a: (..., N, D)
            self.record_pair(over_a.mean(-1), over_b.mean(-2))
        attended_a = attended_a * torch.sigmoid(self.gate(attended_a))
        attended_b = attended_b * torch.sigmoid(self.gate(attended_b))
        return (self._fuse(attended_a, a, grid, self.fuse_a, self.norm_a),
                self._fuse(attended_b, b, grid, self.fuse_b, self.norm_b))
