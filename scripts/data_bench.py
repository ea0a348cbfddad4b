"""Decode cache and streaming on a real image folder: data-ready time cold and warm, and streamed training
against the in-memory path.

    PYTHONPATH=. python scripts/data_bench.py /work/data/cifar                  # CIFAR-10 JPEGs, train/ and test/
    PYTHONPATH=. python scripts/data_bench.py /work/data/cifar --per-class 1000 --repeats 3
    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/data_bench.py DIR   # steadier on a shared machine

1. Data ready: the loader of ``data=image_folder`` in a fresh process with an empty cache folder (decoding every
   file), then twice more (reading the cache); each prints the run's own "data ready" line.
2. Streaming: ``attnbench train`` of one epoch with ``data.stream=false`` and ``data.stream=true`` in turn
   (``--repeats`` each, interleaved so a change in the machine's load hits both), the same small backbone; the
   table gives the median training throughput (``train_samples_per_s``, the training steps alone) and wall
   time, and whether the two paths ended with the same test accuracy (they feed the same batches).

Every run gets its own temporary cache folder (``XDG_CACHE_HOME``); the user's cache is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

READY = ("from attnbench.data import LOADERS, last_load; LOADERS['image_folder'](path={path!r}); "
         "print(last_load().line())")


def data_ready(path: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", READY.format(path=path)], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def train(path: str, stream: bool, args: argparse.Namespace, env: dict[str, str], where: Path) -> dict:
    run_dir = where / f"stream-{str(stream).lower()}-{len(list(where.iterdir()))}"
    command = [sys.executable, "-m", "attnbench", "train", "data=image_folder", f"data.path={path}",
               f"data.stream={str(stream).lower()}", f"backbone={args.backbone}", "model=none", "trainer.epochs=1",
               "logger=none", f"hydra.run.dir={run_dir}"]
    if args.per_class:
        command.append(f"data.per_class={args.per_class}")
    subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=where)
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="an image folder with train/<class>/ and test/<class>/")
    parser.add_argument("--per-class", type=int, default=1000, help="data.per_class of the training runs")
    parser.add_argument("--backbone", default="smallcnn")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        print(f"cold:   {data_ready(args.path, env)}", flush=True)
        for i in range(2):
            print(f"warm {i + 1}: {data_ready(args.path, env)}", flush=True)
        where = Path(tmp) / "runs"
        where.mkdir()
        results: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for stream in (False, True):
                r = train(args.path, stream, args, env, where)
                results[stream].append(r)
                print(f"data.stream={str(stream).lower()}: {r['train_samples_per_s']:,.0f} train samples/s, "
                      f"{r['wall_time_s']:.1f} s wall", flush=True)
        print(f"\none epoch, backbone={args.backbone}, data.per_class={args.per_class}, median of {args.repeats}")
        print(f"{'data.stream':<12} {'train samples/s':>16} {'wall s':>8} {'test/acc':>9}")
        for stream, runs in results.items():
            speed = statistics.median(r["train_samples_per_s"] for r in runs)
            wall = statistics.median(r["wall_time_s"] for r in runs)
            print(f"{str(stream).lower():<12} {speed:>16,.0f} {wall:>8.1f} {runs[0]['metrics']['test/acc']:>9.4f}")
        memory, streamed = (statistics.median(r["train_samples_per_s"] for r in results[s]) for s in (False, True))
        same = {r["metrics"]["test/acc"] for r in results[False] + results[True]}
        print(f"streamed / in-memory throughput: {streamed / memory:.3f}; same test accuracy: {len(same) == 1}")


if __name__ == "__main__":
    main()
