"""Token mixers: the ``mixer`` slot, (B, N, D) with a mask -> (B, N, D).

Every mixer takes the width ``dim`` first; ``forward(x, mask=None)`` where ``mask`` is a bool (B, N), True on
real positions. Padding receives exactly zero weight, so changing a padded position changes nothing at the
real ones; what a mixer computes *at* a padded position is left as it is (every pool ignores it).

Recorded weights (``capture_weights``, and the entropy reported at evaluation) are (B, heads, N, N): row i is
query i's weights over the keys, one map per head (one head for ``self``), with the rows of padded queries
zeroed so the entropy averages over real queries only. ``gate`` records each token's mean gate, (B, N), zero
on padding, as the image form records a map over positions.

The weighting mixers form their N×N weights explicitly only when something needs them: at evaluation (the
entropy) and while weights are captured. Plain training of ``self``, ``mha`` and ``headprune`` with softmax
runs the fused ``F.scaled_dot_product_attention`` and never keeps an N×N matrix.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attention
from .scores import check_norm, normalize

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

# scores that are a dot product of (transformed) queries and keys, so fused attention kernels can compute them;
# ``general`` (qᵀWk) adds nothing to learned query and key projections (W folds into them), and ``additive``
# would need an N×N×d tensor per head.
DOT_SCORES = ("scaled", "dot", "cosine")


def head_width(dim: int, heads: int) -> int:
    if heads < 1:
        raise ValueError(f"heads must be at least 1, got {heads}")
    if dim % heads:
        divisors = [h for h in range(1, dim + 1) if dim % h == 0]
        raise ValueError(f"heads={heads} does not divide the width {dim}; choose one of {divisors}")
    return dim // heads


def check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def key_mask(mask: Tensor | None) -> Tensor | None:
    """(B, N) -> (B, 1, 1, N): broadcasts over heads and query rows of (B, h, N, N) scores."""
    return None if mask is None else mask[:, None, None, :]


def fused_mask(mask: Tensor | None) -> Tensor | None:
    """The key mask for ``F.scaled_dot_product_attention``.

    A sequence with no real position at all would give rows with every key masked, which the fused kernels
    turn into NaN; such a sequence attends over its own padding instead (finite, and ignored downstream).
    """
    if mask is None:
        return None
    return key_mask(mask | ~mask.any(-1, keepdim=True))


def merge_heads(x: Tensor) -> Tensor:
    """(B, h, N, d) -> (B, N, h·d), heads side by side as ``torch.nn.MultiheadAttention`` concatenates them."""
    return x.transpose(1, 2).flatten(2)


# ----------------------------------------------------------------------------- flex_attention (CUDA)
#
# torch.nn.attention.flex_attention fuses a score modification and a block-sparse mask into one attention
# kernel that never keeps the N×N scores. It trains only on CUDA: on the CPU (torch 2.15) it has no backward,
# and uncompiled it forms the N×N scores anyway, so there the mixers run their dense (or band) paths.

MAX_BAND = 128  # widest band of offsets (2k+1 for relpos, 2D+1 for local) gathered as (N, band, d) tensors
_compiled_flex: Callable | None = None
_block_masks: dict[tuple, BlockMask] = {}


@functools.cache
def flex_module() -> ModuleType | None:
    """torch's flex_attention module, imported on first use: it pulls in sympy and torch.fx's symbolic shapes,
    a second of start-up that a run never taking a flex path (every CPU run) does without; None in a torch
    without it (every mixer then runs its dense path)."""
    try:
        import torch.nn.attention.flex_attention as flex
    except ImportError:
        return None
    return flex


def __getattr__(name: str) -> Any:
    """``mixer.flex_attention``: torch's function (uncompiled), None in a torch without it."""
    if name == "flex_attention":
        flex = flex_module()
        return flex.flex_attention if flex is not None else None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flex_kernel(device: torch.device) -> Callable | None:
    """``flex_attention`` compiled into a fused kernel where it trains (CUDA); None elsewhere."""
    global _compiled_flex
    if device.type != "cuda" or flex_module() is None:
        return None
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_module().flex_attention, dynamic=False)
    return _compiled_flex


