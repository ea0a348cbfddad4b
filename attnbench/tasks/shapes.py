"""What a run's attention had to choose from, and the refusal of attention over nothing.

After a task builds its model, one forward pass on a small batch of the data's real shape (``build_task``'s
probe) tells, for every module of the variant, what its weights run over and how many of them there are.
That is the ``attention`` record of ``summary.json``; compare and W&B read its ``summary`` line and flags.
A weighting over fewer than two things (a spatial gate on a 1×1 map, pair attention between 1×1 maps, SE on
one channel), or a variant that fills no slot because the backbone has none, is refused before training: its
row would enter a comparison as the variant's effect while the variant did nothing. Shapes that make a variant
equal a simpler one (a window covering everything, k ≥ length, one head) are run, with a warning.
``allow_degenerate=true`` runs a refused configuration anyway and marks the record.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ..errors import UserError

SINGULAR = {"positions": "position", "channels": "channel", "regions": "region"}


def _span(values: list[int]) -> str:
    """16–64 over the modules in model order (1024–64 when it falls), one number when they agree."""
    if len(set(values)) == 1:
        return str(values[0])
    low, high = min(values), max(values)
    return f"{high}–{low}" if values[0] > values[-1] else f"{low}–{high}"


def summary_line(variant: str, modules: list[dict[str, Any]]) -> str:
    """One line: "cbam in 2 feature slots: channels 32–64, positions 64–16 (1,092 params)"."""
    if not modules:
        return f"{variant}: no attention module (every slot keeps the backbone's default)"
    parts = []
    for slot in dict.fromkeys(m["slot"] for m in modules):
        group = [m for m in modules if m["slot"] == slot]
        where = f"{len(group)} {slot} slots" if len(group) > 1 else f"the {slot} slot"
        overs = dict.fromkeys(k for m in group for k in m["over"])
        counts = ", ".join(f"{k} {_span([m['over'][k] for m in group if k in m['over']])}" for k in overs)
        silent = "plain nn.Modules, which do not say what they weigh" if slot == "plug-in" else \
            "not reached by a forward pass"
        parts.append(f"{where}: {counts or silent}")
    params = sum(m["params"] for m in modules)
    return f"{variant} in {'; '.join(parts)} ({params:,} params)"


def _fix(over: str, family: str, choices: dict[str, str]) -> str:
    """How to give a weighting over ``over`` more to choose from, in words a user can type."""
    if over == "channels":
        return "a wider backbone"
    if family == "rate":
        return "longer texts"
    smaller_pooling = ("backbone=conv4_map (it keeps a 4× wider map), " if family == "fewshot"
                       and choices["backbone"] != "conv4_map" else "")
    return f"{smaller_pooling}a larger data.image_size or a backbone that downsamples less"


def attention_record(modules: list[dict[str, Any]], cfg: DictConfig, choices: dict[str, str],
                     family: str) -> dict[str, Any]:
    """The ``attention`` record of a run from ``survey``'s modules; refuses (UserError) a variant that weighs
    nothing, unless ``allow_degenerate``."""
    variant = cfg.model.name
    label = f"model={choices['model']} with backbone={choices['backbone']} on data={choices['data']}"
    degenerate = None
    if variant != "none" and not modules:
        stages = list(cfg.backbone.get("stages") or [])
        stages = f" (backbone.stages={stages} has no blocks)" if stages and not any(stages) else ""
        degenerate = (f"{label} builds no attention module: the backbone offers no slot it fills with these "
                      f"settings{stages}; give the backbone blocks or choose another variant")
    for m in modules:
        few = {k: v for k, v in m["over"].items() if v < 2}
        if few and degenerate is None:
            over, n = next(iter(few.items()))
            degenerate = (f"{label} weighs {n} {SINGULAR.get(over, over) if n == 1 else over} in {m['module']} "
                          f"({m['slot']} slot): nothing to choose from; use {_fix(over, family, choices)}")
    allowed = bool(cfg.allow_degenerate)
    if degenerate is not None and not allowed:
        raise UserError(f"{degenerate} (allow_degenerate=true runs it anyway)")
    reduced = next((f"model={choices['model']} {m['reduces_to']} ({m['module']})" for m in modules
                    if m["reduces_to"]), None)
    return {"variant": variant, "summary": summary_line(choices["model"], modules), "modules": modules,
            "params": sum(m["params"] for m in modules), "degenerate": degenerate, "reduced": reduced,
            "allow_degenerate": allowed}
