"""Query-to-memory alignment: the ``align`` slot of a sequence decoder.

At every decoding step a query (B, Dq), the decoder's state, is scored against a memory (B, N, Dm), the image's
regions or the source words, with a mask (B, N) that is True on real positions. A module returns its output
(B, ``out_dim``) and the weights (B, N); masked positions get exactly zero weight.

A decoder drives a module through one sequence at a time:

* ``start(memory, mask, grid)`` begins a sequence: it forgets the state of the previous one and computes, once,
  what does not change from step to step (the keys' projection). ``grid`` is (H, W) when the memory is an image's
  region grid in raster order, None for a 1-D sequence.
* ``forward(query, memory, mask)`` is one step. Called without ``start`` it begins a sequence by itself.
* ``finish(weights, steps)`` ends it with the weights of every step stacked, (B, T, N), and the mask of real
  steps, (B, T). The weights still carry their gradient, so sequence-level losses (the doubly-stochastic term,
  REINFORCE's log-probabilities, an entropy bonus) are computed here; so is the entropy diagnostic.

``placement`` says where a module sits in the decoder's recurrence:

* ``"input"`` (Show, Attend and Tell): attend from the previous state h_{t-1}; the output, a context vector, is
  part of the LSTM's input at step t and of the word prediction.
* ``"output"`` (Luong): attend from the new state h_t; the output is the attentional state h̃_t, from which the
  word is predicted and which is fed into the next step's input (input feeding, done by the decoder).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Attention
from .scores import Score, check_norm, normalize


class Align(Attention):
    """What every ``align`` variant shares: the sequence protocol of ``start``/``forward``/``finish``."""

    slot = "align"
    placement = "input"

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = 0
        self._memory: Tensor | None = None
        self._mask: Tensor | None = None
        self._keys: Tensor | None = None
        self._grid: tuple[int, ...] | None = None
        self._step = 0

    def prepare(self, memory: Tensor) -> Tensor:
        """The memory's part of the score, computed once per sequence (``Score.keys``)."""
        return memory

    def start(self, memory: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> None:
        if grid is not None and grid[0] * grid[1] != memory.shape[1]:
            raise ValueError(f"a {grid[0]}×{grid[1]} grid does not hold the memory's {memory.shape[1]} positions")
        self._memory, self._mask, self._grid, self._step = memory, mask, grid, 0
        self._keys = self.prepare(memory)

    def _keys_for(self, memory: Tensor, mask: Tensor | None) -> Tensor:
        if memory is not self._memory:
            self.start(memory, mask)
        return self._keys

    def finish(self, weights: Tensor, steps: Tensor) -> None:
        """The sequence is over: ``weights`` (B, T, N) of every step, ``steps`` (B, T) True on real steps."""
        self.record(weights[steps])
        self._memory = self._keys = None


def _context(weights: Tensor, memory: Tensor) -> Tensor:
    return torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1)


class ScoredAlign(Align):
    """An align module whose weights come from a ``Score`` (``self.score``) normalised over the memory, with
    Show, Attend and Tell's optional β gate on the context, β_t = σ(f_β(query)) (``self.gate``, a Linear or None,
    set by every subclass)."""

    def gated(self, context: Tensor, query: Tensor) -> Tensor:
        return context if self.gate is None else context * torch.sigmoid(self.gate(query))

    def prepare(self, memory: Tensor) -> Tensor:
        return self.score.keys(memory)

    def step_weights(self, query: Tensor, memory: Tensor, mask: Tensor | None) -> Tensor:
        """α (B, N) of one step: the query's score against keys prepared once per sequence, normalised."""
        keys = self._keys_for(memory, mask)
        scores = self.score.compare(query.unsqueeze(1), keys).squeeze(1)
        return normalize(scores, mask, self.norm, self.temperature)


