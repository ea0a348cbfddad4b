"""Forward+backward time and peak memory of token mixers as the sequence grows (CPU or CUDA).

Shows that ``relpos`` (Shaw et al. 2018) needs O(N²) memory like the attention weights themselves, not the
O(N²·d) of a naive implementation that forms aᴷ_ij and aⱽ_ij for every pair: its peak grows ×4 per doubling of
N and barely moves when the head width grows, while the naive form grows with both.

    PYTHONPATH=. python scripts/mixer_scaling.py                     # mha, relpos, naive at N = 256, 1024, 2048
    PYTHONPATH=. python scripts/mixer_scaling.py --widths 64 256     # the peak against the head width
    PYTHONPATH=. python scripts/mixer_scaling.py --threads 1         # steady timings on a shared machine

Each measurement runs in a fresh process. On the CPU the peak is the rise of the process's resident-memory
high-water mark over one forward+backward (what the allocator really took from the system); on CUDA it is
``torch.cuda.max_memory_allocated``. Time is the median of ``--repeats`` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from attnbench.attention.mixer import MultiHeadAttention, RelativePositionAttention
from attnbench.bench import naive_relpos  # the N×N×d reference that relpos must not become

VARIANTS = ("mha", "relpos", "naive")


def build(variant: str, dim: int, heads: int) -> torch.nn.Module:
    if variant == "mha":
        return MultiHeadAttention(dim, heads)
    return RelativePositionAttention(dim, heads)


def measure(variant: str, n: int, dim: int, heads: int, batch: int, repeats: int, device: str) -> dict:
    """One configuration, in this process: median step time (ms) and peak memory (MiB) of forward+backward."""
    torch.manual_seed(0)
    module = build(variant, dim, heads).to(device).train()
    forward = (lambda x: naive_relpos(module, x)) if variant == "naive" else module

    def step(length: int) -> None:
        x = torch.randn(batch, length, dim, device=device, requires_grad=True)
        forward(x).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step(16)  # kernels loaded, autograd warmed, before the baseline is read
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(n)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step(n)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024  # ru_maxrss is in KiB
    times = []
    for _ in range(repeats):
        module.zero_grad(set_to_none=True)
        started = time.perf_counter()
        step(n)
        times.append(time.perf_counter() - started)
    return {"variant": variant, "n": n, "dim": dim, "heads": heads, "head_dim": dim // heads, "batch": batch,
            "ms": 1000 * statistics.median(times), "peak_mib": peak / 2**20, "device": device}


def run_isolated(args: argparse.Namespace, variant: str, n: int, dim: int) -> dict:
    command = [sys.executable, __file__, "--one", variant, str(n), str(dim), "--heads", str(args.heads),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--device", args.device,
               *(["--threads", str(args.threads)] if args.threads else [])]
    # a fixed mmap threshold makes glibc map every large tensor on its own and unmap it when freed; with its
    # default, adaptive threshold freed blocks stay in the heap and the resident peak stops following the
    # tensors that are really alive
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def naive_tensor_mib(n: int, dim: int, heads: int) -> float:
    """Size of one (N, N, d) float32 tensor (aᴷ_ij for every pair; shared by heads and batch), the naive form's
    smallest N×N×d intermediate."""
    return n * n * (dim // heads) * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--widths", type=int, nargs="+", default=[128], help="model widths D (head width D/heads)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-max", type=int, default=1024, help="longest N for the naive N×N×d reference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's); 1 is steadiest on a busy machine")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--one", nargs=3, metavar=("VARIANT", "N", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        variant, n, dim = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(measure(variant, n, dim, args.heads, args.batch, args.repeats, args.device)))
        return

    rows = []
    print(f"forward+backward, batch {args.batch}, {args.heads} heads, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | N | D | head d | ms | peak MiB | peak / N² (bytes) | one N×N×d tensor, MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for dim in args.widths:
        for n in args.lengths:
            for variant in VARIANTS:
                if variant == "naive" and n > args.naive_max:
                    continue
                row = run_isolated(args, variant, n, dim)
                rows.append(row)
                naive = naive_tensor_mib(n, dim, args.heads)
                print(f"| {variant} | {n} | {dim} | {dim // args.heads} | {row['ms']:.1f} | {row['peak_mib']:.1f} | "
                      f"{row['peak_mib'] * 2**20 / n**2:.1f} | {naive:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    peak = {(r["variant"], r["n"], r["dim"]): r["peak_mib"] for r in rows}
    for variant in ("relpos", "naive"):
        for dim in args.widths:
            lengths = [n for n in args.lengths if (variant, n, dim) in peak]
            for a, b in zip(lengths, lengths[1:]):
                growth = peak[(variant, b, dim)] / peak[(variant, a, dim)]
                print(f"{variant} D={dim}: N {a} → {b} multiplies the peak by {growth:.2f} "
                      f"(N² predicts {(b / a) ** 2:.0f})")
        if len(args.widths) > 1:
            n = max(n for (v, n, _) in peak if v == variant)
            first, last = args.widths[0], args.widths[-1]
            if (variant, n, first) in peak and (variant, n, last) in peak:
                growth = peak[(variant, n, last)] / peak[(variant, n, first)]
                print(f"{variant} N={n}: D {first} → {last} multiplies the peak by {growth:.2f} "
                      f"(N²·d predicts {last / first:.0f}, N² predicts 1 plus the O(N·D) activations)")


if __name__ == "__main__":
    main()
