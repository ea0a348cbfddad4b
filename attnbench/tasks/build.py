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
from ..plugins import entry_points, import_target, plugin_backbone, plugin_variant, variant_from
from ..values import check_values


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
            raise UserError(f"{label} has no key {key!r}{hint}. Its keys: {', '.join(allowed) or 'none'}")


def construct(fn: Callable, kwargs: dict[str, Any], label: str, *args: Any, **fixed: Any) -> Any:
    """Call ``fn(*args, **fixed, **kwargs)``; an impossible hyperparameter becomes a one-line UserError."""
    check_keys(kwargs, [p for p in parameters(fn) if p not in fixed], label)
    try:
        return fn(*args, **fixed, **kwargs)
    except ValueError as e:
        raise UserError(f"{label}: {e}") from e


# a variant's switch for its own attention: false keeps everything else (classifier, losses, fusion) and turns the
# weighting off, the matched control that compare measures the variant against
CONTROL_KEY = "reweight"


def controlled_variants() -> list[str]:
    """The variants whose attention ``model.reweight=false`` turns off."""
    return [v.name for v in VARIANTS.values() if any(CONTROL_KEY in parameters(c) for c in v.modules.values())]


def variant(name: str) -> Variant:
    """A catalogue variant, else an installed plugin's (which may refuse with its own one line)."""
    if name in VARIANTS:
        return VARIANTS[name]
    found = plugin_variant(name)
    if found is None:
        near = difflib.get_close_matches(name, [*VARIANTS, *entry_points("attnbench.variants")], n=1)
        hint = f" Did you mean model={near[0]}?" if near else ""
        raise UserError(f"unknown model {name!r}.{hint} See `attnbench list` for every variant")
    return found


def custom_variant(cfg: dict[str, Any]) -> Variant:
    """``model=custom``: the class ``model.target`` names, in the slot ``model.slot`` names (or declares)."""
    target, slot = cfg.pop("target", None), cfg.pop("slot", None)
    if not target:
        raise UserError("model=custom needs model.target=pkg.module:Class (and model.slot=feature|mixer|...)")
    return variant_from("custom", import_target(str(target), "model.target"), "model=custom", slot)


def families_fitting(v: Variant, family_slots: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Task families with a slot this variant fills (``none`` fits all)."""
    return [family for family, slots in family_slots.items() if not v.slots or set(v.slots) & set(slots)]


def attention_slots(model_cfg: DictConfig | Mapping, offered: tuple[str, ...], where: str,
                    family_slots: Mapping[str, tuple[str, ...]]) -> dict[str, SlotFactory]:
    """The slot factories of the chosen variant, for the slot kinds the backbone offers.

    A variant that fills no offered slot is refused with the slot it needs and the tasks it fits.
    """
    cfg = plain(model_cfg)
    name = cfg.pop("name")
    v = custom_variant(cfg) if name == "custom" else variant(name)
    if CONTROL_KEY in cfg and not any(CONTROL_KEY in parameters(cls) for cls in v.modules.values()):
        raise UserError(f"model={v.name} has no attention of its own for model.{CONTROL_KEY} to turn off (the switch "
                        f"of the matched control of {', '.join(controlled_variants())}); leave it out")
    if not v.slots:
        check_keys(cfg, [], f"model={v.name}")
        return {}
    usable = [kind for kind in v.slots if kind in offered]
    if not usable:
        fits = families_fitting(v, family_slots)
        fitting = f"the {', '.join(fits)} task(s)" if fits else f"no task yet (none has a {' or '.join(v.slots)} slot)"
        raise UserError(f"model={v.name} fills the {' or '.join(v.slots)} slot, which {where} lacks "
                        f"(it has {', '.join(offered)}); {v.name} fits {fitting}")
    cls = v.modules[usable[0]]
    label = f"model={v.name}"
    # sizes, which the backbone or task gives, are positional-only and so no keys: `parameters` leaves them out
    check_keys(cfg, parameters(cls), label)
    check_values(cls, cfg, label)
    return {usable[0]: functools.partial(_build_module, cls, cfg, label)}


def variant_classes(model_cfg: DictConfig | Mapping) -> list[type]:
    """The classes the configured variant fills its slots with (none: no class)."""
    cfg = plain(model_cfg)
    name = cfg.pop("name")
    return list((custom_variant(cfg) if name == "custom" else variant(name)).modules.values())


def _build_module(cls: type, kwargs: dict[str, Any], label: str, *widths: int) -> Any:
    try:
        return construct(cls, kwargs, label, *widths)
    except TypeError as e:  # a plugin's constructor that wants a key the config lacks, or rejects one it has
        raise UserError(f"{label}: {cls.__name__}({', '.join(map(str, widths))}, **{kwargs}) fails: {e}") from e


def backbone_class(name: str, label: str) -> type:
    if name in BACKBONES:
        return BACKBONES[name]
    found = plugin_backbone(name)
    if found is None:
        known = [*BACKBONES, *entry_points("attnbench.backbones")]
        raise UserError(f"{label} names backbone class {name!r}; known: {', '.join(known)}")
    return found


def backbone_slots(cls: type, settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The slot kinds a backbone offers with these settings: a wrapper of other networks (``timm``) offers
    the feature slot only for families with an attention hook, so it answers per configuration."""
    offered = getattr(cls, "offered_slots", None)
    return tuple(offered(settings)) if offered else tuple(cls.slots)


def fits_task(cls: type, name: str, task: type) -> bool:
    """A task's own backbones, or a plugin backbone that names the task's family in its ``tasks``."""
    return name in task.backbones or task.family in getattr(cls, "tasks", ())


def build_backbone(backbone_cfg: DictConfig | Mapping, slots: dict[str, SlotFactory], label: str,
                   **fixed: Any) -> Any:
    cfg = plain(backbone_cfg)
    return construct(backbone_class(cfg.pop("name"), label), cfg, label, slots=slots, **fixed)


def split_seed_of(cfg: DictConfig, loader: Callable, label: str) -> int:
    """The split a run draws under ``split_by_seed=true``: its own seed, so that every variant at one seed
    shares the split; refused for a data set whose loader has a fixed split."""
    if "split_seed" not in parameters(loader):
        raise UserError(f"split_by_seed=true: {label} has a fixed split (its loader takes no split_seed); "
                        f"leave split_by_seed=false")
    return int(cfg.seed)


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
