"""Any timm model as a backbone (``backbone=timm backbone.model_name=resnet50``), with attnbench's slots.

* ``pool``: timm's global pooling and classifier are removed (``num_classes=0, global_pool=""``); the pool
  slot reads the final feature map as tokens, so ``model=ffattn`` replaces the average pooling. Without a
  pool variant it is mean pooling, which is timm's own average pooling.
* ``feature``: where a family has its own attention hook, attnbench's feature variant fills it: ``attn_layer``
  of every block in the ResNet family (ResNet, ResNeXt, SE-/ECA-ResNet, ResNet-D...). Families without a
  hook offer only the pool slot, and a feature variant is refused before anything is built.

timm is an optional dependency (``pip install 'attnbench[timm]'``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import UserError
from .base import DEFAULT_POOL, SlotFactory, fill

# timm model modules whose blocks take ``attn_layer`` (through ``block_args``): the ResNet family
HOOKED_MODULES = ("resnet",)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError("backbone=timm needs timm, which is not installed: pip install 'attnbench[timm]'") from None
    return timm


def _feature_layer(factory: SlotFactory, channels: int, **_: Any) -> nn.Module:
    # timm calls attn_layer(channels, **extras) (device, dtype): the variant's own config sets everything else
    return factory(channels)


class TimmBackbone(nn.Module):
    """``timm.create_model(model_name)`` without its head, its features pooled by the pool slot."""

    slots = ("feature", "pool")

    def __init__(self, in_channels: int, model_name: str = "resnet18", pretrained: bool = False,
                 drop_path_rate: float = 0.0, slots: dict[str, SlotFactory] | None = None) -> None:
        super().__init__()
        timm = _timm()
        if model_name not in timm.list_models(model_name):
            raise ValueError(f"timm has no model {model_name!r} (timm.list_models('*{model_name[:6]}*') lists "
                             f"similar names)")
        slots = slots or {}
        extra: dict[str, Any] = {}
        if "feature" in slots:
            if not has_attention_hook(model_name):
                raise ValueError(f"timm model {model_name!r} has no attention hook for a feature variant "
                                 f"(the ResNet family has one); use a pool variant")
            extra["block_args"] = {"attn_layer": functools.partial(_feature_layer, slots["feature"])}
        self.net = timm.create_model(model_name, pretrained=pretrained, num_classes=0, global_pool="",
                                     in_chans=in_channels, drop_path_rate=drop_path_rate, **extra)
        self.pool = fill(slots, "pool", DEFAULT_POOL)(self.net.num_features)
        self.out_dim: int = self.pool.out_dim

    @classmethod
    def offered_slots(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        name = settings.get("model_name", "resnet18")
        return cls.slots if has_attention_hook(name) else ("pool",)

    def feature_map(self, x: Tensor) -> Tensor:
        return self.net.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.feature_map(x)
        if fmap.dim() == 4:  # a CNN's (B, C, H, W) map: its positions are the tokens
            b, c, h, w = fmap.shape
            return self.pool(fmap.flatten(2).transpose(1, 2), grid=(h, w))
        return self.pool(fmap)  # a transformer's (B, N, D) tokens


def has_attention_hook(model_name: str) -> bool:
    timm = _timm()
    return timm.models.is_model_in_modules(model_name, list(HOOKED_MODULES))
