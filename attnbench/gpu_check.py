"""``scripts/gpu_check.sh OUT_DIR [--cifar DIR]``: every GPU claim of the README, measured in one call.

On one H100/H200 it is meant to finish within ``--budget`` seconds (default 450): each check gets what is
left when it starts and the long ones (the speed run, the grid) are cut at the deadline, recorded as such.
It writes ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md`` after every check, so a cut run keeps what
it measured.

1. **families**: each task family's default data set for one epoch, in-process, with the fast paths
   switched on one after another (fp32 eager → bf16 → + channels_last → + compile): training samples/s,
   training-step time, the test metric, peak memory.
2. **resnet18**: a training step of attnbench's ``backbone=resnet18`` (``model=none`` and ``model=se``)
   against timm's ``resnet18`` and ``seresnet18`` on the same batch, the same precision and memory format.
3. **speedrun**: ``attnbench train experiment=speedrun`` on a CIFAR-10 JPEG folder (``--cifar``): the
   training time at which validation accuracy first reached 93% and 94% (epochs are equally long, so the
   time at epoch e is the training time × e / epochs), the test accuracy at the end, the process wall time.
4. **grid**: the none/se/cbam × 5 seeds speed-run grid, its wall time.
5. **flex**: ``relpos`` and ``local``'s flex_attention paths against their dense paths (``band`` for local):
   largest output and gradient difference, then forward+backward time and peak memory at N = 1k…16k.
6. **ddp**: one epoch of the default run on two devices, when there are two.

``--cpu`` is the dry run ``make test`` runs: tiny sizes, a tiny JPEG folder it writes itself, the CPU for
every check (flex_attention forward only, having no backward on the CPU; DDP on two CPU processes; compile
left out: inductor's C++ build takes minutes on a CPU, ``pytest -m slow`` covers it), so the script cannot rot.
Without a GPU and without ``--cpu`` it refuses in one line (exit status 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .errors import CommandParser, UserError

# the default data set of each task family (the embedded, offline ones), and its one-epoch overrides
FAMILIES = {"classify": "digits", "rate": "reviews", "caption": "shapes", "fewshot": "glyphs"}
TINY = {  # --cpu: seconds, not minutes
    "digits": ["backbone.widths=[8,16]"],
    "reviews": ["data.train_size=64", "data.val_size=16", "data.test_size=16", "data.max_tokens=40",
                "trainer.batch_size=16"],
    "shapes": ["data.train_size=32", "data.val_size=8", "data.test_size=8", "trainer.batch_size=8"],
    "glyphs": ["data.scripts=[latin]", "data.images_per_class=4", "data.train_episodes=2", "data.val_episodes=2",
               "data.test_episodes=2", "data.queries=2"],
}
# the fast paths, switched on one after another: each is measured on and off
FAST_PATHS = [
    ("fp32", ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"]),
    ("bf16", ["trainer.precision=bf16", "trainer.channels_last=false", "trainer.compile=false"]),
    ("bf16 + channels_last", ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=false"]),
    ("bf16 + channels_last + compile", ["trainer.precision=bf16", "trainer.channels_last=true",
                                        "trainer.compile=true"]),
]
FLEX_LENGTHS = [1024, 2048, 4096, 8192, 16384]
TARGETS = {"speedrun_94_s": 10.0, "grid_s": 120.0}  # README's GPU targets


@dataclass
class Plan:
    out: Path
    cpu: bool
    cifar: Path | None
    deadline: float  # time.perf_counter() by which every check has stopped
    device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        self.device = torch.device("cpu" if self.cpu else "cuda")

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# ----------------------------------------------------------------------------------------------- 1. families


def _one_epoch(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One epoch of a configuration in this process: what ``attnbench train`` runs, without its start-up."""
    from .config import composer
    from .engine import Trainer
    from .job import fingerprint, seed_everything
    from .tasks import build_task
    from .track import Logger, RunDirectory

    with composer("gpu_check") as compose:
        cfg = compose(["logger=none", "trainer.epochs=1", *overrides])
    seed_everything(cfg.seed)
    task = build_task(cfg, dict(cfg.hydra.runtime.choices))
    trainer = Trainer(cfg.trainer, task, RunDirectory(run_dir), Logger(), seed=cfg.seed, fingerprint=fingerprint(cfg))
    trainer.setup()
    started = time.perf_counter()
    trainer.fit()
    fitted = time.perf_counter() - started
    metrics = trainer.test()
    primary = f"test/{task.primary}"
    cost = trainer.training_cost()
    return {"train_samples_per_s": cost["train_samples_per_s"], "train_steps_s": trainer.stopwatch.seconds.get(
        "train_steps"), "fit_s": fitted, "metric": primary, "value": metrics.get(primary),
        "peak_memory_mb": cost["peak_memory_mb"], "convolutional": task.convolutional}


