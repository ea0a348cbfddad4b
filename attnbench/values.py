"""The values of every setting, checked in this one place before anything is loaded or built.

``data.*``, ``backbone.*`` and ``model.*`` keys: a setting's type is the type hint of the parameter it sets, in
the signature of the loader, backbone or attention module it configures (the same signature that says which
keys exist); its range, where it has one, is the entry of its name in ``BOUNDS`` (a name means the same thing
wherever it appears: ``val_fraction`` is a fraction of a split in every loader, ``heads`` a count in every
module). ``trainer.*``, ``logger.*`` and ``task.*`` keys: the schema's field declares what it accepts and its
range (``setting``). A value of the wrong type or out of range is refused with the key, what it accepts and
what it got.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError

MISSING = "???"  # OmegaConf's mark of a value the config must give (omegaconf.MISSING), without importing it here


@dataclass(frozen=True)
class Bound:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False  # high itself is refused

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        def show(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.high is None:
            if self.low == 0:
                return "positive" if self.low_open else "zero or positive"
            return f"{'greater than' if self.low_open else 'at least'} {show(self.low)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{show(self.low)}, {show(self.high)}{right}"


FRACTION = Bound(0, 1, high_open=True)  # a share of a split: 1 would leave nothing on the other side
PROBABILITY = Bound(0, 1, high_open=True)
COUNT = Bound(1)
POSITIVE = Bound(0, low_open=True)
NONNEGATIVE = Bound(0)
SEED = Bound(0, 2**32 - 1)  # numpy's seeds
OPEN_FRACTION = Bound(0, 1, low_open=True, high_open=True)
FACTOR = Bound(0, 1)


@dataclass(frozen=True)
class Pattern:
    """A string that must match ``regex``; ``text`` says what it accepts."""

    regex: str
    text: str


BOUNDS: dict[str, Bound] = {
    # data
    "val_fraction": FRACTION, "test_fraction": FRACTION,
    "train_size": COUNT, "val_size": COUNT, "test_size": COUNT, "limit": COUNT, "image_size": COUNT,
    "images_per_class": Bound(2), "captions_per_image": COUNT, "max_objects": COUNT, "min_tokens": COUNT,
    "max_tokens": COUNT, "channels": COUNT, "classes": Bound(2), "noise": NONNEGATIVE,
    "split_seed": SEED, "seed": SEED, "corpus_seed": SEED, "render_seed": SEED,
    "memory_budget_mb": NONNEGATIVE,
    # backbones and attention modules
    "dropout": PROBABILITY, "heads": COUNT, "reduction": COUNT, "k": COUNT, "r": COUNT, "d_a": COUNT,
    "hidden": COUNT, "hidden_dim": COUNT, "embed_dim": COUNT, "ff_dim": COUNT, "out_dim": COUNT,
    "filters": COUNT, "global_filters": COUNT, "local_filters": COUNT, "layers": COUNT, "blocks": COUNT,
    "stages": COUNT, "pooled_blocks": COUNT, "bins": COUNT, "max_distance": COUNT, "spatial_kernel": COUNT,
    "fuse_kernel": COUNT, "stem_stride": COUNT, "pool": COUNT, "in_channels": COUNT, "widths": COUNT,
    "temperature": POSITIVE, "gate_temperature": POSITIVE, "scale": POSITIVE, "cosine_scale": POSITIVE,
    "penalty_weight": NONNEGATIVE, "l0_weight": NONNEGATIVE, "entropy_weight": NONNEGATIVE,
    "doubly_stochastic_weight": NONNEGATIVE, "half_window": COUNT,
    "global_weight": NONNEGATIVE, "nn_weight": NONNEGATIVE, "baseline_decay": PROBABILITY,
    "batchnorm_momentum": Bound(0, 1), "soft_mix": Bound(0, 1),
}

# the share a pair of fractions leaves for the split they are carved from
TOGETHER = (("val_fraction", "test_fraction"),)

# data keys that name the user's files: they must exist before any job of a command starts (the loader
# checks what must be inside when it reads them)
PATHS = ("path", "root", "image_root")


def path_exists(value: str) -> bool:
    """Whether the path ``value`` names exists; a name the file system cannot hold (over 255 bytes a part)
    does not exist, rather than ending in an OSError."""
    try:
        return Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


NAME_MAX = 255  # bytes in one file or folder name, on every file system attnbench writes to


def long_part(path: str) -> str | None:
    """The first part of ``path`` too long for a folder name (over NAME_MAX bytes), or None."""
    return next((part for part in Path(path).parts if len(part.encode()) > NAME_MAX), None)


def _hints(fn: Callable) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # a hint that does not evaluate checks nothing, rather than refusing a valid value
        return {}


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:  # a name that looks like a number (a column "3", a class 5) reaches the loader as one
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if origin is typing.Literal:
        return value in args
    if isinstance(hint, Pattern):
        return isinstance(value, str) and re.fullmatch(hint.regex, value) is not None
    if origin is tuple and args and Ellipsis not in args:  # a fixed number of items
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(_fits, value, args))
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        items = [a for a in args if a is not Ellipsis]
        return len(items) != 1 or all(_fits(v, items[0]) for v in value) if items else True
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: the module's own checks decide


def _numeric(hint: Any) -> bool:
    """Whether the hint declares a number (or numbers): only those have the bounds of their name."""
    if hint in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(hint) if a is not Ellipsis)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if isinstance(hint, Pattern):
        return hint.text
    if origin is tuple and args and Ellipsis not in args:
        return f"{len(args)} numbers" if all(a in (int, float) for a in args) else f"{len(args)} values"
    if origin in (list, tuple, Sequence):
        items = [a for a in args if a is not Ellipsis]
        return f"a list, each {_describe(items[0])}" if len(items) == 1 else "a list"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def check_values(fn: Callable, values: Mapping[str, Any], label: str) -> None:
    """Refuse a value in ``values`` (keys of the config node ``label``, e.g. ``data=digits``) that does not fit
    the type hint of ``fn``'s parameter of that name, or lies outside its name's ``BOUNDS``."""
    hints = _hints(fn)
    group = label.split("=")[0]
    for key, value in values.items():
        hint = hints.get(key)
        bound = BOUNDS.get(key) if hint is None or _numeric(hint) else None  # a number, or a list of numbers
        _check(value, hint, bound, f"{group}.{key}", f" ({label})")
    for key in PATHS if group == "data" else ():
        value = values.get(key)
        if isinstance(value, str) and not path_exists(value):
            raise UserError(f"{group}.{key}={value} does not exist ({label}); give the path of your "
                            f"{'file or folder' if key == 'path' else 'folder'}")
    for first, second in TOGETHER:
        parameters = inspect.signature(fn).parameters
        if first in parameters and second in parameters:
            a = values.get(first, parameters[first].default)
            b = values.get(second, parameters[second].default)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a + b >= 1:
                raise UserError(f"{group}.{first}={a:g} and {group}.{second}={b:g} leave nothing to train on "
                                f"({label}); keep their sum below 1")


def _check(value: Any, hint: Any, bound: Bound | None, key: str, where: str = "") -> None:
    if hint is not None and not _fits(value, hint):
        if typing.get_origin(hint) is typing.Literal:
            accepted = [str(a).lower() if isinstance(a, bool) else str(a) for a in typing.get_args(hint)]
            near = difflib.get_close_matches(str(value), accepted, n=1)
            raise UserError(f"{key}={value} is not one of {', '.join(accepted)}{where}"
                            + (f": did you mean {key}={near[0]}?" if near else ""))
        raise UserError(f"{key} must be {_describe(hint)}, got {value!r}{where}")
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers:
        if isinstance(number, (int, float)) and not isinstance(number, bool) and bound and not bound.holds(number):
            raise UserError(f"{key} must be {bound}, got {value!r}{where}")


def setting(accepts: Any = None, bound: Bound | None = None, default: Any = MISSING) -> Any:
    """A schema field declaring what it accepts beyond its type (a ``Literal``, a ``Pattern``, a fixed-length
    tuple) and its range. Schema fields of conf/ keep no ``default`` (the YAML gives every value); a spec of
    keys that a data config may leave out gives one here, its only place."""
    return field(default=default, metadata={"accepts": accepts, "bound": bound})


def check_schema_values(schema: type, values: Mapping[str, Any], group: str) -> None:
    """Refuse a value of ``values`` (the config node ``group``) that its ``schema`` field does not accept."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        if f.name in values:
            accepts = f.metadata.get("accepts") or hints[f.name]
            _check(values[f.name], accepts, f.metadata.get("bound"), f"{group}.{f.name}" if group else f.name)
