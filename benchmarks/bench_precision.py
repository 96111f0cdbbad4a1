"""How far half-precision renders land from fp32: PSNR of bf16 / fp16 (/ tf32) against fp32.

L-BFGS amplifies any rounding difference, so ``--baseline`` adds the same fp32 render on
onnxruntime (gradients equal to torch's within 1e-6): the PSNR that rounding alone gives.

The same render (examples, seed, schedule) at each precision; PSNR in dB over the whole image
in [0, 1], and each render's time. On a GPU run it at a production size; on a CPU bf16 and fp16
are emulated or slow, but the arithmetic, and so the PSNR, is the same.

    python benchmarks/bench_precision.py --size 512 --precisions fp32 tf32 bf16 fp16
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402



def psnr(a, b) -> float:
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256")
    parser.add_argument("--iterations", default="100", help="coarsest level's count, or per level")
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--content", default=str(ROOT.parent / "examples" / "tubingen.jpg"))
    parser.add_argument("--style", default=str(ROOT.parent / "examples" / "starry_night.jpg"))
    parser.add_argument("--baseline", action="store_true",
                        help="also fp32 on onnxruntime: how far rounding alone (1e-6) moves an L-BFGS render")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "precision.json")
    args = parser.parse_args()

    from styleforge import engine

    content, style = engine.load_image(args.content), engine.load_image(args.style)
    base = engine.RenderConfig(size=args.size, iterations=args.iterations, levels=args.levels, device=args.device,
                               backend="torch")
    images, rows = {}, []
    runs = [("torch", "fp32")] + [("torch", p) for p in args.precisions if p != "fp32"]
    if args.baseline:
        runs.append(("onnxruntime", "fp32"))
    for backend, precision in runs:
        started = time.perf_counter()
        result = engine.render(base.replace({"precision": precision, "backend": backend}), content, [style])
        seconds = time.perf_counter() - started
        first = not images
        images.setdefault("fp32", result.image)
        row = {"backend": backend, "precision": precision, "size": f"{result.image.shape[-1]}x{result.image.shape[-2]}",
               "iterations": result.iterations, "seconds": round(seconds, 1), "device": result.device,
               "final_loss": result.losses.get("total"),
               "psnr_vs_torch_fp32_db": None if first else round(psnr(result.image, images["fp32"]), 2)}
        rows.append(row)
        print(row, flush=True)
    write_report(args.out, "precision", rows, content=Path(args.content).name, style=Path(args.style).name)


if __name__ == "__main__":
    main()
