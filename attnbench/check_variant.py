"""attnbench check-variant: the slot protocol's checks on one attention class, one line per failure.

    attnbench check-variant my_pkg.attn:MyAttention --slot feature [--compile aot_eager|inductor|off] [k=3 ...]

The checks are what every catalogue variant is tested for (docs/plugins.md):

* shape: the output has the shape the slot kind promises, in training and in evaluation;
* masking (token slots: mixer, pool, align, model): what sits in padded positions changes nothing (the
  ``model`` slot reads embeddings whose padding is zero: it must equal the unpadded sequence);
* gradient: a loss on the output (plus the module's auxiliary losses, after a reward for REINFORCE-style
  variants) reaches every parameter;
* compile: ``torch.compile`` gives the eager output. The default backend, ``aot_eager``, traces forward and
  backward as the compiler does but generates no code, so the check takes seconds on a CPU; ``--compile
  inductor`` is the full compiler (minutes on a CPU), ``--compile off`` skips it;
* checkpoint: a fresh instance that loads the state dict (saved and read back with ``weights_only=True``, as
  the trainer does) gives the same output.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from .attention import SLOT_KINDS, Attention, aux_losses, send_reward
from .errors import CommandParser, UserError
from .plugins import import_target
from .tasks.build import variant

B, N, VALID = 2, 7, 4  # the second sequence has VALID real positions, the rest is padding
C, HW = 8, 4  # feature maps (B, C, HW, HW); pair maps of HW*HW positions
DIM, QUERY_DIM = 16, 12


def _sizes(slot: str) -> tuple[int, ...]:
    """The size arguments a backbone passes first, positionally, for each slot kind."""
    return {"feature": (C,), "mixer": (DIM,), "pool": (DIM,), "network": (DIM,), "align": (QUERY_DIM, DIM),
            "pair": (C, HW * HW)}[slot]


def _inputs(slot: str, generator: torch.Generator) -> tuple[tuple[Tensor, ...], dict[str, Any]]:
    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, VALID:] = False
    if slot == "feature":
        return (randn(B, C, HW, HW),), {}
    if slot in ("mixer", "pool", "network"):
        return (randn(B, N, DIM),), {"mask": mask}
    if slot == "align":
        return (randn(B, QUERY_DIM), randn(B, N, DIM)), {"mask": mask}
    return (randn(B, HW * HW, C), randn(B, HW * HW, C)), {"grid": (HW, HW)}


def _expected_shapes(slot: str, module: nn.Module) -> list[tuple[int, ...]]:
    out_dim = getattr(module, "out_dim", DIM)
    return {"feature": [(B, C, HW, HW)], "mixer": [(B, N, DIM)], "pool": [(B, out_dim)], "network": [(B, out_dim)],
            "align": [(B, out_dim), (B, N)], "pair": [(B, HW * HW, C), (B, HW * HW, C)]}[slot]


def _outputs(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _with_padding_changed(slot: str, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The same inputs with other values in the padded positions (tokens, or the align memory)."""
    changed = list(args)
    which = 1 if slot == "align" else 0
    changed[which] = changed[which].clone()
    changed[which][1, VALID:] = 100.0 * torch.randn_like(changed[which][1, VALID:])
    return tuple(changed)


def check_variant(cls: type, slot: str, kwargs: dict[str, Any] | None = None,
                  compile_backend: str = "aot_eager") -> list[str]:
    """Every failed check of the slot protocol, one line each ("gradient: parameter w gets none"); [] = pass."""
    if slot not in SLOT_KINDS:
        raise UserError(f"slot kind {slot!r} does not exist; choose one of {', '.join(SLOT_KINDS)}")
    kwargs = kwargs or {}

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return cls(*_sizes(slot), **kwargs)

    sizes = [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind == p.POSITIONAL_ONLY][1:]
    if len(sizes) != len(_sizes(slot)):
        return [f"sizes: a {slot} module takes {len(_sizes(slot))} size argument(s), positional-only "
                f"(def __init__(self, {', '.join(['dim'] * len(_sizes(slot)))}, /, ...)); {cls.__name__} declares "
                f"{len(sizes)}: {', '.join(sizes) or 'none'}"]

    try:
        module = build(0)
    except Exception as e:
        return [f"construct: {cls.__name__}{_sizes(slot)} with {kwargs} fails: {type(e).__name__}: {e}"]
    args, extra = _inputs(slot, torch.Generator().manual_seed(0))
    failures: list[str] = []
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        ("shape", lambda: _shape(module, slot, args, extra)),
        ("gradient", lambda: _gradient(module, args, extra)),
        ("checkpoint", lambda: _checkpoint(module, build(1), args, extra)),
    ]
    if "mask" in extra:
        checks.insert(1, ("masking", lambda: _masking(module, slot, args, extra)))
    if compile_backend != "off":
        checks.append(("compile", lambda: _compile(module, args, extra, compile_backend)))
    for name, run in checks:
        try:
            failures += [f"{name}: {line}" for line in run()]
        except Exception as e:  # the user's module raising is itself the finding, reported on its check's line
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failures.append(f"{name}: {type(e).__name__}: {text}")
    return failures


def _shape(module: nn.Module, slot: str, args: tuple, extra: dict) -> list[str]:
    problems = []
    for training in (True, False):
        module.train(training)
        got = [tuple(t.shape) for t in _outputs(module(*args, **extra))]
        want = _expected_shapes(slot, module)
        if got != want:
            mode = "training" if training else "evaluation"
            problems.append(f"in {mode} the {slot} slot returns {', '.join(map(str, want))}, got "
                            f"{', '.join(map(str, got))}")
    return problems


