"""The GPU proof's checks and timings, one per invocation (prove.py runs each in its own process).

    python benchmarks/gpu/checks.py NAME --out DIR [--model vgg16-hed] [--dry]

Each writes DIR/NAME.json ({"summary": one line, ...figures}) and, where there is a picture to
look at, PNGs beside it. ``--dry`` runs the same code on the CPU at toy sizes (CI), where the
figures mean nothing and GPU-only comparisons record why they were skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from styleforge import engine
from styleforge.engine import Precision, RenderConfig, backend_for, load_backbone, load_image, render, save_image
from styleforge.engine.backends import TorchBackend, conv_flops, matrix_tflops
from styleforge.engine.batch import BatchJob, run_batch
from styleforge.engine.rendering import build_objective, evaluate, level_inputs, plan_render, prepare_inputs
from styleforge.kernels import cuda_kernels_unavailable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CONTENT, STYLE = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg"


def _device(dry: bool) -> torch.device:
    return torch.device("cpu") if dry else torch.device("cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _sheet(images: list[torch.Tensor], path: Path) -> None:
    """Images side by side (same height) as one PNG, to look at."""
    height = min(image.shape[-2] for image in images)
    row = torch.cat([engine.resize_to(image, height, round(image.shape[-1] * height / image.shape[-2]))
                     for image in images], dim=-1)
    if path.exists():
        path.unlink()
    save_image(row, path)


def _write(out: Path, name: str, summary: str, **figures) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"check": name, "summary": summary, **figures}, indent=2,
                                                 default=str) + "\n")
    print(summary)


def env(args) -> None:
    device = _device(args.dry)
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "threads": torch.get_num_threads()}
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except ImportError:
        info["cupy"] = None
    info["cuda_kernels"] = cuda_kernels_unavailable() or "available"
    info["backends"] = engine.backends.available_backends(device)
    info["tensorrt"] = engine.backends.tensorrt_available() or "available"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    size = 1024 if args.dry else 8192
    rates = {name: round(matrix_tflops(device, dtype=dtype, size=size, tf32=name == "tf32"), 2)
             for name, dtype in (("fp32", "float32"), ("tf32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16"))
             if not (args.dry and name == "fp16")}
    info["matrix_tflops"] = rates
    _write(args.out, "env", f"{info.get('gpu', 'cpu')}: bf16 {rates.get('bf16')} TFLOP/s, tf32 {rates.get('tf32')}, "
                            f"fp32 {rates.get('fp32')}; cuda kernels {info['cuda_kernels']}", **info)


def _images(size: int):
    return engine.resize_long_side(load_image(CONTENT), size * 2), engine.resize_long_side(load_image(STYLE), size * 2)


def render_parity(args) -> None:
    """A fixed-seed render on the GPU against the same render on the CPU (fp32 both)."""
    size, iterations = (48, 5) if args.dry else (256, 20)
    model = "vgg16-random" if args.dry else args.model
    content, style = _images(size)
    results = {}
    for where in ("cpu", "cpu" if args.dry else "cuda"):
        config = RenderConfig(size=size, levels=1, iterations=iterations, precision="fp32", model=model, device=where,
                              backend="torch")
        results[where] = render(config, content, [style])
    cpu, gpu = results["cpu"], results["cpu" if args.dry else "cuda"]
    loss_gap = abs(gpu.losses["total"] - cpu.losses["total"]) / abs(cpu.losses["total"])
    psnr = _psnr(gpu.image, cpu.image)
    _sheet([cpu.image, gpu.image], args.out / "render-parity.png")
    _write(args.out, "render-parity", f"final loss {gpu.losses['total']:.5g} vs CPU {cpu.losses['total']:.5g} "
                                      f"(rel {loss_gap:.2e}), PSNR {psnr:.1f} dB; look at render-parity.png",
           loss_gap=loss_gap, psnr=psnr, passed=loss_gap < 0.02)


def tiled(args) -> None:
    """Tiled equals untiled on the device: loss terms and image gradient (fp32)."""
    device = _device(args.dry)
    height, width = (96, 128) if args.dry else (768, 1024)
    config = RenderConfig(size=width, levels=1, model="vgg16-random", device=device.type, precision="fp32")
    backend = backend_for(config, device)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(3, height, width, generator=generator)
    inputs = prepare_inputs(config, content, [torch.rand(3, height, width, generator=generator)])
    level = level_inputs(config, inputs, (height, width), device, backend.backbone)
    objective = build_objective(config, backend, level)
    image = torch.rand(1, 3, height, width, generator=generator).to(device)
    whole, expected = evaluate(backend, objective, image)
    tile = 32 if args.dry else 256
    windows = plan_render(config.replace({"tile_size": tile}), [(height, width)], device, 2**40).levels[0].windows
    parts, gradient = evaluate(backend, objective, image, windows)
    relative = ((gradient - expected).abs().max() / expected.abs().max()).item()
    loss_gap = abs(parts["total"].item() - whole["total"].item()) / abs(whole["total"].item())
    _write(args.out, "tiled-equals-untiled", f"{len(regions)} tiles: gradient max rel error {relative:.1e}, "
                                             f"loss rel {loss_gap:.1e}", gradient_error=relative, loss_error=loss_gap,
           tiles=len(windows), passed=relative < 1e-4 and loss_gap < 1e-5)


def precision(args) -> None:
    """fp32, tf32, bf16, fp16 renders of the same pair: time, final loss, PSNR against fp32."""
    device = _device(args.dry)
    size, iterations = (48, 5) if args.dry else (512, 100)
    model = "vgg16-random" if args.dry else args.model
    content, style = _images(size)
    names = ("fp32", "bf16") if args.dry else ("fp32", "tf32", "bf16", "fp16")
    rows, images = [], []
    for name in names:
        config = RenderConfig(size=size, levels=1, iterations=iterations, precision=name, model=model,
                              device=device.type, backend="torch")
        _sync(device)
        started = time.perf_counter()
        result = render(config, content, [style])
        _sync(device)
        images.append(result.image)
        rows.append({"precision": name, "seconds": round(time.perf_counter() - started, 2),
                     "loss": result.losses["total"], "psnr_vs_fp32": _psnr(result.image, images[0])})
    _sheet(images, args.out / "precision.png")
    _write(args.out, "precision", "; ".join(f"{r['precision']} {r['seconds']} s loss {r['loss']:.4g} "
                                            f"PSNR {r['psnr_vs_fp32']:.1f}" for r in rows)
           + " (look at precision.png)", rows=rows)


def cuda_graphs(args) -> None:
    """The torch backend replayed as CUDA graphs equals eager, per pass and over a render."""
    if args.dry:
        _write(args.out, "cuda-graphs", "skipped: CUDA graphs need a CUDA device", skipped=True)
        return
    device = torch.device("cuda")
    taps = RenderConfig().taps
    backbone = load_backbone("vgg16-random", taps)
    image = torch.rand(1, 3, 384, 512, device=device)
    rows = []
    for name in ("fp32", "bf16"):
        eager, graphed = TorchBackend(backbone, device, name), TorchBackend(backbone, device, name, cuda_graphs=True)
        upstream = None
        for attempt in range(3):  # capture, then replays
            a, b = eager.forward(image), graphed.forward(image)
            if upstream is None:
                upstream = {tap: torch.randn_like(value) for tap, value in a.items()}
            ga, gb = eager.backward(upstream), graphed.backward(upstream)
        feature_error = max(((a[t] - b[t]).abs().max() / a[t].abs().max()).item() for t in taps)
        grad_error = ((ga - gb).abs().max() / ga.abs().max()).item()
        rows.append({"precision": name, "feature_error": feature_error, "gradient_error": grad_error})
    _write(args.out, "cuda-graphs", "; ".join(f"{r['precision']}: features {r['feature_error']:.1e}, gradient "
                                              f"{r['gradient_error']:.1e}" for r in rows), rows=rows,
           passed=all(r["feature_error"] < 1e-5 and r["gradient_error"] < 1e-5 for r in rows))


def batch_devices(args) -> None:
    """A job through `batch --devices 0` gives the plain render's image."""
    device = _device(args.dry)
    size = 48 if args.dry else 256
    folder = args.out / "batch-devices"
    folder.mkdir(parents=True, exist_ok=True)
    config = RenderConfig(size=size, levels=1, iterations=10, model="vgg16-random", device=device.type,
                          precision="fp32", backend="torch")
    output = folder / "job.png"
    if output.exists():
        output.unlink()
    job = BatchJob(line=1, output=output, styles=(STYLE,), config=config, content=CONTENT)
    outcome = run_batch([job], devices=None if args.dry else [0], overwrite=True)[0]
    plain = render(config, load_image(CONTENT), [load_image(STYLE)]).image
    difference = (load_image(output) - plain).abs().max().item() if outcome.status == "done" else None
    _write(args.out, "batch-devices", f"job {outcome.status}; max difference to a plain render {difference} "
                                      "(8-bit output: 1/255 = 0.0039)", status=outcome.status, reason=outcome.reason,
           difference=difference, passed=difference is not None and difference <= 1.5 / 255)


