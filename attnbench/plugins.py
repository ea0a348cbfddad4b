"""Variants and backbones from other packages, without editing attnbench.

* Installed: a distribution declares entry points in ``attnbench.variants`` (``myattn = "my_pkg.attn:MyAttention"``)
  or ``attnbench.backbones``. A variant entry point names an ``nn.Module`` class whose ``slot`` attribute is a
  slot kind (or a tuple of them), or a ``Variant`` (slot kind -> class). Its default config, when the package
  ships one, is ``<top package>/conf/model/<name>.yaml`` (backbones: ``conf/backbone/<name>.yaml``), the layout
  ``hydra.searchpath=[pkg://my_pkg.conf]`` reads too.
* One-off: ``model=custom model.target=my_pkg.attn:MyAttention model.slot=feature`` (or ``path/to/file.py:Class``).

A plugin that does not load, or that takes a catalogue name, costs that plugin one warning line where every
plugin is listed (``attnbench list``) and one error line where it is used; nothing else notices it. Plugin
code is imported only when a run or the list asks for it: composing configs (``register_configs``) reads
entry-point metadata and YAML files only, so a typo is still reported before torch loads.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

VARIANT_GROUP = "attnbench.variants"
BACKBONE_GROUP = "attnbench.backbones"
CONFIG_GROUPS = {VARIANT_GROUP: "model", BACKBONE_GROUP: "backbone"}


@functools.cache
def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """Name -> entry point; a distribution found twice on the path (an editable install beside a copy) once."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{ep.value} ({dist.name} {dist.version})" if dist is not None else ep.value


def _default_config(ep: importlib.metadata.EntryPoint, group: str) -> Path | None:
    """``<top package>/conf/<group>/<name>.yaml``, found without running the package's code."""
    try:
        spec = importlib.util.find_spec(ep.module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "conf" / group / f"{ep.name}.yaml"
    return path if path.is_file() else None


def register_configs(conf: Path) -> None:
    """Give every plugin a config in its group, so ``model=myattn`` composes: the YAML it ships, else just its
    name. Names the catalogue has are left to the catalogue (the clash is reported when the plugin loads)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for group, config_group in CONFIG_GROUPS.items():
        for name, ep in entry_points(group).items():
            if (conf / config_group / f"{name}.yaml").exists():
                continue
            path = _default_config(ep, config_group)
            try:
                node = OmegaConf.to_container(OmegaConf.load(path)) if path else {}
            except Exception:  # a malformed YAML: the plugin composes with its name alone and says so when used
                node = {}
            store.store(group=config_group, name=name, node={**node, "name": name}, provider=origin(ep))


def import_target(target: str, label: str) -> Any:
    """The object ``pkg.mod:Name`` or ``path/to/file.py:Name`` names, or a one-line UserError."""
    from .errors import UserError

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{label}: {target!r} is not of the form pkg.module:Class (or path/to/file.py:Class)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise UserError(f"{label}: {path} does not exist")
            module = sys.modules.get(f"attnbench_custom.{path.stem}")
            if module is None:
                spec = importlib.util.spec_from_file_location(f"attnbench_custom.{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # the user's module: any error in it (an exit too) is theirs, in one line
        raise UserError(f"{label}: cannot import {module_name}: {type(e).__name__}: {_first_line(e)}") from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{label}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _first_line(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"it calls sys.exit({e.code!r}) when imported"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def variant_from(name: str, obj: Any, label: str, slot: str | None = None) -> Any:
    """A ``Variant`` from a plugin's object: a Variant as it is (renamed), or a module class with its slot
    kinds (``slot`` given on the command line wins over the class's own ``slot`` attribute)."""
    from torch import nn

    from .attention import SLOT_KINDS, Variant
    from .errors import UserError

    if isinstance(obj, Variant):
        return Variant(name, dict(obj.modules))
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UserError(f"{label}: {getattr(obj, '__name__', repr(obj))} is not an nn.Module class")
    declared = slot if slot is not None else getattr(obj, "slot", None)
    kinds = (declared,) if isinstance(declared, str) else tuple(declared or ())
    if not kinds:
        raise UserError(f"{label}: {obj.__name__} declares no slot kind; set its `slot` attribute "
                        f"or model.slot (one of {', '.join(SLOT_KINDS)})")
    if "model" in kinds:  # the whole-network slot was called model, which is also the variant group's name
        _deprecated_once(f"{label}: slot kind model is now network (the old name goes in 0.3)")
        kinds = tuple("network" if k == "model" else k for k in kinds)
    for kind in kinds:
        if kind not in SLOT_KINDS:
            raise UserError(f"{label}: slot kind {kind!r} does not exist; choose one of {', '.join(SLOT_KINDS)}")
    if not any(p.kind == p.POSITIONAL_ONLY for p in inspect.signature(obj.__init__).parameters.values()):
        raise UserError(f"{label}: {obj.__name__}'s sizes must be positional-only, so they are no config keys: "
                        f"def __init__(self, channels, /, ...)")
    return Variant(name, {kind: obj for kind in kinds})


@functools.cache
def _deprecated_once(message: str) -> None:
    from .track.console import deprecated

    deprecated(message)


@functools.cache
def plugin_variant(name: str) -> Any:
    """The installed plugin variant ``name`` (loaded once per process); None when no plugin has that name.
    A plugin that does not load raises its one-line UserError."""
    from .attention import VARIANTS

    found = _plugin(VARIANT_GROUP, name, "variant", VARIANTS)
    return variant_from(name, *found) if found else None


@functools.cache
def plugin_backbone(name: str) -> type | None:
    """The installed plugin backbone class ``name``; None when no plugin has that name."""
    from torch import nn

    from .backbones import BACKBONES
    from .errors import UserError

    found = _plugin(BACKBONE_GROUP, name, "backbone", BACKBONES)
    if found is None:
        return None
    cls, label = found
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or not hasattr(cls, "slots"):
        raise UserError(f"{label}: {cls!r} is not an nn.Module class with a `slots` attribute")
    return cls


def _plugin(group: str, name: str, kind: str, builtin: Any) -> tuple[Any, str] | None:
    """(the loaded object of entry point ``name``, the label that names it), or None when no plugin has that
    name; a plugin named like one of attnbench's own is refused."""
    from .errors import UserError

    ep = entry_points(group).get(name)
    if ep is None:
        return None
    label = f"plugin {kind} {name!r} from {origin(ep)}"
    if name in builtin:
        raise UserError(f"{label} is ignored: attnbench has a {kind} of that name; rename its entry point")
    return _load(ep, label), label


def _load(ep: importlib.metadata.EntryPoint, label: str) -> Any:
    from .errors import UserError

    try:
        return ep.load()
    # a broken plugin must cost only itself: whatever it raises becomes its one line, a sys.exit() at import too
    # (else it would end attnbench with its status: check-variant's 0 would read as every check passed)
    except (Exception, SystemExit) as e:
        raise UserError(f"{label} does not load: {type(e).__name__}: {_first_line(e)}") from e


def loaded(group: str) -> dict[str, Any]:
    """Every plugin of a group that loads, by name; each one that does not costs one warning line."""
    from .errors import UserError
    from .track.console import warn

    load = plugin_variant if group == VARIANT_GROUP else plugin_backbone
    out: dict[str, Any] = {}
    for name in entry_points(group):
        try:
            out[name] = load(name)
        except UserError as e:
            warn(str(e))
    return out