def offset_block_mask(kind: str, n: int, reach: int, device: torch.device) -> BlockMask:
    """The block mask of the keys j of query i with j − i < −reach (``before``), > reach (``after``), or
    |j − i| ≤ reach (``within``); built once per length and device (it depends on nothing else)."""
    key = (kind, n, reach, str(device))
    if key not in _block_masks:
        def before(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
            return kv - q < -reach

        def after(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
            return kv - q > reach

        def within(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
            return (kv - q).abs() <= reach

        mask_mod = {"before": before, "after": after, "within": within}[kind]
        _block_masks[key] = flex_module().create_block_mask(mask_mod, None, None, n, n, device=device)
    return _block_masks[key]


def padding_score_mod(keep: Tensor | None, extra: Callable | None = None) -> Callable | None:
    """A flex score modification giving padded keys (``keep`` False, (B, N)) −∞, after ``extra``."""
    if keep is None:
        return extra

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        if extra is not None:
            score = extra(score, b, h, q, kv)
        return torch.where(keep[b, kv], score, -float("inf"))

    return score_mod


def attention_with_lse(kernel: Callable, q: Tensor, k: Tensor, v: Tensor, score_mod: Callable | None,
                       block_mask: BlockMask, scale: float) -> tuple[Tensor, Tensor]:
    """flex attention over the keys of ``block_mask``: each query's weighted sum of values (B, h, N, d) and the
    log of its softmax normaliser (B, h, N), −∞ (and a zero output) where a query has no key there."""
    out, aux = kernel(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                      return_aux=flex_module().AuxRequest(lse=True))
    return out, aux.lse


def band_index(n: int, reach: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, 2·reach+1) key index i + r for every offset r in [−reach, reach], clamped into the sequence, and
    whether i + r lies inside it."""
    index = torch.arange(n, device=device)[:, None] + torch.arange(-reach, reach + 1, device=device)
    inside = (index >= 0) & (index < n)
    return index.clamp(0, n - 1), inside


def band_keys(mask: Tensor | None, index: Tensor, inside: Tensor) -> Tensor:
    """Which band entries are real keys: (B, 1, N, band), or (N, band) without padding."""
    if mask is None:
        return inside
    return (inside & mask[:, index])[:, None]


class Mixer(Attention):
    """What the token mixers share: the slot, and recording weights without the rows of padded queries."""

    slot = "mixer"

    @property
    def recording(self) -> bool:
        """Whether recorded weights are used (evaluation, or capture on); plain training keeps nothing."""
        return self.capture or not self.training

    def record_rows(self, weights: Tensor, mask: Tensor | None) -> None:
        """``record`` weights whose second-to-last dimension runs over queries (tokens), padded rows zeroed.

        Returns at once in plain training, where nothing is kept, so the step pays nothing for it.
        """
        if not self.recording:
            return
        if mask is not None:
            rows = mask.unsqueeze(-1)
            while rows.dim() < weights.dim():
                rows = rows.unsqueeze(1)
            weights = weights * rows
        self.record(weights, mask)


class MultiHeadAttention(Mixer):
    """Multi-head attention: h heads of softmax(QKᵀ/√d)V over learned projections, concatenated, projected.

    Vaswani et al., "Attention Is All You Need", NeurIPS 2017. The parameters are laid out as in
    ``torch.nn.MultiheadAttention`` (one fused input projection D → 3D, then the output projection), so
    weights copy across and both compute the same function.

    ``score``: ``scaled`` qᵀk/√d (the paper) · ``dot`` qᵀk · ``cosine`` cos(q, k)·s, s learned (starts at 10).
    ``general`` and ``additive`` do not apply (see ``DOT_SCORES``). ``temperature`` τ divides the scores.
    ``norm``: ``softmax`` trains through ``F.scaled_dot_product_attention``; the fused kernel has softmax built
    in, so ``sigmoid`` and ``sum`` run the explicit path (weights formed, masked and normalised by
    ``scores.normalize``). ``dropout`` drops attention weights in training.
    """

    paper = "Vaswani et al. 2017, Attention Is All You Need"
    project_out = True  # the output projection after concatenating the heads
    one_head: str | None = "self"  # the variant this one equals with heads=1 (None: a one-head form of its own)

    def __init__(self, dim: int, /, heads: int = 4, score: str = "scaled", norm: str = "softmax",
                 temperature: float = 1.0, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_width(dim, heads)
        if score not in DOT_SCORES:
            raise ValueError(f"score must be one of {', '.join(DOT_SCORES)} for a dot-product mixer, not {score!r} "
                             f"(general adds nothing to learned Q/K projections; additive needs N×N×d memory)")
        check_norm(norm, temperature)
        check_dropout(dropout)
        self.score, self.norm, self.dropout = score, norm, dropout
        # the score is (q·k)·scale; a learned cosine scale multiplies the normalised queries instead
        self.scale = (self.head_dim ** -0.5 if score == "scaled" else 1.0) / temperature
        if score == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias) if self.project_out else nn.Identity()

    def reduction(self, choices: dict[str, int]) -> str | None:
        return f"equals {self.one_head}: heads=1 leaves one head" if self.heads == 1 and self.one_head else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.project(x)
        return self.out_proj(merge_heads(self.attend(q, k, v, mask)))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of every head, each (B, h, N, d)."""
        q, k, v = self.in_proj(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        if self.score == "cosine":
            q, k = F.normalize(q, dim=-1) * self.log_scale.exp(), F.normalize(k, dim=-1)
        return q, k, v

    def path(self, n: int, device: torch.device) -> str:
        """The code path ``attend`` takes for N tokens on ``device``: ``fused`` or ``dense``."""
        return "fused" if self.norm == "softmax" and not self.recording else "dense"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Each head's weighted sum of values, (B, h, N, d)."""
        if self.path(q.shape[-2], q.device) == "fused":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=fused_mask(mask), dropout_p=self.dropout,
                                                  scale=self.scale)
        weights = normalize((q * self.scale) @ k.transpose(-2, -1), key_mask(mask), self.norm)
        self.record_rows(weights, mask)
        return self.drop(weights) @ v

    def drop(self, weights: Tensor) -> Tensor:
        """Dropout on attention weights in training (no pass over the N×N weights when there is none)."""
        return F.dropout(weights, self.dropout) if self.training and self.dropout else weights


class SelfAttention(MultiHeadAttention):
    """Self-attention with one head: softmax(QKᵀ/√d)V, with Q, K and V linear projections of X.

    The scaled dot-product attention of Vaswani et al. 2017 on its own: one head, no output projection.
    ``score``, ``norm``, ``temperature`` and ``dropout`` as in ``MultiHeadAttention``.
    """

    paper = "Vaswani et al. 2017, Attention Is All You Need (one scaled dot-product head)"
    project_out = False
    one_head = None

    def __init__(self, dim: int, /, score: str = "scaled", norm: str = "softmax", temperature: float = 1.0,
                 dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__(dim, 1, score, norm, temperature, dropout, bias)


class RelativePositionAttention(MultiHeadAttention):
    """Multi-head attention with relative position representations.

    Shaw et al., "Self-Attention with Relative Position Representations", NAACL 2018. Learned vectors aᴷ, aⱽ
    (one per clipped distance clip(j − i, k), shared by the heads, as in the paper) enter keys and values:
    e_ij = q_i·(k_j + aᴷ_ij)/√d, z_i = Σ_j α_ij (v_j + aⱽ_ij). ``max_distance`` is k.

    Nothing of size N×N×d is formed. ``attend_dense`` (CPU, evaluation, other norms): q_i·aᴷ is a (N, 2k+1)
    product gathered into the N×N scores, and Σ_j α_ij aⱽ_ij sums each row's weights per distance bucket, then
    multiplies by aⱽ: O(N²) memory, like the weights themselves. ``attend_flex`` (CUDA training): keys further
    than k from the query all use the clipped vectors aᴷ_{∓k}, aⱽ_{∓k}, so those two regions are plain
    attention — two block-sparse ``flex_attention`` calls, each returning its softmax normaliser — shifted by
    the per-query constant q_i·aᴷ_{∓k}; the 2k+1 nearest keys are scored directly from an (N, 2k+1, d) gather.
    The three parts merge exactly through their normalisers: O(N·k·d) memory, nothing N×N.

    The score is the paper's scaled dot product (a cosine would need the norm of every k_j + aᴷ_ij, i.e. the
    N×N×d tensor); ``temperature`` divides it, ``norm`` picks the normalisation.
    """

    paper = "Shaw et al. 2018, Self-Attention with Relative Position Representations"
    one_head = None

    def __init__(self, dim: int, /, heads: int = 4, max_distance: int = 16, norm: str = "softmax",
                 temperature: float = 1.0, dropout: float = 0.0, bias: bool = True) -> None:
        if max_distance < 0:
            raise ValueError(f"max_distance must be at least 0, got {max_distance}")
        super().__init__(dim, heads, "scaled", norm, temperature, dropout, bias)
        self.max_distance = max_distance
        buckets = 2 * max_distance + 1
        self.rel_key = nn.Parameter(torch.randn(buckets, self.head_dim) * self.head_dim ** -0.5)
        self.rel_value = nn.Parameter(torch.randn(buckets, self.head_dim) * self.head_dim ** -0.5)

    def path(self, n: int, device: torch.device) -> str:
        """``flex`` where flex_attention trains (CUDA), for softmax without attention dropout and not
        recording weights; ``dense`` otherwise."""
        if (self.norm == "softmax" and not self.recording and not (self.training and self.dropout)
                and 2 * self.max_distance + 1 <= MAX_BAND and flex_kernel(device) is not None):
            return "flex"
        return "dense"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if self.path(q.shape[-2], q.device) == "flex":
            return self.attend_flex(q, k, v, mask, flex_kernel(q.device))
        return self.attend_dense(q, k, v, mask)

    def attend_flex(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, kernel: Callable) -> Tensor:
        """The three-region form (class docstring); ``kernel`` is flex_attention (compiled on CUDA)."""
        n, reach = q.shape[-2], self.max_distance
        keep = None if mask is None else mask | ~mask.any(-1, keepdim=True)  # as ``fused_mask``: no empty rows
        score_mod = padding_score_mod(keep)
        out_before, lse_before = attention_with_lse(kernel, q, k, v, score_mod,
                                                    offset_block_mask("before", n, reach, q.device), self.scale)
        out_after, lse_after = attention_with_lse(kernel, q, k, v, score_mod,
                                                  offset_block_mask("after", n, reach, q.device), self.scale)
        q = q * self.scale
        relative = (q @ self.rel_key.to(q.dtype).T).float()  # q_i·aᴷ_r/√d for every clipped distance r
        index, inside = band_index(n, reach, q.device)
        v_band = v[:, :, index]  # (B, h, N, 2k+1, d): the keys and values at distances −k..k
        near = (q.unsqueeze(-2) @ k[:, :, index].transpose(-2, -1)).squeeze(-2).float() + relative
        near = near.masked_fill(~band_keys(keep, index, inside), -float("inf"))
        lse_before = lse_before.float() + relative[..., 0]  # every key before i − k uses aᴷ_{−k}
        lse_after = lse_after.float() + relative[..., -1]
        lse = torch.cat([lse_before[..., None], near, lse_after[..., None]], -1).logsumexp(-1, keepdim=True)
        far_before, far_after = (lse_before[..., None] - lse).exp(), (lse_after[..., None] - lse).exp()
        weights = (near - lse).exp()  # α_{i,i+r} for r = −k..k
        per_distance = weights + F.pad(far_before, (0, 2 * reach)) + F.pad(far_after, (2 * reach, 0))
        out = (far_before * out_before.float() + far_after * out_after.float()
               + (weights.to(v.dtype).unsqueeze(-2) @ v_band).squeeze(-2).float()
               + per_distance @ self.rel_value.float())
        return out.to(q.dtype)

    def distance_buckets(self, n: int, device: torch.device) -> Tensor:
        """(N, N) index of clip(j − i, k) + k: which relative vector query i uses for key j."""
        position = torch.arange(n, device=device)
        return (position[None, :] - position[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance

    def attend_dense(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        n = q.shape[-2]
        buckets = self.distance_buckets(n, q.device).expand(*q.shape[:-2], n, n)
        q = q * self.scale
        relative = (q @ self.rel_key.to(q.dtype).T).gather(-1, buckets)  # q_i·aᴷ_ij/√d, (B, h, N, N)
        weights = normalize(relative.add_(q @ k.transpose(-2, -1)), key_mask(mask), self.norm)
        self.record_rows(weights, mask)
        weights = self.drop(weights)
        per_distance = weights.new_zeros(*weights.shape[:-1], self.rel_value.shape[0])
        per_distance.scatter_add_(-1, buckets, weights)  # Σ α_ij over the keys j at each clipped distance
        return weights @ v + per_distance @ self.rel_value.to(weights.dtype)


class HardConcreteGate(nn.Module):
    """One stretched and clipped ("hard") concrete gate per unit (Louizos et al. 2018).

    Training draws s = σ((log u − log(1 − u) + log α)/T), u ~ U(0, 1), one draw per unit per step shared by the
    batch (as in the official head-pruning code); test time uses s = σ(log α). Either is stretched to (l, r)
    and clipped to [0, 1], so a gate is exactly 0 or 1 with positive probability.
    """

    def __init__(self, units: int, temperature: float, stretch: Sequence[float], init_log_alpha: float | None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"gate_temperature must be positive, got {temperature}")
        low, high = (float(v) for v in stretch)
        if not low < 0 or not high > 1:
            raise ValueError(f"stretch (l, r) needs l < 0 and r > 1 (gates must reach exactly 0 and 1), "
                             f"got ({low}, {high})")
        self.temperature, self.low, self.high, self.eps = temperature, low, high, eps
        if init_log_alpha is None:
            # the official code's Glorot-uniform draw for its [1, heads, 1, 1] variable: U(±√(3/heads))
            bound = math.sqrt(3 / units)
            self.log_alpha = nn.Parameter(torch.empty(units).uniform_(-bound, bound))
        else:
            self.log_alpha = nn.Parameter(torch.full((units,), float(init_log_alpha)))

    def forward(self) -> Tensor:
        """The gates of this forward pass, (units,): sampled in training, deterministic at test time."""
        return self.sample() if self.training else self.test_gates()

    def sample(self, *batch: int) -> Tensor:
        """Training-time gates, (*batch, units)."""
        u = torch.rand(*batch, *self.log_alpha.shape, device=self.log_alpha.device) * (1 - 2 * self.eps) + self.eps
        return self.stretch(torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / self.temperature))

    def test_gates(self) -> Tensor:
        return self.stretch(torch.sigmoid(self.log_alpha))

    def stretch(self, s: Tensor) -> Tensor:
        return (s * (self.high - self.low) + self.low).clamp(0, 1)

    def open_probability(self) -> Tensor:
        """P(training gate > 0) per unit, σ(log α − T·log(−l/r)): their sum is the expected L0 norm."""
        return torch.sigmoid(self.log_alpha - self.temperature * math.log(-self.low / self.high))


class HeadPruneAttention(MultiHeadAttention):
    """Multi-head attention whose heads are pruned by hard-concrete gates and an L0 penalty.

    Voita et al., "Analyzing Multi-Head Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be
    Pruned", ACL 2019. Each head's output is multiplied by its gate (``HardConcreteGate``) before the output
    projection; the auxiliary loss ``l0`` = λ·Σ_heads σ(log α − T·log(−l/r)) (the expected number of open
    heads) pushes gates shut, and evaluation reports ``open_heads``, the heads whose test-time gate is above 0.

    Defaults follow the official code (github.com/lena-voita/the-story-of-heads): gate temperature T = 0.33,
    stretch (l, r) = (−0.1, 1.1), log α drawn Glorot-uniform, one noise draw per step for the whole batch.
    The paper writes the gate with the hard concrete of Louizos et al. 2018, whose experiments use T = 2/3:
    ``gate_temperature=0.667`` gives that form. λ (``l0_weight``) = 0.1 is the value of the official training
    script (its loss class defaults to 1.0 and the script asks for it to be set per experiment). The official
    loss averages the penalty over all gated attention layers; here every gated layer adds its own term.
    ``score``, ``norm``, ``temperature``, ``dropout`` as in ``MultiHeadAttention``.
    """

    paper = ("Voita et al. 2019, Analyzing Multi-Head Self-Attention: Specialized Heads Do the Heavy Lifting, "
             "the Rest Can Be Pruned")

    def __init__(self, dim: int, /, heads: int = 4, score: str = "scaled", norm: str = "softmax",
                 temperature: float = 1.0, dropout: float = 0.0, bias: bool = True, gate_temperature: float = 0.33,
                 stretch: Sequence[float] = (-0.1, 1.1), l0_weight: float = 0.1,
                 init_log_alpha: float | None = None) -> None:
        super().__init__(dim, heads, score, norm, temperature, dropout, bias)
        if l0_weight < 0:
            raise ValueError(f"l0_weight must be at least 0, got {l0_weight}")
        self.l0_weight = l0_weight
        self.gate = HardConcreteGate(heads, gate_temperature, stretch, init_log_alpha)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.project(x)
        gates = self.gate()
        if self.training:
            self.add_loss("l0", self.l0_weight * self.gate.open_probability().sum())
        else:
            self.add_diagnostic("open_heads", (gates > 0).sum().float())
        return self.out_proj(merge_heads(self.attend(q, k, v, mask) * gates.to(q.dtype)[:, None, None]))


class CompositionalDeAttention(Mixer):
    """CoDA quasi-attention: weights in (−1, 1) that can add, subtract or ignore a token; no softmax.

    Tay et al., "Compositional De-Attention Networks", NeurIPS 2019, in its self-attention form (a = b = X):
    E = α·F(a)F(b)ᵀ, N = −β‖F(a)_i − F(b)_j‖₁, centred to mean zero, M = tanh(E) ⊙ σ(N), output M·V.
    The F of E and of N are separate learned projections, with distinct query and key maps as in the paper's
    Transformer form; V is a learned projection of X, and the heads are concatenated with no output projection,
    so every output channel is bounded by |out| < Σ_j |v_j|.

    Without the centring N ≤ 0 and the gate σ(N) never exceeds 0.5 (``centre=False`` shows it). The paper says
    only "mean-centred": here each query's row is centred over its real keys. ``alpha``/``beta`` default to
    1/√d (d the head width), the Transformer's scaling, so tanh does not start saturated. The L1 distances come
    from ``torch.cdist`` (N×N, never N×N×d). ``norm``/``temperature`` do not apply: the point of CoDA is weights
    that are not a normalised distribution. Recorded weights are |M|, how much each token enters the output.
    """

    paper = "Tay et al. 2019, Compositional De-Attention Networks"

    def __init__(self, dim: int, /, heads: int = 1, alpha: float | None = None, beta: float | None = None,
                 centre: bool = True, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_width(dim, heads)
        check_dropout(dropout)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.alpha = alpha if alpha is not None else self.head_dim ** -0.5
        self.beta = beta if beta is not None else self.head_dim ** -0.5
        self.centre, self.dropout = centre, dropout
        # queries and keys of the affinity E and of the dissimilarity N, then the values
        self.in_proj = nn.Linear(dim, 5 * dim, bias=bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        qe, ke, qn, kn, v = self.in_proj(x).unflatten(-1, (5, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        weights = self.composition(qe, ke, qn, kn, mask)
        if self.recording:
            self.record_rows(weights.abs(), mask)
        if self.training and self.dropout:
            weights = F.dropout(weights, self.dropout)
        return merge_heads(weights @ v)

    def composition(self, qe: Tensor, ke: Tensor, qn: Tensor, kn: Tensor, mask: Tensor | None) -> Tensor:
        """M = tanh(E) ⊙ σ(N), (B, h, N, N), exactly 0 on padded keys."""
        dissimilarity = -self.beta * torch.cdist(qn, kn, p=1)
        keys = key_mask(mask)
        if self.centre:
            if keys is None:
                dissimilarity = dissimilarity - dissimilarity.mean(-1, keepdim=True)
            else:
                count = keys.sum(-1, keepdim=True).clamp_min(1)
                dissimilarity = dissimilarity - (dissimilarity * keys).sum(-1, keepdim=True) / count
        weights = torch.tanh(self.alpha * qe @ ke.transpose(-2, -1)) * torch.sigmoid(dissimilarity)
        return weights if keys is None else weights * keys


class TokenGate(Mixer):
    """A GRU-style gate per token and channel, with the sequence's mean as context.

    The survey's "gating": g = σ(W_g[x_i; c]), h̃_i = tanh(W_h[x_i; c]), out_i = g⊙x_i + (1 − g)⊙h̃_i, where
    c is the masked mean of the sequence (the sequence form of ``gate``; its image form lives in
    ``feature.py``). W[x; c] is computed as W_x x + W_c c, so the context is projected once per sequence;
    biases start at zero, so g starts near 0.5, as in the image form. It normalises no scores, so
    ``score``/``norm``/``temperature`` do not apply; the recorded weights are each token's gate averaged over
    channels (how much of the token is kept).
    """

    paper = "the survey's gating: a GRU-style update gate (Cho et al. 2014) with sequence context"

    def __init__(self, dim: int, /, bias: bool = True) -> None:
        super().__init__()
        self.from_token = nn.Linear(dim, 2 * dim, bias=bias)  # gate and candidate, from x_i
        self.from_context = nn.Linear(dim, 2 * dim, bias=False)  # gate and candidate, from c
        if bias:
            nn.init.zeros_(self.from_token.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        valid = x.new_ones(x.shape[0], x.shape[1], 1) if mask is None else mask.unsqueeze(-1).to(x.dtype)
        context = (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
        gate, candidate = (self.from_token(x) + self.from_context(context)).chunk(2, dim=-1)
        gate = torch.sigmoid(gate)
        if self.recording:
            self.record(gate.mean(-1) * valid.squeeze(-1), mask)
        return gate * x + (1 - gate) * torch.tanh(candidate)
