"""Caption models: a convolutional encoder that turns an image into a grid of region features (with a
``feature`` slot in every residual block) and an LSTM decoder with an ``align`` slot that attends over the regions
at every word.

Two encoders: a small CIFAR-style residual CNN trained from scratch (``caption_cnn``, for the embedded shapes) and
torchvision's ImageNet ResNets (``caption_resnet``), optionally initialised from weights the user has on disk and
frozen. Both end in the same decoder. Decoding is teacher-forced in training; ``generate`` does greedy (beam 1) and
beam search.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.align import MeanAlign
from .base import SlotFactory, fill, identity_factory
from .resnet import BasicBlock

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class AttentionDecoder(nn.Module):
    """An LSTM that predicts one word per step from the previous word and what its align module returns.

    ``placement = "input"`` (Show, Attend and Tell): z_t = align(h_{t-1}, a); h_t = LSTM([E y_{t-1}; z_t]);
    p(y_t) = softmax(L_o tanh(E y_{t-1} + L_h h_t + L_z z_t)) (the paper's deep output, eq. 7).
    ``placement = "output"`` (Luong): h_t = LSTM([E y_{t-1}; h̃_{t-1}]) (input feeding); h̃_t = align(h_t, a);
    p(y_t) = softmax(W_s h̃_t). ``initial_state="mean"``: h_0 and c_0 come from the mean of the regions (Xu et al.,
    section 3.1.2); ``"learned"``: they are learned vectors, the same for every image, so that all the decoder
    knows of the image comes through its attention.
    """

    def __init__(self, vocab_size: int, memory_dim: int, embed_dim: int, hidden_dim: int, dropout: float,
                 align: SlotFactory, initial_state: str = "mean") -> None:
        super().__init__()
        if initial_state not in ("mean", "learned"):
            raise ValueError(f"initial_state must be mean or learned, not {initial_state!r}")
        self.align = align(hidden_dim, memory_dim)
        self.placement = getattr(self.align, "placement", "input")
        out_dim = self.align.out_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        if initial_state == "mean":
            self.init_h, self.init_c = nn.Linear(memory_dim, hidden_dim), nn.Linear(memory_dim, hidden_dim)
        else:
            self.init_h, self.init_c = nn.Parameter(torch.zeros(hidden_dim)), nn.Parameter(torch.zeros(hidden_dim))
        self.cell = nn.LSTMCell(embed_dim + out_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        if self.placement == "input":
            self.out_state = nn.Linear(hidden_dim, embed_dim)
            self.out_context = nn.Linear(out_dim, embed_dim)
            self.classifier = nn.Linear(embed_dim, vocab_size)
        else:
            self.classifier = nn.Linear(out_dim, vocab_size)
        self.out_dim = out_dim

    def begin(self, memory: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Start a sequence over ``memory``: the initial (h, c, fed-back output)."""
        self.align.start(memory, None, grid)
        if isinstance(self.init_h, nn.Parameter):
            h, c = (torch.tanh(p).to(memory.dtype).expand(len(memory), -1) for p in (self.init_h, self.init_c))
        else:
            mean = memory.mean(1)
            h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        return h, c, memory.new_zeros(len(memory), self.out_dim)

    def step(self, words: Tensor, state: tuple[Tensor, Tensor, Tensor],
             memory: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        """One word: logits (B, V), the attention weights (B, N) and the next state."""
        h, c, fed = state
        embedded = self.dropout(self.embed(words))
        if self.placement == "input":
            context, weights = self.align(h, memory)
            h, c = self.cell(torch.cat([embedded, context], -1), (h, c))
            readout = torch.tanh(embedded + self.out_state(h) + self.out_context(context))
            return self.classifier(self.dropout(readout)), weights, (h, c, context)
        h, c = self.cell(torch.cat([embedded, fed], -1), (h, c))
        attended, weights = self.align(h, memory)
        return self.classifier(self.dropout(attended)), weights, (h, c, attended)

    def forward(self, memory: Tensor, grid: tuple[int, int], inputs: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: ``inputs`` (B, T) are the previous words, ``steps`` (B, T) marks the real steps.
        Returns logits (B, T, V) and weights (B, T, N)."""
        state = self.begin(memory, grid)
        logits, weights = [], []
        for t in range(inputs.shape[1]):
            step_logits, step_weights, state = self.step(inputs[:, t], state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
        stacked = torch.stack(weights, 1)
        self.align.finish(stacked, steps)
        return torch.stack(logits, 1), stacked

    @torch.no_grad()
    def generate(self, memory: Tensor, grid: tuple[int, int], bos: int, eos: int, pad: int, max_length: int,
                 beam: int = 1) -> tuple[Tensor, Tensor]:
        """Beam search (``beam = 1`` is greedy decoding): the best caption of each image, ranked by its
        log-probability per word. Returns words (B, L) ending in ``eos`` then ``pad``, and the attention weights
        of every word (B, L, N)."""
        b, n = memory.shape[:2]
        k = beam
        memory = memory.repeat_interleave(k, 0)
        state = self.begin(memory, grid)
        words = torch.full((b * k,), bos, dtype=torch.long, device=memory.device)
        scores = torch.full((b, k), float("-inf"), device=memory.device)
        scores[:, 0] = 0.0  # all beams start as the same empty caption: keep one of them
        lengths = torch.zeros(b, k, device=memory.device)
        done = torch.zeros(b, k, dtype=torch.bool, device=memory.device)
        history = torch.zeros(b, k, 0, dtype=torch.long, device=memory.device)
        attention = memory.new_zeros(b, k, 0, n)
        offsets = (torch.arange(b, device=memory.device) * k).unsqueeze(1)
        for _ in range(max_length + 1):
            logits, weights, state = self.step(words, state, memory)
            log_p = F.log_softmax(logits.float(), -1).view(b, k, -1)
            # a finished caption continues only with padding, at no cost
            finished = torch.full_like(log_p[0, 0], float("-inf"))
            finished[pad] = 0.0
            log_p = torch.where(done.unsqueeze(-1), finished, log_p)
            candidates = (scores.unsqueeze(-1) + log_p).view(b, -1)
            scores, flat = candidates.topk(k, -1)
            origin, words = flat // log_p.shape[-1], flat % log_p.shape[-1]
            rows = (offsets + origin).view(-1)
            state = tuple(s[rows] for s in state)
            history = torch.cat([history.gather(1, origin.unsqueeze(-1).expand_as(history)),
                                 words.unsqueeze(-1)], -1)
            picked = weights.view(b, k, n).gather(1, origin.unsqueeze(-1).expand(b, k, n))
            attention = torch.cat([attention.gather(1, origin[..., None, None].expand_as(attention)),
                                   picked.unsqueeze(2)], 2)
            done = done.gather(1, origin)
            lengths = lengths.gather(1, origin) + (~done).float()
            done = done | (words == eos)
            words = words.view(-1)
            if done.all():
                break
        best = (scores / lengths.clamp_min(1)).argmax(-1)
        pick = best.view(b, 1, 1)
        tokens = history.gather(1, pick.expand(b, 1, history.shape[-1])).squeeze(1)
        weights = attention.gather(1, pick.unsqueeze(-1).expand(b, 1, *attention.shape[2:])).squeeze(1)
        real = torch.cumsum((tokens == eos).long(), 1) - (tokens == eos).long() == 0  # up to the first eos
        self.align.finish(weights, real & (tokens != pad))
        return tokens, weights


class Captioner(nn.Module):
    """An encoder (image -> region grid) and an ``AttentionDecoder``; subclasses make the encoder."""

    slots = ("feature", "align")
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # normalisation the encoder expects
    coordinates = False  # append each region's (row, column), scaled to [-1, 1], to its features

    def encoder_output(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Region features (B, H·W, C [+ 2]) in raster order and the grid (H, W)."""
        fmap = self.encoder_output(images)
        b, c, h, w = fmap.shape
        regions = fmap.flatten(2).transpose(1, 2)
        if self.coordinates:
            rows, cols = torch.meshgrid(torch.linspace(-1, 1, h, device=fmap.device),
                                        torch.linspace(-1, 1, w, device=fmap.device), indexing="ij")
            where = torch.stack([rows, cols], -1).reshape(1, h * w, 2).to(regions.dtype).expand(b, -1, -1)
            regions = torch.cat([regions, where], -1)
        return regions, (h, w)

    def forward(self, images: Tensor, inputs: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        memory, grid = self.encode(images)
        return self.decoder(memory, grid, inputs, steps)

    def generate(self, images: Tensor, bos: int, eos: int, pad: int, max_length: int,
                 beam: int = 1) -> tuple[Tensor, Tensor, tuple[int, int]]:
        memory, grid = self.encode(images)
        tokens, weights = self.decoder.generate(memory, grid, bos, eos, pad, max_length, beam)
        return tokens, weights, grid


def _check_decoder(embed_dim: int, hidden_dim: int, dropout: float) -> None:
    if embed_dim < 1 or hidden_dim < 1:
        raise ValueError(f"embed_dim and hidden_dim must be at least 1, got {embed_dim} and {hidden_dim}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")


class CNNCaptioner(Captioner):
    """A small residual CNN encoder trained from scratch (a 3×3 stem, of stride 2 by default; stages of basic
    blocks, each later stage halving the grid; a ``feature`` slot in every block), then the attention decoder.

    Keep its receptive field small against the distance between objects when attention maps are to be read
    as "where the model looked": with a field that spans half the image, every region describes its neighbours
    too, and the attention can settle anywhere near an object. ``coordinates`` appends each region's position
    to its features, so that what the decoder attends to also tells it where that is (left of, above)."""

    def __init__(self, vocab_size: int, in_channels: int = 3, stages: list[int] = (1,), widths: list[int] = (48,),
                 stem_stride: int = 2, pool: int = 2, coordinates: bool = True, embed_dim: int = 64,
                 hidden_dim: int = 128, dropout: float = 0.3, initial_state: str = "mean",
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        if len(stages) != len(widths) or not stages:
            raise ValueError(f"stages {list(stages)} and widths {list(widths)} must be non-empty and equally long")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if pool < 1:
            raise ValueError(f"pool must be at least 1, got {pool}")
        _check_decoder(embed_dim, hidden_dim, dropout)
        slots = slots or {}
        feature = fill(slots, "feature", identity_factory)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, (depth, width) in enumerate(zip(stages, widths)):
            for i in range(depth):
                blocks.append(BasicBlock(channels, width, 2 if stage > 0 and i == 0 else 1, feature, "B"))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(pool) if pool > 1 else nn.Identity()  # coarser regions, no wider field of view
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.coordinates = coordinates
        self.decoder = AttentionDecoder(vocab_size, channels + 2 * coordinates, embed_dim, hidden_dim, dropout,
                                        fill(slots, "align", MeanAlign), initial_state)

    def encoder_output(self, images: Tensor) -> Tensor:
        return self.pool(self.blocks(self.stem(images)))


class FeatureAfter(nn.Sequential):
    """A torchvision block's last BatchNorm followed by the feature slot: the slot then sits on the residual
    branch just before the addition, where the other backbones put it, and the pretrained weights keep their
    place (``bn2`` becomes ``bn2.0``)."""


def _torchvision_weights(arch: str, weights: str) -> Path:
    """The file of ``backbone.weights``: a path, or ``imagenet`` for torchvision's ImageNet weights, which must
    already be in torch's cache (``~/.cache/torch/hub/checkpoints``): nothing is ever downloaded."""
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist")
        return path
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise ValueError(f"weights=imagenet needs {path}, which is not there; fetch it once with "
                         f"`python -c \"import torchvision; torchvision.models.{arch}(weights='DEFAULT')\"` on a "
                         f"machine with network, or give backbone.weights=PATH")
    return path


class ResNetCaptioner(Captioner):
    """torchvision's ImageNet ResNet as the encoder (the 7×7 stem, max-pool and four stages; ``stages=3`` stops
    after the third for a grid twice as fine, 14×14 at 224 pixels, as in Show, Attend and Tell's 14×14 regions),
    a ``feature`` slot after the last BatchNorm of every block, then the attention decoder.

    ``weights``: null (random initialisation), ``imagenet`` (torchvision's weights from torch's local cache; never
    downloaded) or a path to a state dict. ``freeze`` keeps the pretrained convolutions and their BatchNorm
    statistics fixed; attention modules in the feature slots still train.
    """

    def __init__(self, vocab_size: int, in_channels: int = 3, arch: str = "resnet18", stages: int = 4,
                 weights: str | None = None, freeze: bool = False, coordinates: bool = False, embed_dim: int = 256,
                 hidden_dim: int = 512, dropout: float = 0.5, initial_state: str = "mean",
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        import torchvision

        if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise ValueError(f"arch must be one of resnet18, resnet34, resnet50, resnet101, resnet152, not {arch!r}")
        if stages not in (3, 4):
            raise ValueError(f"stages must be 3 or 4, got {stages}")
        if in_channels != 3:
            raise ValueError(f"torchvision's ResNets take RGB images, got {in_channels} channels")
        _check_decoder(embed_dim, hidden_dim, dropout)
        net = getattr(torchvision.models, arch)(weights=None)
        if weights is not None:
            state = torch.load(_torchvision_weights(arch, weights), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            self.input_stats = IMAGENET_STATS
        layers = [net.layer1, net.layer2, net.layer3, net.layer4][:stages]
        self.encoder = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *layers)
        self.freeze = freeze
        if freeze:
            self.encoder.requires_grad_(False)
        slots = slots or {}
        feature = slots.get("feature")
        if feature is not None:
            for layer in layers:
                for block in layer:
                    last = "bn3" if hasattr(block, "bn3") else "bn2"
                    norm = getattr(block, last)
                    setattr(block, last, FeatureAfter(norm, feature(norm.num_features)))
        channels = _out_channels(layers[-1])
        self.coordinates = coordinates
        self.decoder = AttentionDecoder(vocab_size, channels + 2 * coordinates, embed_dim, hidden_dim, dropout,
                                        fill(slots, "align", MeanAlign), initial_state)

    def train(self, mode: bool = True) -> ResNetCaptioner:
        super().train(mode)
        if self.freeze:  # frozen BatchNorm keeps the pretrained statistics
            for m in self.encoder.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def encoder_output(self, images: Tensor) -> Tensor:
        return self.encoder(images)


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last = block.bn3 if hasattr(block, "bn3") else block.bn2
    return (last[0] if isinstance(last, FeatureAfter) else last).num_features
