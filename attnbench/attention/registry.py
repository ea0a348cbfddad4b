"""The catalogue: variant name -> the module that fills each slot kind it fits.

A variant usually fills one slot kind; a few fill two (``gate`` is a channel gate on images and a token gate
on sequences). ``none`` fills nothing: every slot keeps its backbone's default (identity, mean pooling).
A whole-network variant (``dattn``) fills the ``network`` slot: it replaces a text backbone after its embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import align, feature, mixer, network, pair, pool

SLOT_KINDS = ("feature", "mixer", "pool", "align", "pair", "network")


@dataclass(frozen=True)
class Variant:
    name: str
    modules: dict[str, type[nn.Module]]  # slot kind -> class, in order of preference

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(self.modules)

    @property
    def paper(self) -> str:
        first = next(iter(self.modules.values()), None)
        return getattr(first, "paper", "") if first else "no attention: the backbone's plain defaults"


def _variants(*entries: tuple[str, dict[str, type[nn.Module]]]) -> dict[str, Variant]:
    variants: dict[str, Variant] = {}
    for name, modules in entries:
        if name in variants:  # two entries for one name: merge them into one line, slot kind by slot kind
            raise ValueError(f"variant {name!r} is registered twice; give it one entry with every slot kind")
        variants[name] = Variant(name, modules)
    return variants


VARIANTS: dict[str, Variant] = _variants(
    ("none", {}),
    ("se", {"feature": feature.SqueezeExcite}),
    ("cbam", {"feature": feature.CBAM}),
    ("sum", {"pool": pool.SumPool}),
    ("mean", {"pool": pool.MeanPool}),
    ("max", {"pool": pool.MaxPool}),
    ("kmax", {"pool": pool.KMaxPool}),
    ("chunkmax", {"pool": pool.ChunkMaxPool}),
    ("stochastic", {"pool": pool.StochasticPool}),
    ("deepsets", {"pool": pool.DeepSets}),
    ("ffattn", {"pool": pool.FeedForwardAttention}),
    ("multiquery", {"pool": pool.MultiQueryAttention}),
    ("pyramid", {"pool": pool.PyramidPool}),
    ("dual", {"feature": feature.DualAttention}),
    ("self", {"mixer": mixer.SelfAttention}),
    ("mha", {"mixer": mixer.MultiHeadAttention}),
    ("relpos", {"mixer": mixer.RelativePositionAttention}),
    ("headprune", {"mixer": mixer.HeadPruneAttention}),
    ("coda", {"mixer": mixer.CompositionalDeAttention}),
    ("gate", {"feature": feature.Gate, "mixer": mixer.TokenGate}),  # image form, token form
    ("soft", {"align": align.SoftAttention}),
    ("hard", {"align": align.HardAttention}),
    ("global", {"align": align.GlobalAttention}),
    ("local", {"align": align.LocalAttention}),
    ("coattn", {"pair": pair.CoAttention}),
    ("cross", {"pair": pair.CrossAttention}),
    ("dattn", {"network": network.DAttn}),
)

