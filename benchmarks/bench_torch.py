"""Seconds per iteration and peak memory of the torch backend at several sizes.

One iteration is one loss evaluation of a real render (forward to the deepest tap, Gram, content
and TV losses, gradient, L-BFGS update), timed from the render loop's own events. Each
(model, size) runs in a fresh process, so the CPU peak RSS belongs to that size alone.

    python benchmarks/bench_torch.py                       # 256, 512, 1024 px; JSON to results/
    python benchmarks/bench_torch.py --sizes 512 --device cuda --iterations 20

Weights do not change the timing, so random-weight models are used (no download needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from _report import write_report

from styleforge.engine import RenderConfig, render, resolve_device


def measure(model: str, size: int, iterations: int, warmup: int, device: str) -> dict:
    """Render a random image pair and time each evaluation after the warm-up ones."""
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(3, size * 3 // 4, size, generator=generator)
    style = torch.rand(3, size, size, generator=generator)
    config = RenderConfig(size=size, iterations=iterations + warmup, model=model, device=device)
    stamps: list[float] = []
    peaks: list[int] = []

    def on_event(event) -> None:
        if event.image.is_cuda:
            torch.cuda.synchronize()  # honest per-iteration times on a GPU
        stamps.append(event.elapsed)
        peaks.append(event.peak_memory)

    result = render(config, content, [style], callback=on_event)
    steps = [later - earlier for earlier, later in zip(stamps[warmup - 1:], stamps[warmup:])]
    return {
        "model": model,
        "size": [size * 3 // 4, size],
        "device": result.device,
        "iterations_timed": len(steps),
        "seconds_per_iteration": statistics.median(steps),
        "seconds_per_iteration_min": min(steps),
        "peak_memory_bytes": max(peaks),
        "peak_memory_kind": "cuda_max_allocated" if result.device.startswith("cuda") else "process_peak_rss",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="long sides in pixels")
    parser.add_argument("--models", nargs="+", default=["vgg16-random", "vgg19-random"])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "torch.json")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # child process: one measurement as JSON on stdout
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.iterations, args.warmup, args.device)))
        return

    device = str(resolve_device(args.device))
    rows = []
    for model in args.models:
        for size in args.sizes:
            child = subprocess.run(
                [sys.executable, __file__, "--one", model, str(size), "--iterations", str(args.iterations),
                 "--warmup", str(args.warmup), "--device", device],
                capture_output=True, text=True, check=False,
            )
            if child.returncode != 0:
                print(f"{model} {size}px failed: {child.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{model:14s} {row['size'][1]:5d}x{row['size'][0]:<5d} {row['device']:6s} "
                  f"{row['seconds_per_iteration'] * 1000:9.1f} ms/iter  "
                  f"peak {row['peak_memory_bytes'] / 2**30:6.2f} GiB ({row['peak_memory_kind']})", flush=True)

    write_report(args.output, "torch backend, seconds per render iteration", rows)


if __name__ == "__main__":
    main()