class SoftAttention(ScoredAlign):
    """Show, Attend and Tell's deterministic soft attention.

    e_ti = vᵀtanh(W_a a_i + W_h h_{t-1}), α_t = softmax(e_t), z_t = β_t Σᵢ α_ti a_i with the gate
    β_t = σ(f_β(h_{t-1})), and the doubly-stochastic penalty coef·Σᵢ(1 − Σₜ α_ti)² per caption that pushes the
    decoder to look at every region over the course of a caption (divided by the caption length, as the task
    loss is per word).

    Xu et al., "Show, Attend and Tell: Neural Image Caption Generation with Visual Attention", ICML 2015. The
    official code (arctic-captions) sums the penalty over every step of the padded batch; here it is summed over the
    caption's real steps, as the paper writes it. The penalty's coefficient defaults to the code's ``alpha_c = 0``:
    it asks for equal attention to every region over a caption, which the paper found to help BLEU on photos but
    which spreads the attention away from the object a word names (``doubly_stochastic_weight=1`` for the paper's
    setting). The gate follows the paper (the code's ``selector``, off by default there). ``score``, ``norm`` and
    ``temperature`` are the shared similarity parameters (the paper: additive, softmax, 1).
    """

    paper = "Xu et al. 2015, Show, Attend and Tell (soft attention)"

    def __init__(self, query_dim: int, memory_dim: int, /, score: str = "additive", hidden: int | None = None,
                 norm: str = "softmax", temperature: float = 1.0, gate: bool = True,
                 doubly_stochastic_weight: float = 0.0) -> None:
        super().__init__()
        check_norm(norm, temperature)
        if doubly_stochastic_weight < 0:
            raise ValueError(f"doubly_stochastic_weight must be at least 0, got {doubly_stochastic_weight}")
        self.score = Score(score, query_dim, memory_dim, hidden)
        self.norm, self.temperature, self.penalty_weight = norm, temperature, doubly_stochastic_weight
        self.gate = nn.Linear(query_dim, 1) if gate else None
        self.out_dim = memory_dim

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weights = self.step_weights(query, memory, mask)
        return self.gated(_context(weights, memory), query), weights

    def finish(self, weights: Tensor, steps: Tensor) -> None:
        if self.training and self.penalty_weight > 0:
            penalty = doubly_stochastic_penalty(weights, steps, self._mask)
            self.add_loss("doubly_stochastic", self.penalty_weight * penalty)
        super().finish(weights, steps)


