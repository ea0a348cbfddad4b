"""Building a model from config: keys checked against the signature they configure, variants matched to slots.

``data``, ``backbone`` and ``model`` configs differ per choice, so their schema is the signature of the
loader or module they configure: a key that is not a parameter there is refused with the list of keys that
are (and the nearest one), before anything is loaded or built.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..attention import VARIANTS, Variant
from ..backbones import BACKBONES, SlotFactory
from ..errors import UserError
from .values import check_values


def plain(cfg: DictConfig | Mapping | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def parameters(fn: Callable) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_keys(keys: Iterable[str], allowed: Iterable[str], label: str) -> None:
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {label.split('=')[0]}.{near[0]}?" if near else ""
            raise UserError(f"{label} has no key {key!r}{hint} Its keys: {', '.join(allowed) or 'none'}")


def construct(fn: Callable, kwargs: dict[str, Any], label: str, *args: Any, **fixed: Any) -> Any:
    """Call ``fn(*args, **fixed, **kwargs)``; an impossible hyperparameter becomes a one-line UserError."""
    check_keys(kwargs, [p for p in parameters(fn) if p not in fixed], label)
    try:
        return fn(*args, **fixed, **kwargs)
    except ValueError as e:
        raise UserError(f"{label}: {e}") from e


# slot kind -> how many leading constructor arguments are sizes given at build time, not config keys
SIZE_ARGUMENTS = {"pair": 2}  # the width and the number of positions of the maps


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        near = difflib.get_close_matches(name, list(VARIANTS), n=1)
        hint = f" Did you mean model={near[0]}?" if near else ""
        raise UserError(f"unknown model {name!r}.{hint} See `attnbench list` for every variant")
    return VARIANTS[name]


def families_fitting(v: Variant, family_slots: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Task families with a slot this variant fills (``none`` fits all)."""
    return [family for family, slots in family_slots.items() if not v.slots or set(v.slots) & set(slots)]


def attention_slots(model_cfg: DictConfig | Mapping, offered: tuple[str, ...], where: str,
                    family_slots: Mapping[str, tuple[str, ...]]) -> dict[str, SlotFactory]:
    """The slot factories of the chosen variant, for the slot kinds the backbone offers.

    A variant that fills no offered slot is refused with the slot it needs and the tasks it fits.
    """
    cfg = plain(model_cfg)
    v = variant(cfg.pop("name"))
    if not v.slots:
        return {}
    usable = [kind for kind in v.slots if kind in offered]
    if not usable:
        fits = families_fitting(v, family_slots)
        fitting = f"the {', '.join(fits)} task(s)" if fits else f"no task yet (none has a {' or '.join(v.slots)} slot)"
        raise UserError(f"model={v.name} fills the {' or '.join(v.slots)} slot, which {where} lacks "
                        f"(it has {', '.join(offered)}); {v.name} fits {fitting}")
    cls = v.modules[usable[0]]
    label = f"model={v.name}"
    # the leading parameters are sizes the backbone or task gives: the width (a pair module: also positions)
    check_keys(cfg, parameters(cls)[SIZE_ARGUMENTS.get(usable[0], 1):], label)
    check_values(cls, cfg, label)
    return {usable[0]: functools.partial(_build_module, cls, cfg, label)}


def _build_module(cls: type, kwargs: dict[str, Any], label: str, *widths: int) -> Any:
    return construct(cls, kwargs, label, *widths)


def backbone_class(name: str, label: str) -> type:
    if name not in BACKBONES:
        raise UserError(f"{label} names backbone class {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(backbone_cfg: DictConfig | Mapping, slots: dict[str, SlotFactory], label: str,
                   **fixed: Any) -> Any:
    cfg = plain(backbone_cfg)
    return construct(backbone_class(cfg.pop("name"), label), cfg, label, slots=slots, **fixed)


def data_kwargs(data_cfg: DictConfig | Mapping, loader: Callable, task_keys: Iterable[str],
                label: str) -> tuple[dict, dict]:
    """Split a data config into the loader's keyword arguments and the task's own keys, refusing others."""
    cfg = plain(data_cfg)
    cfg.pop("name")
    cfg.pop("task", None)
    task_keys = list(task_keys)
    check_keys(cfg, [*parameters(loader), *task_keys], label)
    check_values(loader, {k: v for k, v in cfg.items() if k not in task_keys}, label)
    task = {k: cfg.pop(k) for k in task_keys if k in cfg}
    return cfg, task
