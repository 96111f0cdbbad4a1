"""High-resolution renders: seconds per iteration per level, total time, peak memory, plan.

Each size runs in its own process, so the peak memory (CUDA peak allocation, or peak RSS on CPU)
is that render's alone. Two modes:

- full (default): the default schedule (a sqrt(2) pyramid from about 256 px; see RenderConfig);
- ``--iterations N``: only the final size, N iterations from the content, to show a size fits
  the memory budget and measure its per-iteration time without a full render.

    python benchmarks/bench_highres.py --sizes 512 1024 2048 --max-memory 8G --save-images out/
    python benchmarks/bench_highres.py --sizes 3840x2160 --iterations 3 --max-memory 16G
    python benchmarks/bench_highres.py --chart benchmarks/results/highres_*.json

``--chart`` draws time and memory against resolution, a line per backend/precision (PNG).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402


def _one(args: argparse.Namespace) -> dict:
    """One render in this process; returns its row."""
    from styleforge import engine
    from styleforge.engine.backends import conv_flops, matrix_tflops
    from styleforge.engine.rendering import crop_to_frame

    content = engine.load_image(args.content)
    style = engine.load_image(args.style)
    options = {"size": args.size, "backend": args.backend, "precision": args.precision, "device": args.device,
               "model": args.model}
    if args.max_memory:
        options["max_memory"] = args.max_memory
    if args.cuda_graphs:
        options["cuda_graphs"] = True
    if args.iterations:
        options.update(levels=1, iterations=args.iterations)
    config = engine.RenderConfig.from_options(options)
    device = engine.resolve_device(config.runtime.device)
    plan = engine.plan_for(config, crop_to_frame(content, config), device)
    print(plan.describe(), file=sys.stderr, flush=True)

    marks: list[tuple[int, float]] = []  # (level, elapsed) per evaluation

    def record(event: engine.RenderEvent) -> None:
        marks.append((event.level, event.elapsed))
        if event.iteration % 10 == 0 or event.iteration == event.iterations:
            print(f"  {event.iteration}/{event.iterations} level {event.level + 1} {event.elapsed:.0f} s",
                  file=sys.stderr, flush=True)

    started = time.perf_counter()
    result = engine.render(config, content, [style], callback=record)
    total = time.perf_counter() - started
    backbone = engine.load_backbone(config.runtime.model, config.taps, pooling=config.runtime.pooling)
    rate = matrix_tflops(device, size=4096 if device.type == "cuda" else 1024)  # as styleforge bench measures it
    levels, previous = [], 0.0
    for index, level in enumerate(plan.levels):
        times = [elapsed for lvl, elapsed in marks if lvl == index]
        if not times:
            continue
        seconds = times[-1] - previous
        previous = times[-1]
        per_iteration = seconds / len(times)
        tflops = conv_flops(backbone, level.height, level.width) / per_iteration / 1e12
        levels.append({"width": level.width, "height": level.height, "iterations": len(times),
                       "seconds": round(seconds, 2), "s_per_iteration": round(per_iteration, 4),
                       "tiles": level.tiles, "tile_size": level.tile_size, "lbfgs_history": level.lbfgs_history,
                       "planned_bytes": level.total_bytes, "tflops": round(tflops, 4),
                       "share_of_matrix_rate": round(tflops / rate, 4)})
    if args.save_images:
        out = Path(args.save_images) / f"highres_{result.image.shape[-1]}x{result.image.shape[-2]}.png"
        if out.exists():
            out.unlink()  # the benchmark's own previous output
        engine.save_image(result.image, out)
    final = plan.levels[-1]
    return {"size": f"{final.width}x{final.height}", "long_side": max(final.width, final.height),
            "mode": f"{args.iterations} iterations at the final size" if args.iterations else "full default schedule",
            "backend": args.backend + (" + CUDA graphs" if args.cuda_graphs else ""),
            "precision": engine.Precision.resolve(config.runtime.precision, device).name, "device": str(device),
            "budget_bytes": plan.budget_bytes, "total_seconds": round(total, 1), "iterations": result.iterations,
            "peak_memory_bytes": result.peak_memory, "matrix_tflops": round(rate, 3), "levels": levels}


def _chart(paths: list[Path], png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--chart needs matplotlib: pip install 'styleforge[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        for row in report["results"]:
            key = f"{row['backend']} {row['precision']} on {row['device']}"
            series.setdefault(key, []).append(row)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, rows in sorted(series.items()):
        rows.sort(key=lambda row: row["long_side"])
        sides = [row["long_side"] for row in rows]
        left.plot(sides, [row["levels"][-1]["s_per_iteration"] for row in rows], marker="o", label=key)
        right.plot(sides, [row["peak_memory_bytes"] / 2**30 for row in rows], marker="o", label=key)
    left.set(xlabel="long side (px)", ylabel="seconds per iteration at the final size", xscale="log", yscale="log",
             title="time per iteration")
    right.set(xlabel="long side (px)", ylabel="peak memory (GiB)", xscale="log", title="peak memory")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512", "1024", "2048"])
    parser.add_argument("--iterations", type=int, default=0, help="only the final size, this many iterations")
    parser.add_argument("--max-memory", default=None)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="vgg16-hed", help="vgg16-random for a dry run (timing only)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the torch backend's passes as CUDA graphs")
    parser.add_argument("--content", default=str(ROOT.parent / "examples" / "tubingen.jpg"))
    parser.add_argument("--style", default=str(ROOT.parent / "examples" / "starry_night.jpg"))
    parser.add_argument("--save-images", default=None, help="folder for the rendered images")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "highres.json")
    parser.add_argument("--chart", type=Path, nargs="*", help="draw these JSON reports into --png")
    parser.add_argument("--png", type=Path, default=ROOT / "results" / "highres.png")
    parser.add_argument("--one", dest="size", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chart:
        _chart(args.chart, args.png)
        return
    if args.size is not None:  # the child process
        print(json.dumps(_one(args)))
        return
    rows = []
    for size in args.sizes:
        child = [sys.executable, __file__, "--one", size] + [
            f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
            if name in ("iterations", "max_memory", "backend", "precision", "device", "model", "content", "style",
                        "save_images") and value] + (["--cuda-graphs"] if args.cuda_graphs else [])
        completed = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=True)
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1], indent=1), flush=True)
        write_report(args.out, "highres", rows)


if __name__ == "__main__":
    main()
