"""Forward + image gradient per backend, side by side in one run (what `styleforge bench` does).

    python benchmarks/bench_backends.py                         # 256, 512, 1024 px, every backend present
    python benchmarks/bench_backends.py --sizes 1024 2048 3840x2160 --device cuda

Prints a table and writes JSON (ms per iteration, images per second, peak memory, achieved
TFLOP/s from the convolutions' FLOP count). On a GPU, compare the TFLOP/s with the device's
measured matrix rate (see RESULTS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import write_report

from styleforge.engine import RenderConfig, backend_for, frame_shape, load_backbone, parse_size, resolve_device
from styleforge.engine.backends import available_backends, time_backend

TAPS = ("relu4_2", "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def frame(text: str) -> tuple[int, int]:
    """(height, width) of a long side (landscape 4:3) or WIDTHxHEIGHT: the engine's size grammar."""
    return frame_shape(parse_size(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "1024"], help="long side or WIDTHxHEIGHT")
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--model", default="vgg19-random", help="timing does not depend on the weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "backends.json")
    args = parser.parse_args()

    device = resolve_device(args.device)
    names = args.backends or available_backends(device)
    backbone = load_backbone(args.model, TAPS)
    rows = []
    for name in names:
        config = RenderConfig(backend=name, model=args.model, precision="auto")
        backend = backend_for(config, device, [frame(s) for s in args.sizes], backbone=backbone)
        for size in args.sizes:
            timing = time_backend(backend, *frame(size), iterations=args.iterations, warmup=args.warmup)
            rows.append(timing.to_dict())
            print(f"{name:12s} {timing.width:5d}x{timing.height:<5d} {timing.ms_per_iteration:9.1f} ms/iter "
                  f"{timing.images_per_second:7.2f} img/s  peak {timing.peak_memory_bytes / 2**30:6.2f} GiB  "
                  f"{timing.tflops:6.2f} TFLOP/s", flush=True)
    write_report(args.output, "forward + image gradient per backend", rows, model=args.model)


if __name__ == "__main__":
    main()
