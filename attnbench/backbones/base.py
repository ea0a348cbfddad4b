"""What every backbone shares: slots are filled by factories that take the channel count."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..attention.pool import MeanPool

SlotFactory = Callable[[int], nn.Module]


def identity_factory(channels: int) -> nn.Module:
    return nn.Identity()


def fill(slots: dict[str, SlotFactory], kind: str, default: SlotFactory) -> SlotFactory:
    """The factory for one slot kind: the variant's when it fills that kind, else the backbone default."""
    return slots.get(kind, default)


DEFAULT_POOL: SlotFactory = MeanPool