def _masking(module: nn.Module, slot: str, args: tuple, extra: dict) -> list[str]:
    module.eval()  # evaluation is deterministic (stochastic pooling, hard attention's sampling)
    with torch.no_grad():
        if slot == "network":  # a whole network reads embeddings whose padding is exactly zero: as if absent
            x = args[0] * extra["mask"].unsqueeze(-1)
            before = [module(x, **extra)[1:]]
            after = [module(x[1:, :VALID], mask=extra["mask"][1:, :VALID])]
        else:
            before = _outputs(module(*args, **extra))
            after = _outputs(module(*_with_padding_changed(slot, args), **extra))
    problems = []
    for i, (x, y) in enumerate(zip(before, after)):
        if slot == "mixer":  # padded queries' own outputs are free; the real positions must not move
            x, y = x[1, :VALID], y[1, :VALID]
        if not torch.allclose(x, y, atol=1e-4, rtol=1e-4):
            what = f"output {i}" if len(before) > 1 else "the output"
            problems.append(f"changing padded positions changes {what} of the real ones by "
                            f"{(x - y).abs().max().item():.3g} (the mask is not applied)")
    return problems


def _gradient(module: nn.Module, args: tuple, extra: dict) -> list[str]:
    module.train()
    module.zero_grad(set_to_none=True)
    args = tuple(a.clone().requires_grad_() for a in args)  # so a parameter-free module still has a graph
    outputs = _outputs(module(*args, **extra))
    generator = torch.Generator().manual_seed(1)
    loss = sum((t.float() * torch.randn(t.shape, generator=generator)).sum() for t in outputs)
    send_reward(module, torch.randn(B, generator=generator))  # REINFORCE variants turn it into a loss
    loss = loss + sum(aux_losses(module).values())
    loss.backward()
    problems = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems.append(f"parameter {name} gets no gradient (unused in forward, or detached)")
        elif not torch.isfinite(p.grad).all():
            problems.append(f"parameter {name} gets a non-finite gradient")
    return problems


def _compile(module: nn.Module, args: tuple, extra: dict, backend: str) -> list[str]:
    import torch._dynamo

    module.eval()
    torch._dynamo.reset()
    with torch.no_grad():
        eager = _outputs(module(*args, **extra))
        compiled = _outputs(torch.compile(module, backend=backend)(*args, **extra))
    return [f"compiled output {i} differs from eager by {(x - y).abs().max().item():.3g}"
            for i, (x, y) in enumerate(zip(eager, compiled)) if not torch.allclose(x, y, atol=1e-4, rtol=1e-4)]


def _checkpoint(module: nn.Module, fresh: nn.Module, args: tuple, extra: dict) -> list[str]:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    result = fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=False)
    if result.missing_keys or result.unexpected_keys:
        return [f"state dict keys differ after reloading: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"]
    module.eval()
    fresh.eval()
    with torch.no_grad():
        before, after = _outputs(module(*args, **extra)), _outputs(fresh(*args, **extra))
    return [f"a reloaded instance gives output {i} off by {(x - y).abs().max().item():.3g} (state kept outside "
            f"the state dict? register it as a parameter or buffer)"
            for i, (x, y) in enumerate(zip(before, after)) if not torch.allclose(x, y, atol=1e-5, rtol=1e-5)]


def _value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


class _Parser(CommandParser):
    """The commands' parser, with the message intermixed parsing gives for a missing TARGET made plain."""

    def error(self, message: str) -> NoReturn:
        if "required" in message:  # intermixed parsing names the optional key=value list too
            message = "needs a TARGET: pkg.module:Class, path/to/file.py:Class or a variant name"
        super().error(message)


def main(argv: list[str]) -> int:
    from .track.console import error, info

    parser = _Parser(prog="attnbench check-variant", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="pkg.module:Class, path/to/file.py:Class, or a variant name (se, eca)")
    parser.add_argument("--slot", help="the slot kind to check; default: the class's own `slot`")
    parser.add_argument("--compile", default="aot_eager", choices=("aot_eager", "inductor", "off"),
                        help="torch.compile backend of the compile check (default aot_eager: seconds on a CPU)")
    parser.add_argument("keys", nargs="*", metavar="key=value", help="constructor keyword arguments (k=3)")
    ns = parser.parse_intermixed_args(argv)  # key=value after --slot too, as the README writes it
    kwargs = {}
    for item in ns.keys:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"{item!r} is not key=value")
        kwargs[key] = _value(value)
    if ":" in ns.target:
        cls = import_target(ns.target, ns.target)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise UserError(f"{ns.target} is not an nn.Module class")
        slot = ns.slot or getattr(cls, "slot", None)
        if not isinstance(slot, str) or not slot:
            raise UserError(f"{ns.target} declares no single slot kind: pass --slot "
                            f"({', '.join(SLOT_KINDS)})")
    else:
        v = variant(ns.target)
        slot = ns.slot or (v.slots[0] if v.slots else None)
        if slot not in v.modules:
            raise UserError(f"model={ns.target} fills {', '.join(v.slots) or 'no slot'}, not {slot!r}")
        cls = v.modules[slot]
    failures = check_variant(cls, slot, kwargs, ns.compile)
    for line in failures:
        error(f"{cls.__name__} ({slot}) {line}")
    if not failures:
        plain = "" if issubclass(cls, Attention) else (" (a plain nn.Module: it trains, but reports no attention "
                                                       "diagnostics; subclass attnbench.attention.Attention)")
        info(f"{cls.__name__} passes every {slot}-slot check{plain}")
    return 1 if failures else 0
