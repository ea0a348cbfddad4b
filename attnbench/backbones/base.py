"""What every backbone shares: slots are filled by factories that take the channel count."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..attention.pool import MeanPool

SlotFactory = Callable[[int], nn.Module]


def identity_factory(channels: int) -> nn.Module:
    return nn.Identity()


def fill(slots: dict[str, SlotFactory], kind: str, default: SlotFactory) -> SlotFactory:
    """The factory for one slot kind: the variant's when it fills that kind, else the backbone default."""
    return slots.get(kind, default)


DEFAULT_POOL: SlotFactory = MeanPool


class ProjectedReadout(nn.Module):
    """A pool whose readout is wider than the features it pools (k-max, chunk-max, multi-query, pyramid,
    stochastic with bins), followed by one linear layer back to that width: every pool then feeds the task a
    head of the same size, so a comparison of pools is not a comparison of head sizes."""

    def __init__(self, pool: nn.Module, width: int) -> None:
        super().__init__()
        self.pool = pool
        self.project = nn.Linear(pool.out_dim, width)
        self.out_dim = width

    def forward(self, x: Tensor, mask: Tensor | None = None, grid: tuple[int, int] | None = None) -> Tensor:
        return self.project(self.pool(x, mask, grid=grid))


def pool_readout(slots: dict[str, SlotFactory], width: int, project: bool,
                 default: SlotFactory = DEFAULT_POOL) -> nn.Module:
    """The pool slot's module over ``width`` features; with ``project``, a readout wider than ``width`` is
    projected back to it (a pool whose readout already has that width is left as it is)."""
    pool = fill(slots, "pool", default)(width)
    return ProjectedReadout(pool, width) if project and pool.out_dim != width else pool