def planner_memory(args) -> None:
    """The planner's estimate against the measured peak of two iterations at each size."""
    device = _device(args.dry)
    sizes = ["64", "96"] if args.dry else ["1024", "3840x2160", "7680x4320"]
    rows = []
    for size in sizes:
        config = RenderConfig(size=size, levels=1, iterations=2, model="vgg16-random", device=device.type)
        content, style = _images(256)
        plan = engine.plan_for(config, engine.rendering.crop_to_frame(content, config), device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        result = render(config, content, [style])
        level = plan.levels[-1]
        rows.append({"size": size, "tiles": level.tiles, "planned_bytes": level.total_bytes,
                     "peak_bytes": result.peak_memory, "ratio": round(result.peak_memory / level.total_bytes, 3)})
    _write(args.out, "planner-memory", "; ".join(f"{r['size']}: peak/plan {r['ratio']} ({r['tiles']} tiles)"
                                                 for r in rows), rows=rows)


def per_iteration(args) -> None:
    """Seconds per evaluation (forward, losses, image gradient) per size, precision and CUDA
    graphs, channels-last (the torch backend always is), with the convolutions' share of the
    measured bf16 matrix rate."""
    device = _device(args.dry)
    sizes = ["64"] if args.dry else ["512", "1024", "2048", "3840x2160", "7680x4320"]
    precisions = ("fp32", "bf16") if args.dry else ("fp32", "tf32", "bf16", "fp16")
    graph_modes = (False,) if args.dry else (False, True)
    peak = matrix_tflops(device, dtype="bfloat16", size=1024 if args.dry else 8192)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in sizes:
        height, width = engine.frame_shape(engine.parse_size(size))
        config = RenderConfig(size=size, levels=1, model="vgg16-random", device=device.type, precision="fp32")
        reference = backend_for(config, device)
        inputs = prepare_inputs(config, torch.rand(3, height, width, generator=generator),
                                [torch.rand(3, min(height, 1024), min(width, 1024), generator=generator)])
        level = level_inputs(config, inputs, (height, width), device, reference.backbone)
        plan = plan_render(config, [(height, width)], device).levels[0]
        objective = build_objective(config, reference, level, tile_size=plan.tile_size)
        image = torch.rand(1, 3, height, width, generator=generator).to(device)
        flops = conv_flops(reference.backbone, height, width)
        for name in precisions:
            for graphs in graph_modes:
                backend = TorchBackend(reference.backbone, device, Precision(name), cuda_graphs=graphs)
                times = []
                repeats = 2 if args.dry else (3 if height * width > 4e6 else 8)
                for attempt in range(2 + repeats):
                    _sync(device)
                    started = time.perf_counter()
                    with Precision(name).numerics(device):
                        evaluate(backend, objective, image, plan.windows)
                    _sync(device)
                    if attempt >= 2:
                        times.append(time.perf_counter() - started)
                seconds = statistics.median(times)
                rows.append({"size": f"{width}x{height}", "precision": name, "cuda_graphs": graphs,
                             "tiles": plan.tiles, "s_per_iteration": round(seconds, 5),
                             "conv_tflops": round(flops / seconds / 1e12, 2),
                             "share_of_bf16_rate": round(flops / seconds / 1e12 / peak, 3)})
                print(rows[-1], flush=True)
                del backend
            if device.type == "cuda":
                torch.cuda.empty_cache()
    smallest = rows[0]["size"]
    best = min((r for r in rows if r["size"] == smallest), key=lambda r: r["s_per_iteration"])
    _write(args.out, "per-iteration", f"{smallest} best {best['s_per_iteration']} s/iteration ({best['precision']}, "
                                      f"graphs {best['cuda_graphs']}); bf16 rate {peak:.0f} TFLOP/s", rows=rows,
           bf16_tflops=peak)


def mrf_doodle(args) -> None:
    """MRF at CNNMRF's benchmark size (384 px, 3 levels x 100) and neural-doodle's coast."""
    device = _device(args.dry)
    model = "vgg16-random" if args.dry else args.model
    shared = ROOT.parent / "shared" / "images"
    portrait = shared / "content" / "cnnmrf_portrait.jpg"
    picasso = shared / "style" / "cnnmrf_picasso.jpg"
    if not portrait.exists():
        portrait, picasso = ROOT / "tests" / "data" / "cnnmrf_portrait.jpg", ROOT / "tests" / "data" / "cnnmrf_picasso.jpg"
    size, iterations = (128, 3) if args.dry else (384, 100)
    config = RenderConfig.mrf_defaults(size=size, iterations=iterations, model=model, device=device.type)
    rows = []
    _sync(device)
    started = time.perf_counter()
    result = render(config, load_image(portrait), [load_image(picasso)])
    _sync(device)
    rows.append({"render": "portrait x picasso", "seconds": round(time.perf_counter() - started, 2)})
    _sheet([load_image(portrait), result.image], args.out / "mrf.png")
    doodle = shared / "doodle"
    if doodle.exists():
        _sync(device)
        started = time.perf_counter()
        result = render(config, None, [load_image(doodle / "Monet.jpg")], content_map=load_image(doodle / "Coastline_sem.png"),
                        style_maps=[load_image(doodle / "Monet_sem.png")])
        _sync(device)
        rows.append({"render": "doodle Coastline x Monet", "seconds": round(time.perf_counter() - started, 2)})
        _sheet([result.image], args.out / "doodle.png")
    _write(args.out, "mrf-doodle", "; ".join(f"{r['render']} {r['seconds']} s" for r in rows), rows=rows)


def batch_rate(args) -> None:
    """Jobs per hour at 512 px (the default schedule) on one GPU, style targets shared."""
    device = _device(args.dry)
    model = "vgg16-random" if args.dry else args.model
    count, size = (2, 48) if args.dry else (8, 512)
    folder = args.out / "batch-rate"
    folder.mkdir(parents=True, exist_ok=True)
    config = RenderConfig(size=size, model=model, device=device.type, precision="auto" if not args.dry else "fp32",
                          **({"iterations": 2} if args.dry else {}))
    jobs = [BatchJob(line=index + 1, output=folder / f"{index}.png", styles=(STYLE,), config=config, content=CONTENT)
            for index in range(count)]
    started = time.perf_counter()
    outcomes = run_batch(jobs, overwrite=True)
    seconds = time.perf_counter() - started
    done = sum(outcome.status == "done" for outcome in outcomes)
    _write(args.out, "batch-rate", f"{done}/{count} jobs in {seconds:.1f} s: {done / seconds * 3600:.0f} jobs/hour",
           jobs=count, done=done, seconds=round(seconds, 2), jobs_per_hour=round(done / seconds * 3600))


CHECKS = {"env": env, "render-parity": render_parity, "tiled-equals-untiled": tiled, "precision": precision,
          "cuda-graphs": cuda_graphs, "batch-devices": batch_devices, "planner-memory": planner_memory,
          "per-iteration": per_iteration, "mrf-doodle": mrf_doodle, "batch-rate": batch_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="vgg16-hed")
    parser.add_argument("--dry", action="store_true")
    args = parser.parse_args()
    CHECKS[args.check](args)


if __name__ == "__main__":
    main()