def check_families(plan: Plan) -> list[dict[str, Any]]:
    from .tasks import shared_data

    rows = []
    paths = FAST_PATHS[:1] if plan.cpu else FAST_PATHS  # on the CPU the other paths only add minutes
    with shared_data(), tempfile.TemporaryDirectory() as tmp:
        for family, data in FAMILIES.items():
            for name, settings in paths:
                row = {"family": family, "data": data, "fast_paths": name}
                if plan.left() <= 0:
                    rows.append({**row, "skipped": "the budget ran out"})
                    continue
                overrides = [f"data={data}", f"trainer.device={plan.device.type}", *settings,
                             *(TINY[data] if plan.cpu else [])]
                run_dir = Path(tmp) / f"{data}-{len(rows)}"
                run_dir.mkdir()
                try:
                    rows.append({**row, **_one_epoch(overrides, run_dir)})
                except Exception as e:  # one configuration that fails is a finding, not the end of the check
                    rows.append({**row, "error": _first_line(e)})
    if plan.cpu:
        rows.append({"note": "--cpu runs fp32 alone: bf16 autocast is slow on a CPU, channels_last applies on "
                             "CUDA only, and inductor's C++ build takes minutes"})
    return rows


# ----------------------------------------------------------------------------------------------- 2. resnet18


def _bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               dtype: torch.dtype | None) -> Callable[[], None]:
    """A hand-written training step (forward, cross-entropy, backward, SGD), autocast as the trainer's."""
    import torch.nn.functional as F

    def step() -> None:
        with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def check_resnet18(plan: Plan) -> list[dict[str, Any]]:
    """attnbench's resnet18 (none, se) against timm's resnet18 and seresnet18, one training step each."""
    from .bench import Settings, build, median_time, step_cost

    size, batch = (8, 2) if plan.cpu else (32, 512)
    overrides = ["backbone=resnet18", f"trainer.batch_size={batch}", f"data.image_size={size}"]
    settings = Settings(["none", "se"], overrides, steps=1 if plan.cpu else 20, warmup=1 if plan.cpu else 5,
                        overhead_steps=1, device=plan.device.type)
    rows = []
    for variant in settings.variants:
        setup = build(variant, settings)
        cost = step_cost(setup, settings)
        rows.append({"model": f"attnbench resnet18, model={variant}", "step_ms": cost["step_ms"],
                     "samples_per_s": cost["samples_per_s"], "params": cost["params"], "batch": cost["batch"]})
        x, y = setup.batches[0]
        dtype, channels_last = setup.trainer.dtype, setup.trainer.cfg.channels_last
        del setup
    try:
        import timm
    except ImportError:
        return [*rows, {"model": "timm", "skipped": "timm is not installed: pip install 'attnbench[bench]'"}]
    for name in ("resnet18", "seresnet18"):
        model = timm.create_model(name, num_classes=10).to(plan.device).train()
        if plan.device.type == "cuda" and channels_last:
            model = model.to(memory_format=torch.channels_last)
        step = _bare_step(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), x, y, dtype)
        seconds = median_time(step, plan.device, settings.steps, settings.warmup)
        rows.append({"model": f"timm {name}", "step_ms": seconds * 1e3, "samples_per_s": len(x) / seconds,
                     "params": sum(p.numel() for p in model.parameters()), "batch": len(x)})
    return rows


