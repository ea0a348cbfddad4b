"""Text encoders for review rating: word embedding -> encoder over the tokens -> ``mixer`` slot -> ``pool`` slot.

Three encoders: a bidirectional GRU (the default), a convolutional one (parallel convolutions of several
widths, as in Kim 2014), and a small Transformer encoder. Every one takes token indices (B, N) and the
padding mask (B, N), True on real tokens, and gives one vector per review (B, out_dim). Padding never
influences a real position: the GRU reads each review backwards from its own last token, convolutions see
zeros beyond it, the Transformer masks it as a key, and the mixer and pool slots get the mask.

Slots:

* ``mixer`` (B, N, D), mask -> (B, N, D), after the encoder, in a pre-norm residual sublayer as in the
  Transformer (x + mixer(LayerNorm(x))). Empty by default: nothing is added.
* ``pool`` (B, N, D), mask -> (B, out_dim): the readout; masked mean by default.
* ``model``: a whole-model variant (D-Attn) that brings its own encoder and readout. It takes the word
  embeddings (B, N, E) and the mask and gives (B, out_dim); it replaces the encoder, mixer and pool, so
  only the backbone's embedding (``embed_dim``, ``dropout``) is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SlotFactory, pool_readout


class MixerBlock(nn.Module):
    """A token mixer in a pre-norm residual sublayer: x + dropout(mixer(LayerNorm(x), mask))."""

    def __init__(self, width: int, mixer: SlotFactory, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mixer = mixer(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return x + self.dropout(self.mixer(self.norm(x), mask))


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of (B, N, D) within its own length; padding stays at the end. Its own inverse."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.where(t < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class BiGRUEncoder(nn.Module):
    """Stacked bidirectional GRU. The backward direction runs over each review reversed within its length,
    so it starts at the review's last real token whatever the padding (no packing, no host sync)."""

    def __init__(self, embed_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden and layers must be positive, got {hidden} and {layers}")
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        width = embed_dim
        for _ in range(layers):
            self.forward_layers.append(nn.GRU(width, hidden, batch_first=True))
            self.backward_layers.append(nn.GRU(width, hidden, batch_first=True))
            width = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        self.out_dim = width

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1)
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i:
                x = self.dropout(x)
            ahead, _ = fwd(x)
            behind, _ = bwd(reverse_padded(x, lengths))
            x = torch.cat([ahead, reverse_padded(behind, lengths)], -1)
        return x


class ConvEncoder(nn.Module):
    """Parallel 1-D convolutions of several widths over the embeddings, ReLU, concatenated per position
    (Kim 2014's sentence CNN without its max-over-time, which is the ``pool`` slot's job here)."""

    def __init__(self, embed_dim: int, widths: list[int], filters: int) -> None:
        super().__init__()
        if not widths or min(widths) < 1 or filters < 1:
            raise ValueError(f"widths must be positive and filters at least 1, got {list(widths)} and {filters}")
        self.widths = list(widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, w) for w in self.widths)
        self.out_dim = filters * len(widths)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        # "same" padding, the extra zero of an even width on the right: one output per token
        out = [torch.relu(conv(F.pad(x, ((w - 1) // 2, w // 2)))) for w, conv in zip(self.widths, self.convs)]
        return torch.cat(out, 1).transpose(1, 2) * mask.unsqueeze(-1)


def sinusoidal_positions(n: int, dim: int, device: torch.device) -> Tensor:
    """The fixed sine/cosine position code of Vaswani et al. 2017, (n, dim)."""
    position = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(n, dim, device=device)
    code[:, 0::2] = torch.sin(position * frequency)
    code[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return code


class TransformerTextEncoder(nn.Module):
    """A small pre-norm Transformer encoder with sinusoidal positions; padding is masked as a key."""

    def __init__(self, embed_dim: int, heads: int, layers: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if heads < 1 or embed_dim % heads:
            raise ValueError(f"heads ({heads}) must divide embed_dim ({embed_dim})")
        layer = nn.TransformerEncoderLayer(embed_dim, heads, ff_dim, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False)
        self.scale = math.sqrt(embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * self.scale + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        return self.layers(x, src_key_padding_mask=~mask) * mask.unsqueeze(-1)


class TextBackbone(nn.Module):
    """Embedding -> encoder -> optional mixer sublayer -> pool, or embedding -> a whole-network variant."""

    slots = ("mixer", "pool", "network")

    def __init__(self, vocab_size: int, embed_dim: int, dropout: float, encoder: Callable[[], nn.Module],
                 slots: dict[str, SlotFactory] | None, project_readout: bool = False) -> None:
        super().__init__()
        slots = slots or {}
        if vocab_size < 3 or embed_dim < 1:
            raise ValueError(f"vocab_size must be at least 3 and embed_dim positive, got {vocab_size}, {embed_dim}")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.network: nn.Module | None = None
        if "network" in slots:
            self.network = slots["network"](embed_dim)
            self.out_dim: int = self.network.out_dim
            return
        self.encoder = encoder()
        width = self.encoder.out_dim
        self.mixer = MixerBlock(width, slots["mixer"], dropout) if "mixer" in slots else None
        self.pool = pool_readout(slots, width, project_readout)
        self.out_dim = self.pool.out_dim

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        x = self.dropout(self.embed(tokens)) * mask.unsqueeze(-1)  # padding embeds to exact zeros
        if self.network is not None:
            return self.network(x, mask)
        x = self.encoder(x, mask)
        if self.mixer is not None:
            x = self.mixer(x, mask)
        return self.pool(x, mask)


class BiGRU(TextBackbone):
    """Embedding + bidirectional GRU (out width 2·hidden), the default text backbone."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 64, layers: int = 1,
                 dropout: float = 0.2, project_readout: bool = False,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__(vocab_size, embed_dim, dropout, lambda: BiGRUEncoder(embed_dim, hidden, layers, dropout),
                         slots, project_readout)


class TextCNN(TextBackbone):
    """Embedding + parallel convolutions of several widths (out width filters·len(widths))."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, widths: tuple[int, ...] = (3, 4, 5),
                 filters: int = 100, dropout: float = 0.2, project_readout: bool = False,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__(vocab_size, embed_dim, dropout, lambda: ConvEncoder(embed_dim, list(widths), filters), slots,
                         project_readout)


class TransformerText(TextBackbone):
    """Embedding + a small Transformer encoder (out width embed_dim)."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, heads: int = 4, layers: int = 2, ff_dim: int = 256,
                 dropout: float = 0.1, project_readout: bool = False,
                 slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__(vocab_size, embed_dim, dropout,
                         lambda: TransformerTextEncoder(embed_dim, heads, layers, ff_dim, dropout), slots,
                         project_readout)
