"""Pooling and aggregation: the ``pool`` slot, (B, N, D) with a mask -> (B, out_dim).

Every pool takes the width ``dim`` first and exposes ``out_dim`` (several variants concatenate, so the
readout width is not always ``dim``). ``forward(x, mask=None, grid=None)``: ``mask`` is True on real
positions; ``grid`` is (H, W) when the positions come from an image, for the variants that use space.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention
from .scores import Score, check_norm, normalize


def _valid(x: Tensor, mask: Tensor | None) -> Tensor:
    """The mask as a (B, N, 1) float tensor (all ones when there is none)."""
    if mask is None:
        return x.new_ones(x.shape[0], x.shape[1], 1)
    return mask.unsqueeze(-1).to(x.dtype)


class _Baseline(Attention):
    """A pool with no parameters and no weights: each channel summarised over the positions, ``out_dim = dim``."""

    slot = "pool"
    paper = "baseline"

    def __init__(self, dim: int, /) -> None:
        super().__init__()
        self.out_dim = dim


class SumPool(_Baseline):
    """Sum over positions (padding excluded): the order-free baseline of Deep Sets."""

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        return (x * _valid(x, mask)).sum(1)


class MeanPool(_Baseline):
    """Mean over positions (padding excluded); global average pooling on images."""

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        valid = _valid(x, mask)
        return (x * valid).sum(1) / valid.sum(1).clamp_min(1)


class MaxPool(_Baseline):
    """Maximum over positions per channel (padding excluded)."""

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
        return x.amax(1)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _regions(x: Tensor, mask: Tensor | None, grid: tuple[int, int] | None, bins: int, what: str) -> Tensor:
    """Which positions fall in which region: a (B, R, N) bool membership, padding in none.

    On an image grid (H, W) the regions are a ``bins``×``bins`` partition of rows and columns (R = bins²);
    on a sequence they are ``bins`` consecutive chunks of each sample's real positions (R = bins), so a
    padded sequence is split exactly as the same sequence without padding. A sample with fewer real
    positions than ``bins`` leaves some regions empty.
    """
    n = x.shape[1]
    if grid is not None:
        h, w = grid
        if h * w != n:
            raise ValueError(f"grid {h}×{w} does not match the {n} positions given")
        if bins > min(h, w):
            raise ValueError(f"{what}: {bins} bins per side do not fit the {h}×{w} feature grid")
        index = torch.arange(n, device=x.device)
        region = (index // w * bins // h) * bins + (index % w * bins // w)
        member = region == torch.arange(bins * bins, device=x.device).unsqueeze(1)  # (R, N)
        member = member.unsqueeze(0).expand(x.shape[0], -1, -1)
        return member if mask is None else member & mask.unsqueeze(1)
    if bins > n:
        raise ValueError(f"{what}: {bins} chunks do not fit a sequence of {n} positions")
    valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    rank = valid.long().cumsum(1) - 1  # index of each real position among its sample's real positions
    length = valid.sum(1, keepdim=True).clamp_min(1)
    region = rank * bins // length
    member = region.unsqueeze(1) == torch.arange(bins, device=x.device).view(1, bins, 1)
    return member & valid.unsqueeze(1)


def _region_max(x: Tensor, member: Tensor) -> Tensor:
    """(B, N, D), (B, R, N) -> the maximum of each region (B, R, D); an empty region gives zeros."""
    inside = member.unsqueeze(-1)
    top = x.unsqueeze(1).masked_fill(~inside, torch.finfo(x.dtype).min).amax(2)
    return top.masked_fill(~inside.any(2), 0.0)


class _KPerChannel(Attention):
    """A pool that keeps k values of every channel: ``out_dim = k·dim``; ``with_one`` and ``with_all`` say what it
    reduces to with k = 1 and with k at least the number of positions."""

    slot = "pool"
    with_one: str
    with_all: str

    def __init__(self, dim: int, /, k: int = 4) -> None:
        super().__init__()
        _positive("k", k)
        self.k = k
        self.out_dim = k * dim

    def reduction(self, choices: dict[str, int]) -> str | None:
        if self.k == 1:
            return self.with_one
        if self.k >= choices["positions"]:
            return self.with_all.format(k=self.k, n=choices["positions"])
        return None


class KMaxPool(_KPerChannel):
    """k-max pooling: the k largest values of every channel, kept in their original order, concatenated.

    Kalchbrenner et al., "A Convolutional Neural Network for Modelling Sentences", ACL 2014 (the top-level
    k-max pooling of the DCNN, k_top = 4). ``out_dim = k·dim``. k must not exceed the number of positions
    (the grid, or the padded length); a sample with fewer than k real positions gets zeros in the slots it
    cannot fill.
    """

    paper = "Kalchbrenner et al. 2014, A Convolutional Neural Network for Modelling Sentences"
    with_one = "equals max: k=1 keeps the largest value of each channel"
    with_all = "selects nothing: k={k} keeps all {n} positions, in order (a plain concatenation of the sequence)"

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        if self.k > x.shape[1]:
            raise ValueError(f"kmax: k={self.k} is larger than the {x.shape[1]} positions it pools")
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min)
        # a stable sort breaks ties towards earlier positions, so padding never changes which ones are kept
        index = x.sort(dim=1, descending=True, stable=True).indices[:, : self.k].sort(dim=1).values  # (B, k, D)
        top = x.gather(1, index)
        if mask is not None:
            top = top.masked_fill(~mask.unsqueeze(-1).expand_as(x).gather(1, index), 0.0)
        return top.transpose(1, 2).flatten(1)  # per channel its k values, channel after channel


class ChunkMaxPool(_KPerChannel):
    """Chunk-max pooling: split the positions into k consecutive chunks, max of each, concatenated.

    Keeps coarse order that plain max pooling discards (the fixed-chunk form of Chen et al. 2015's dynamic
    multi-pooling). Chunks are taken over each sample's real positions, so padding never shifts them; on an
    image the positions run row by row, so the chunks are horizontal bands. ``out_dim = k·dim``.
    """

    paper = "chunk-max pooling (fixed chunks; cf. Chen et al. 2015, dynamic multi-pooling)"
    with_one = "equals max: k=1 chunk is the whole sequence"
    with_all = ("max-pools nothing: k={k} chunks of {n} positions hold one position each (a plain concatenation "
                "of the sequence)")

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        return _region_max(x, _regions(x, mask, None, self.k, "chunkmax")).flatten(1)


class StochasticPool(Attention):
    """Stochastic pooling: in training one position per region is drawn with p ∝ activation; at test the
    probability-weighted average Σ pᵢaᵢ (pᵢ = aᵢ/Σⱼaⱼ).

    Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep Convolutional Neural Networks", ICLR 2013.
    Used here as the readout: ``bins=1`` draws from the whole map, ``bins=b`` from each cell of a b×b grid
    (on a sequence, from each of b² consecutive chunks), concatenated: ``out_dim = bins²·dim``.
    The method assumes activations ≥ 0 (ReLU outputs, as at the end of every residual block here); negative
    inputs are clipped to 0. A region whose activations are all 0 gives 0.
    """

    slot = "pool"
    paper = "Zeiler & Fergus 2013, Stochastic Pooling for Regularization of Deep Convolutional Neural Networks"

    def __init__(self, dim: int, /, bins: int = 1) -> None:
        super().__init__()
        _positive("bins", bins)
        self.bins = bins
        self.out_dim = dim * bins * bins

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        bins = self.bins if grid is not None else self.bins * self.bins  # the same region count either way
        member = _regions(x, mask, grid, bins, "stochastic")  # (B, R, N)
        a = x.float().clamp_min(0).transpose(1, 2).unsqueeze(1)  # (B, 1, D, N); float: sums and sampling
        mass = a * member.unsqueeze(2)  # (B, R, D, N): each region's activations, zero outside it
        total = mass.sum(-1, keepdim=True)
        if self.training:
            cdf = mass.cumsum(-1)
            u = torch.rand_like(total) * total  # u < total, so the first cdf > u lies where p > 0
            index = torch.searchsorted(cdf, u, right=True).clamp_max(x.shape[1] - 1)
            out = a.expand_as(mass).gather(-1, index) * (total > 0)
        else:
            p = mass / total.clamp_min(1e-12)
            self.record(p, member.unsqueeze(2))
            out = (p * a).sum(-1, keepdim=True)
        return out.squeeze(-1).flatten(1).to(x.dtype)


class DeepSets(Attention):
    """Deep Sets: ρ(pool φ(xᵢ)), φ two ReLU layers applied to every position, ρ one, the pool sum by default.

    Zaheer et al., "Deep Sets", NeurIPS 2017: any permutation-invariant function of a set is ρ(Σ φ(x)).
    ``pool=mean`` or ``max`` swap the sum, as the paper allows. ``hidden`` (default: ``dim``) is the width of
    φ and ρ and the output.
    """

    slot = "pool"
    paper = "Zaheer et al. 2017, Deep Sets"

    def __init__(self, dim: int, /, hidden: int | None = None, pool: str = "sum") -> None:
        super().__init__()
        hidden = hidden or dim
        _positive("hidden", hidden)
        pools = {"sum": SumPool, "mean": MeanPool, "max": MaxPool}
        if pool not in pools:
            raise ValueError(f"deepsets pool must be one of {', '.join(pools)}, not {pool!r}")
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True))
        self.pool = pools[pool](hidden)
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.out_dim = hidden

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        return self.rho(self.pool(self.phi(x), mask))


class LearnedQueries(nn.Module):
    """Scores of ``count`` learned query vectors against every position: (B, N, D) -> (B, count, N)."""

    def __init__(self, dim: int, count: int, score: str, hidden: int | None = None, learn_v: bool = True) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.empty(count, dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim)))
        self.score = Score(score, dim, dim, hidden=hidden, learn_v=learn_v)

    def forward(self, keys: Tensor) -> Tensor:
        return self.score(self.query.to(keys.dtype).expand(keys.shape[0], -1, -1), keys)


class FeedForwardAttention(Attention):
    """Feed-forward attention: a score eₜ per position, α = softmax(e), c = Σ αₜhₜ.

    Raffel & Ellis, "Feed-Forward Networks with Attention Can Solve Some Long-Term Memory Problems", ICLR
    workshop 2016: eₜ = tanh(w·hₜ + b). That is the shared ``additive`` score of one learned query with
    ``hidden=1`` and v fixed to 1 (``learn_v=False``): vᵀtanh(W₁q + W₂h + b) = tanh(w·h + b'), the
    query's term folding into the bias. Those are the defaults; ``score`` (dot, scaled, cosine, general,
    additive), ``norm`` and ``temperature`` swap the similarity and normalisation against the same learned
    query. The paper's tanh bounds e to [-1, 1], so no position outweighs another by more than e^(2/τ).
    """

    slot = "pool"
    paper = "Raffel & Ellis 2015, Feed-Forward Networks with Attention Can Solve Some Long-Term Memory Problems"

    def __init__(self, dim: int, /, score: str = "additive", hidden: int = 1, learn_v: bool = False,
                 norm: str = "softmax", temperature: float = 1.0) -> None:
        super().__init__()
        check_norm(norm, temperature)
        self.scores = LearnedQueries(dim, 1, score, hidden=hidden, learn_v=learn_v)
        self.norm, self.temperature = norm, temperature
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        alpha = normalize(self.scores(x).squeeze(1), mask, self.norm, self.temperature)  # (B, N)
        self.record(alpha, mask)
        return (alpha.unsqueeze(-1) * x).sum(1)


def redundancy_penalty(weights: Tensor) -> Tensor:
    """‖AAᵀ − I‖²_F of attention rows A (B, r, N), averaged over the batch (Lin et al. 2017)."""
    a = weights.float()
    gram = a @ a.transpose(1, 2)
    eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
    return (gram - eye).pow(2).sum((1, 2)).mean()


class MultiQueryAttention(Attention):
    """Structured self-attention: r learned queries, A = softmax(W₂ tanh(W₁Hᵀ)), M = AH flattened.

    Lin et al., "A Structured Self-attentive Sentence Embedding", ICLR 2017: W₁ (d_a × D) and W₂ (r × d_a)
    without biases, r = 30, d_a = 350, and the penalty ‖AAᵀ − I‖²_F × ``penalty_weight`` (1.0) pushing the r rows to
    attend to different positions; it reaches the loss as ``train/aux/multiquery``. The rows of W₂ are r
    learned queries scored with ``dot`` against the keys tanh(W₁h); ``score``, ``norm`` and ``temperature``
    swap the similarity and normalisation. ``out_dim = r·dim``. With fewer positions than r, AAᵀ has rank
    below r and the penalty cannot fall under r − N.
    """

    slot = "pool"
    paper = "Lin et al. 2017, A Structured Self-attentive Sentence Embedding"

    def __init__(self, dim: int, /, r: int = 30, d_a: int = 350, penalty_weight: float = 1.0, score: str = "dot",
                 norm: str = "softmax", temperature: float = 1.0) -> None:
        super().__init__()
        _positive("r", r)
        _positive("d_a", d_a)
        if penalty_weight < 0:
            raise ValueError(f"penalty_weight must be non-negative, got {penalty_weight}")
        check_norm(norm, temperature)
        self.keys = nn.Linear(dim, d_a, bias=False)  # W₁
        self.scores = LearnedQueries(d_a, r, score)  # the rows of W₂
        self.norm, self.temperature, self.penalty_weight, self.r = norm, temperature, penalty_weight, r
        self.out_dim = r * dim

    def reduction(self, choices: dict[str, int]) -> str | None:
        return "equals ffattn: r=1 is one learned query (and the penalty has nothing to keep apart)" \
            if self.r == 1 else None

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        valid = None if mask is None else mask.unsqueeze(1)
        a = normalize(self.scores(torch.tanh(self.keys(x))), valid, self.norm, self.temperature)  # (B, r, N)
        self.record(a, valid)
        if self.training and self.penalty_weight > 0:
            self.add_loss("multiquery", self.penalty_weight * redundancy_penalty(a))
        return (a @ x).flatten(1)


class PyramidPool(Attention):
    """Attention-weighted spatial pyramid: per level, max-pool each region, L2-normalise it, score it, and
    take the weighted sum of the regions; the levels are concatenated (``out_dim = len(levels)·dim``).

    Adapted from place recognition: Zhu et al., "Attention-based Pyramid Aggregation Network for Visual
    Place Recognition" (APANet), ACM MM 2018, where an attention block weighs the regions of a spatial
    pyramid of a street image. Here the region score is the shared score of one learned query (``dot``:
    a 1×1 convolution over each normalised region), normalised over the regions of its level with ``norm``;
    APANet's code is not public, so that normalisation is this project's choice. On an image grid each
    level ``b`` is a b×b partition of the map; on a sequence, ``b`` consecutive chunks of the real
    positions.

    APANet compares L2-normalised descriptors by distance, where their length does not matter; a linear
    classifier on unit-length regions can only produce small logits (on digits the training loss stalls
    near 0.9). So the readout is multiplied by one learned scale that starts at √dim, which gives each
    coordinate of a unit vector about unit size.
    """

    slot = "pool"
    weights_over = "regions"  # weights per pyramid level over its regions, not over the positions
    paper = "Zhu et al. 2018, APANet: Attention-based Pyramid Aggregation Network (adapted from place recognition)"

    def __init__(self, dim: int, /, levels: tuple[int, ...] | list[int] = (1, 2, 4), score: str = "dot",
                 norm: str = "softmax", temperature: float = 1.0) -> None:
        super().__init__()
        if not levels:
            raise ValueError("pyramid needs at least one level, e.g. levels=[1,2,4]")
        for b in levels:
            _positive("every pyramid level", b)
        check_norm(norm, temperature)
        self.levels = tuple(levels)
        self.scores = LearnedQueries(dim, 1, score)
        self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))
        self.norm, self.temperature = norm, temperature
        self.out_dim = len(self.levels) * dim

    def choices(self, *inputs: Any, grid: tuple[int, int] | None = None, **options: Any) -> dict[str, int]:
        """Regions of every level together: b×b of them per level on a grid, b on a sequence."""
        return {"regions": sum(b * b if grid is not None else b for b in self.levels)}

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        pooled, weights = [], []
        for bins in self.levels:
            member = _regions(x, mask, grid, bins, "pyramid")
            regions = F.normalize(_region_max(x, member), dim=-1)  # (B, R, D)
            filled = member.any(-1)  # a sequence shorter than the level leaves regions empty
            w = normalize(self.scores(regions).squeeze(1), filled, self.norm, self.temperature)  # (B, R)
            pooled.append((w.unsqueeze(-1) * regions).sum(1))
            weights.append(w)
        self._record_levels(weights)
        return self.scale * torch.cat(pooled, 1)

    def _record_levels(self, weights: list[Tensor]) -> None:
        """The weights of every level, zero-padded to (B, levels, most regions): entropy per level."""
        if self.capture or not self.training:
            widest = max(w.shape[1] for w in weights)
            self.record(torch.stack([F.pad(w, (0, widest - w.shape[1])) for w in weights], 1))