# ----------------------------------------------------------------------------------------------- 3-4. speed run


def write_tiny_jpeg_folder(root: Path, classes: int = 2, per_class: int = 12, size: int = 32) -> Path:
    """A CIFAR-layout JPEG folder (train/<class>/*.jpg, test/<class>/*.jpg) of coloured noise, for --cpu."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = (torch.rand(size, size, 3, generator=generator) * 128 + 64 * c).clamp(0, 255)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"{i}.jpg")
    return root


def _train_process(args: list[str], folder: Path, timeout: float) -> dict[str, Any]:
    """``attnbench train ARGS`` in a subprocess, cut at ``timeout`` seconds; wall time and the summaries."""
    command = [sys.executable, "-m", "attnbench", "train", *args, "logger=none"]
    log = folder.with_suffix(".log")
    started = time.perf_counter()
    try:
        with log.open("w") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=max(timeout, 1)).returncode
    except subprocess.TimeoutExpired:
        code = None
    wall = time.perf_counter() - started
    summaries = [json.loads(p.read_text()) for p in sorted(folder.rglob("summary.json"))]
    result: dict[str, Any] = {"wall_s": wall, "exit_status": code, "completed": sum(
        s.get("status") == "completed" for s in summaries)}
    if code is None:
        result["cut"] = f"stopped at the deadline after {wall:.0f} s"
    elif code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        result["error"] = lines[-1] if lines else f"exit status {code}"
    return {**result, "summaries": summaries}


def _speedrun_args(plan: Plan, cifar: Path) -> list[str]:
    args = ["experiment=speedrun", "data=image_folder", f"data.path={cifar}", f"trainer.device={plan.device.type}"]
    if plan.cpu:
        args += ["trainer.batch_size=8", "trainer.epochs=2", "data.val_fraction=0.25"]
    return args


def _cifar(plan: Plan, tmp: Path) -> Path | None:
    return write_tiny_jpeg_folder(tmp / "jpegs") if plan.cpu else plan.cifar


def _on_cifar(plan: Plan, name: str, args: Callable[[Path, Path], list[str]],
              report: Callable[[dict[str, Any], Path], dict[str, Any]]) -> list[dict[str, Any]]:
    """``attnbench train ARGS(cifar folder, output folder)`` in a process of its own, and ``report``'s row made
    of its result (with its run summaries, read while the output folder still exists); a row saying why when
    there is no CIFAR folder."""
    with tempfile.TemporaryDirectory() as tmp:
        cifar = _cifar(plan, Path(tmp))
        if cifar is None:
            return [{"skipped": "no --cifar DIR (the CIFAR-10 JPEG folder: train/<class>/*.jpg, test/<class>/*.jpg)"}]
        folder = Path(tmp) / name
        result = _train_process(args(cifar, folder), folder, plan.left())
        return [report(dict(result), folder)]


def check_speedrun(plan: Plan) -> list[dict[str, Any]]:
    def report(result: dict[str, Any], folder: Path) -> dict[str, Any]:
        summaries = result.pop("summaries")
        if summaries:
            s = summaries[0]
            result.update(test_acc=s["metrics"].get("test/acc"), train_steps_s=s["phases_s"].get("train_steps"),
                          data_s=s["phases_s"].get("data"), epochs=s["epochs"])
            val = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                   if '"val"' in line]
            for threshold in (0.93, 0.94):
                reached = next((r["epoch"] for r in val if r.get("val/acc", 0) >= threshold), None)
                result[f"train_s_to_val_{threshold:.0%}"] = (
                    result["train_steps_s"] * reached / s["epochs"] if reached and result["train_steps_s"] else None)
        return result

    return _on_cifar(plan, "speedrun", lambda cifar, folder: [*_speedrun_args(plan, cifar), "model=none",
                                                              f"hydra.run.dir={folder}"], report)


def check_grid(plan: Plan) -> list[dict[str, Any]]:
    sweep = ["model=none,se", "seed=0"] if plan.cpu else ["model=none,se,cbam", "seed=0,1,2,3,4"]

    def report(result: dict[str, Any], folder: Path) -> dict[str, Any]:
        accuracy = [s["metrics"].get("test/acc") for s in result.pop("summaries") if s.get("status") == "completed"]
        result.update(jobs=len(sweep[0].split(",")) * len(sweep[1].split(",")), grid=" ".join(sweep),
                      test_acc_median=statistics.median(accuracy) if accuracy else None)
        return result

    return _on_cifar(plan, "grid", lambda cifar, folder: ["-m", *_speedrun_args(plan, cifar), *sweep,
                                                          f"hydra.sweep.dir={folder}"], report)


# ----------------------------------------------------------------------------------------------- 5. flex


def _attention_step(module: torch.nn.Module, attend: Callable, x: torch.Tensor, backward: bool) -> torch.Tensor:
    """Projections, one attention path with no mask, and (``backward``) the backward pass of a squared mean;
    without it, under ``no_grad`` (flex_attention on the CPU refuses inputs that need gradients)."""
    with contextlib.nullcontext() if backward else torch.no_grad():
        q, k, v = module.project(x)
        out = attend(q, k, v, None)
    if backward:
        out.float().square().mean().backward()
    return out


def check_flex(plan: Plan) -> list[dict[str, Any]]:
    """flex_attention against the dense path of relpos and local: agreement, then time and memory."""
    from .attention.mixer import RelativePositionAttention, flex_kernel, flex_module
    from .bench import LocalSelfAttention, median_time, peak_memory

    if flex_module() is None:
        return [{"skipped": "this torch has no torch.nn.attention.flex_attention"}]
    # on the CPU flex_attention runs eagerly, forward only (no backward there)
    kernel = flex_module().flex_attention if plan.cpu else flex_kernel(plan.device)
    lengths = [64, 128] if plan.cpu else FLEX_LENGTHS
    width, heads, window = (32, 2, 4) if plan.cpu else (128, 2, 16)
    rows = []
    for name in ("relpos", "local"):
        torch.manual_seed(0)
        module = (RelativePositionAttention(width, heads, max_distance=window) if name == "relpos" else
                  LocalSelfAttention(width, heads, half_window=window)).to(plan.device).train()
        dense = ("dense", module.attend_dense) if name == "relpos" else ("band", module.attend_band)
        paths = {"flex": functools.partial(module.attend_flex, kernel=kernel), dense[0]: dense[1]}
        for n in lengths:
            if plan.left() <= 0:
                rows.append({"variant": name, "n": n, "skipped": "the budget ran out"})
                continue
            x = torch.randn(1, n, width, device=plan.device, requires_grad=True)
            outputs, grads, row = {}, {}, {"variant": name, "n": n}
            for path, attend in paths.items():
                step = functools.partial(_attention_step, module, attend, x, not (plan.cpu and path == "flex"))
                x.grad = None
                module.zero_grad(set_to_none=True)
                outputs[path] = step().detach()
                if x.grad is not None:
                    grads[path] = x.grad.clone()
                try:
                    row[f"{path}_ms"] = median_time(step, plan.device, 2 if plan.cpu else 5, 1) * 1e3
                    row[f"{path}_peak_mib"] = peak_memory(step, plan.device)
                except torch.OutOfMemoryError:
                    row[f"{path}_ms"] = row[f"{path}_peak_mib"] = None
                    row[f"{path}_note"] = "out of memory"
                except NotImplementedError:  # the CPU's tensor-memory tracker cannot follow flex_attention
                    row[f"{path}_peak_mib"] = None
            first, second = outputs.values()
            row["max_abs_output_difference"] = (first.float() - second.float()).abs().max().item()
            if len(grads) == 2:
                a, b = grads.values()
                row["max_abs_grad_difference"] = (a - b).abs().max().item()
            else:
                row["max_abs_grad_difference"] = None
                row["note"] = "gradients not compared: flex_attention has no backward on the CPU"
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- 6. ddp


def check_ddp(plan: Plan) -> list[dict[str, Any]]:
    if not plan.cpu and torch.cuda.device_count() < 2:
        return [{"skipped": f"{torch.cuda.device_count()} GPU visible: DDP needs two"}]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ddp"
        args = ["trainer.devices=2", "trainer.epochs=1", f"trainer.device={plan.device.type}",
                f"hydra.run.dir={folder}", *(TINY["digits"] if plan.cpu else [])]
        result = _train_process(args, folder, plan.left())
        row = {k: v for k, v in result.items() if k != "summaries"}
        if result["summaries"]:
            s = result["summaries"][0]
            row.update(world_size=s.get("world_size"), train_samples_per_s=s.get("train_samples_per_s"),
                       test_acc=s["metrics"].get("test/acc"))
        return [row]


CHECKS: dict[str, Callable[[Plan], list[dict[str, Any]]]] = {
    "families": check_families, "resnet18": check_resnet18, "speedrun": check_speedrun, "grid": check_grid,
    "flex": check_flex, "ddp": check_ddp,
}


# ----------------------------------------------------------------------------------------------- report


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    """One table per check: its rows' keys as columns."""
    m = report["machine"]
    lines = [f"# attnbench GPU check ({'CPU dry run' if report['cpu'] else m.get('gpu')})", "",
             f"{report['time']} · torch {m['torch']} · {m['cpu']}, {m['cores']} cores · "
             f"{report['wall_time_s']:.0f} s of a {report['budget_s']:.0f} s budget", ""]
    for name, check in report["checks"].items():
        lines += [f"## {name} ({check['seconds']:.1f} s)", ""]
        rows = check["rows"]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        if not columns:
            lines += ["(nothing)", ""]
            continue
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def run(plan: Plan, budget_s: float, only: list[str]) -> dict[str, Any]:
    from .bench import machine

    started = time.perf_counter()
    report: dict[str, Any] = {"command": "scripts/gpu_check.sh", "cpu": plan.cpu, "budget_s": budget_s,
                              "time": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                              "targets": TARGETS, "checks": {}}
    for name in only:
        print(f"· {name}", flush=True)
        section = time.perf_counter()
        try:
            rows = CHECKS[name](plan)
        except Exception as e:  # a broken check is reported in its table; the others still run
            rows = [{"error": _first_line(e), "where": traceback.format_exc().strip().splitlines()[-3].strip()}]
        report["checks"][name] = {"seconds": time.perf_counter() - section, "rows": rows}
        report["wall_time_s"] = time.perf_counter() - started
        (plan.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (plan.out / "gpu_check.md").write_text(markdown(report))
    return report


def main(args: list[str]) -> int:
    parser = CommandParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write gpu_check.json and gpu_check.md into")
    parser.add_argument("--cifar", help="the CIFAR-10 JPEG folder (train/<class>/*.jpg, test/<class>/*.jpg)")
    parser.add_argument("--cpu", action="store_true", help="the dry run: tiny sizes on the CPU, in seconds")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for every check together")
    parser.add_argument("--only", help=f"comma-separated checks, of {','.join(CHECKS)} (default: all)")
    options = parser.parse_args(args)
    if not options.cpu and not torch.cuda.is_available():
        raise UserError("gpu_check: no CUDA device is visible; run it on a GPU machine, or with --cpu for the "
                        "dry run")
    only = [c for c in (options.only or ",".join(CHECKS)).split(",") if c]
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise UserError(f"gpu_check: no check named {unknown[0]!r}; the checks are {', '.join(CHECKS)}")
    cifar = Path(options.cifar) if options.cifar else None
    if cifar is not None and not (cifar / "train").is_dir():
        raise UserError(f"gpu_check: --cifar {cifar} has no train/ folder (it wants train/<class>/*.jpg)")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(out, options.cpu, cifar, time.perf_counter() + options.budget)
    run(plan, options.budget, only)
    print(f"gpu_check: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    from .cli import fail

    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        sys.exit(fail(str(e)))