def doubly_stochastic_penalty(weights: Tensor, steps: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σᵢ(1 − Σₜ α_ti)² over the real steps t and real positions i of each sequence, summed over the batch and
    divided by its number of real steps: per token, like the caption loss it is added to (the official code adds
    it per caption to a per-caption loss, which keeps the same ratio)."""
    coverage = (weights * steps.unsqueeze(-1)).sum(1)  # (B, N)
    gap = (1 - coverage) ** 2
    if mask is not None:
        gap = gap * mask
    return gap.sum() / steps.sum().clamp_min(1)


class HardAttention(ScoredAlign):
    """Show, Attend and Tell's stochastic hard attention, trained with REINFORCE.

    α_t as in soft attention; in training one region s_t ~ Multinoulli(α_t) is the context (z_t = a_{s_t}), except
    that with probability ``soft_mix`` (0.5) a whole batch uses the expected context Σᵢ α_ti a_i instead. The
    attention learns from the caption's log-likelihood r = log p(y | s, a), sent by the task through
    ``reinforce``: the surrogate loss −λ_r (r − b) Σₜ log α_{t,s_t} (per token of the batch, like the task loss)
    has the REINFORCE gradient, with the moving-average baseline b ← 0.9 b + 0.1 mean(r); an entropy bonus
    −λ_e H(α_t) keeps the distribution from collapsing early. At evaluation the context is the expectation, as
    the official code generates (``argmax_at_test`` takes the most likely region instead).

    Xu et al. 2015, section 4.1. The official code scales the learning signal by λ_r = 1/10 (``signal_scale``)
    and draws the soft/sampled coin once per minibatch, as here. Its default update uses each step's own
    negative log-likelihood without a baseline; its ``RL_sumCost`` branch and the paper use the caption's
    log-likelihood with the baseline, as here. Reported at evaluation: the baseline and the running mean and
    standard deviation of the learning signal λ_r (r − b). The β gate is on by default, as in soft attention:
    the paper gives β to the decoder both attentions share, and the code's ``selector`` applies to either, so a
    soft-against-hard comparison differs in the attention alone.
    """

    paper = "Xu et al. 2015, Show, Attend and Tell (hard attention, REINFORCE)"

    def __init__(self, query_dim: int, memory_dim: int, /, score: str = "additive", hidden: int | None = None,
                 norm: str = "softmax", temperature: float = 1.0, soft_mix: float = 0.5, signal_scale: float = 0.1,
                 entropy_weight: float = 0.01, baseline_decay: float = 0.9, gate: bool = True,
                 argmax_at_test: bool = False) -> None:
        super().__init__()
        check_norm(norm, temperature)
        if norm == "sigmoid":
            raise ValueError("hard attention samples from its weights, which must sum to one: use norm=softmax or sum")
        for name, value in (("soft_mix", soft_mix), ("baseline_decay", baseline_decay)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if signal_scale < 0 or entropy_weight < 0:
            raise ValueError(f"signal_scale and entropy_weight must be at least 0, got {signal_scale} and "
                             f"{entropy_weight}")
        self.score = Score(score, query_dim, memory_dim, hidden)
        self.norm, self.temperature = norm, temperature
        self.soft_mix, self.signal_scale, self.entropy_weight = soft_mix, signal_scale, entropy_weight
        self.decay = baseline_decay
        self.gate = nn.Linear(query_dim, 1) if gate else None
        self.argmax_at_test = argmax_at_test
        self.out_dim = memory_dim
        # running statistics, saved in checkpoints so that a resumed run continues them
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("signal_mean", torch.zeros(()))
        self.register_buffer("signal_sq", torch.zeros(()))
        self._expected = False  # this sequence uses the expected context (the soft_mix coin)
        self._samples: list[Tensor] = []
        self._log_prob: Tensor | None = None  # Σₜ log α_{t,s_t} per sequence, with its gradient
        self._tokens: Tensor | None = None

    def start(self, memory: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> None:
        super().start(memory, mask, grid)
        self._samples = []
        self._expected = not self.training or bool(torch.rand(()) < self.soft_mix)

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weights = self.step_weights(query, memory, mask)
        if self._expected and not (self.argmax_at_test and not self.training):
            context = _context(weights, memory)
        else:
            if self.training:
                chosen = torch.multinomial(weights.detach().float(), 1).squeeze(1)
                self._samples.append(chosen)
            else:
                chosen = weights.argmax(-1)
            context = memory[torch.arange(len(memory), device=memory.device), chosen]
        return self.gated(context, query), weights

    def finish(self, weights: Tensor, steps: Tensor) -> None:
        self._log_prob = None
        if self.training:
            real = steps.to(weights.dtype)
            tokens = real.sum().clamp_min(1)
            if self._samples:  # the sampled sequences: keep log p(s) for the reward that is to come
                chosen = torch.stack(self._samples, 1).unsqueeze(-1)  # (B, T, 1)
                log_prob = weights.gather(-1, chosen).squeeze(-1).clamp_min(1e-12).log()
                self._log_prob, self._tokens = (log_prob * real).sum(1), tokens
            if self.entropy_weight > 0:
                step_entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)
                self.add_loss("entropy_bonus", -self.entropy_weight * (step_entropy * real).sum() / tokens)
        else:
            self.add_diagnostic("reinforce_baseline", self.baseline)
            self.add_diagnostic("reinforce_signal", self.signal_mean)
            self.add_diagnostic("reinforce_signal_std", (self.signal_sq - self.signal_mean ** 2).clamp_min(0).sqrt())
        self._samples = []
        super().finish(weights, steps)

    def reinforce(self, reward: Tensor) -> None:
        if not self.training:
            return
        reward = reward.float()
        signal = self.signal_scale * (reward - self.baseline)
        if self._log_prob is not None:
            self.add_loss("reinforce", -(signal * self._log_prob).sum() / self._tokens)
            self._log_prob = None
        with torch.no_grad():
            self.baseline.mul_(self.decay).add_((1 - self.decay) * reward.mean())
            self.signal_mean.mul_(self.decay).add_((1 - self.decay) * signal.mean())
            self.signal_sq.mul_(self.decay).add_((1 - self.decay) * (signal ** 2).mean())


class GlobalAttention(ScoredAlign):
    """Luong's global attention: score every position, softmax, context c_t, attentional state
    h̃_t = tanh(W_c[c_t; h_t]).

    Luong, Pham and Manning, "Effective Approaches to Attention-based Neural Machine Translation", EMNLP 2015.
    ``score``: ``dot`` (needs equal query and memory widths), ``general`` (hᵀW h̄, the default) or ``additive``
    (the paper's ``concat``, vᵀtanh(W[h; h̄])). The decoder attends from h_t and feeds h̃_t back into its next
    input (input feeding). Luong has no context gate; ``gate=True`` adds Show, Attend and Tell's β on c_t, so
    that a study can hold the gate equal across the four decoder attentions.
    """

    paper = "Luong et al. 2015, Effective Approaches to Attention-based NMT (global)"
    placement = "output"

    def __init__(self, query_dim: int, memory_dim: int, /, score: str = "general", hidden: int | None = None,
                 norm: str = "softmax", temperature: float = 1.0, gate: bool = False) -> None:
        super().__init__()
        check_norm(norm, temperature)
        self.score = Score(score, query_dim, memory_dim, hidden)
        self.norm, self.temperature = norm, temperature
        self.gate = nn.Linear(query_dim, 1) if gate else None
        self.combine = nn.Linear(memory_dim + query_dim, query_dim, bias=False)
        self.out_dim = query_dim

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        weights = self.step_weights(query, memory, mask)
        context = self.gated(_context(weights, memory), query)
        return torch.tanh(self.combine(torch.cat([context, query], -1))), weights


def grid_positions(shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """Coordinates (N, len(shape)) of the positions of a sequence (N,) or a grid (H, W) in raster order."""
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))


def window_mask(positions: Tensor, centre: Tensor, window: float) -> Tensor:
    """(B, N) True where a position lies within ``window`` of the centre (B, d) along every axis: the window
    [p − D, p + D] of a sequence, the (2D+1)×(2D+1) square around p on a grid."""
    return ((positions.unsqueeze(0) - centre.unsqueeze(1)).abs() <= window).all(-1)


def gaussian_falloff(positions: Tensor, centre: Tensor, sigma: float) -> Tensor:
    """(B, N) exp(−‖s − p‖² / 2σ²) for every position s around the centre p (B, d)."""
    distance = ((positions.unsqueeze(0) - centre.unsqueeze(1)) ** 2).sum(-1)
    return torch.exp(-distance / (2 * sigma ** 2))


def monotonic_centre(step: int, shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """local-m's p_t = t: the t-th position in raster order (clamped to the last), as coordinates (d,)."""
    index = min(step, int(torch.tensor(shape).prod()) - 1)
    coordinates = []
    for n in reversed(shape):
        coordinates.append(index % n)
        index //= n
    return torch.tensor(coordinates[::-1], dtype=torch.float32, device=device)


class LocalAttention(ScoredAlign):
    """Luong's local attention: attend only within a window of half-width D around an aligned position p_t,
    with a Gaussian falloff.

    α_t(s) = align(h_t, h̄_s)·exp(−(s − p_t)²/2σ²) for s in [p_t − D, p_t + D], σ = D/2, where align is the
    softmax of the scores inside the window; then c_t and h̃_t = tanh(W_c[c_t; h_t]) as in global attention.
    ``alignment``: ``predictive`` (local-p, p_t = S·σ(v_pᵀtanh(W_p h_t))) or ``monotonic`` (local-m, p_t = t).

    Luong et al. 2015, section 3.2; the paper uses D = 10 on sentences. On an image's region grid (the decoder
    passes ``grid`` to ``start``) the window is two-dimensional: the (2D+1)×(2D+1) square of regions around
    p_t = (row, column), each predicted by its own head (S = H and W) for local-p, and the t-th region in raster
    order for local-m; the Gaussian is isotropic over both axes. p_t is scaled to the positions' index range
    (S − 1)·σ(·), so the window can centre on the last position. A window wider than the grid with σ → ∞ is
    global attention. ``gate`` as in global attention.
    """

    paper = "Luong et al. 2015, Effective Approaches to Attention-based NMT (local)"
    placement = "output"

    def __init__(self, query_dim: int, memory_dim: int, /, half_window: int = 2, alignment: str = "predictive",
                 sigma: float | None = None, score: str = "general", hidden: int | None = None,
                 norm: str = "softmax", temperature: float = 1.0, gate: bool = False) -> None:
        super().__init__()
        check_norm(norm, temperature)
        if half_window < 1:
            raise ValueError(f"half_window (D) must be at least 1, got {half_window}")
        if alignment not in ("predictive", "monotonic"):
            raise ValueError(f"alignment must be predictive (local-p) or monotonic (local-m), not {alignment!r}")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.half_window, self.alignment = half_window, alignment
        self.sigma = sigma if sigma is not None else half_window / 2
        self.score = Score(score, query_dim, memory_dim, hidden)
        self.norm, self.temperature = norm, temperature
        self.gate = nn.Linear(query_dim, 1) if gate else None
        # local-p's position predictor: one output per axis (a sequence uses the first)
        self.predict = nn.Sequential(nn.Linear(query_dim, query_dim, bias=False), nn.Tanh(),
                                     nn.Linear(query_dim, 2, bias=False)) if alignment == "predictive" else None
        self.combine = nn.Linear(memory_dim + query_dim, query_dim, bias=False)
        self.out_dim = query_dim
        self._positions: Tensor | None = None

    def reduction(self, choices: dict[str, int]) -> str | None:
        """Wherever p_t lies, [p_t − D, p_t + D] holds every position of an axis of S when D ≥ S − 1."""
        shape = self._grid or (choices["regions"],)
        if all(self.half_window >= side - 1 for side in shape):
            return (f"equals global: its window of half-width {self.half_window} covers all {choices['regions']} "
                    f"regions of its memory ({'×'.join(map(str, shape))}) wherever it is centred; only the "
                    f"Gaussian falloff (σ={self.sigma:g}) differs")
        return None

    def prepare(self, memory: Tensor) -> Tensor:
        shape = self._grid or (memory.shape[1],)
        self._positions = grid_positions(shape, memory.device)
        return super().prepare(memory)

    def centre(self, query: Tensor) -> Tensor:
        """p_t as coordinates (B, d)."""
        shape = self._grid or (self._positions.shape[0],)
        if self.predict is None:
            return monotonic_centre(self._step, shape, query.device).expand(len(query), -1)
        extent = torch.tensor(shape, dtype=torch.float32, device=query.device) - 1
        return torch.sigmoid(self.predict(query).float()[:, :len(shape)]) * extent

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keys = self._keys_for(memory, mask)
        centre = self.centre(query)
        inside = window_mask(self._positions, centre, self.half_window)
        if mask is not None:
            inside = inside & mask
        scores = self.score.compare(query.unsqueeze(1), keys).squeeze(1)
        weights = normalize(scores, inside, self.norm, self.temperature)
        weights = weights * gaussian_falloff(self._positions, centre, self.sigma).to(weights.dtype)
        self._step += 1
        context = self.gated(_context(weights, memory), query)
        return torch.tanh(self.combine(torch.cat([context, query], -1))), weights


class MeanAlign(Align):
    """No attention: the mean of the memory at every step (uniform weights over the real positions), the
    caption decoder's default when ``model=none``."""

    paper = "baseline"

    def __init__(self, query_dim: int, memory_dim: int) -> None:
        super().__init__()
        self.out_dim = memory_dim

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        valid = memory.new_ones(memory.shape[:2]) if mask is None else mask.to(memory.dtype)
        weights = valid / valid.sum(-1, keepdim=True).clamp_min(1)
        return _context(weights, memory), weights
