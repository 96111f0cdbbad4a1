"""The GPU proof's checks and timings, one per invocation (prove.py runs each in its own process).

    python benchmarks/gpu/checks.py NAME --out DIR [--model MODEL] [--dry]

Each writes DIR/NAME.json ({"summary": one line, "checks": [{figure, threshold, passed}],
"passed": all of them, ...figures}) and, where there is a picture to look at, PNGs beside it;
speed checks also append each row to DIR/NAME.jsonl the moment it is measured, so a later failure
(an out-of-memory at 8K) keeps the earlier rows. A check that misses its threshold exits 1, and
on a GPU so does any kernel fallback to torch (kernels.kernel_fallbacks()). ``--dry`` runs the
same code on the CPU at toy sizes (CI), where the figures mean nothing and GPU-only comparisons
record why they were skipped. STYLEFORGE_PROOF_PLANT=NAME makes check NAME's thresholds
impossible to meet: how CI shows that a failing check fails the proof.
``--model`` (default: the default render's, vgg19-oxford-8bit) is what the checks that need real
weights render with; the others, and every check in a dry run, use the seeded random model of its
architecture (vgg19-random): their figures depend on the network's shape, not its weights.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

from styleforge import engine
from styleforge.engine import Precision, RenderConfig, backend_for, load_backbone, load_image, render, save_image
from styleforge.engine.backends import TorchBackend, conv_flops, matrix_tflops
from styleforge.engine.batch import BatchJob, run_batch
from styleforge.engine.rendering import build_objective, evaluate, level_inputs, plan_render, prepare_inputs
from styleforge.kernels import cuda_kernels_unavailable, gram_cuda, gram_reference, kernel_fallbacks

from pack_weights import MODEL, random_model

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


_OPS = {"in": lambda value, allowed: value in allowed, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge, "==": operator.eq}


def _limit(label: str, value, op: str, threshold) -> dict:
    """One figure against its threshold (the verdict is filled in by _write)."""
    return {"check": label, "value": value, "op": op, "threshold": threshold}


def _write(args, name: str, summary: str, checks: list[dict] | tuple = (), **figures) -> None:
    """NAME.json with every figure beside its threshold; exits 1 when any misses it. On a GPU,
    a kernel that fell back to torch is one more failed check."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    checks = list(checks)
    if not args.dry:
        fallbacks = kernel_fallbacks()
        checks.append(_limit(f"kernel fallbacks to torch {fallbacks or ''}".strip(), sum(fallbacks.values()), "==", 0))
    planted = os.environ.get("STYLEFORGE_PROOF_PLANT") == name
    for check in checks:
        value, threshold = check["value"], check["threshold"]
        met = value is not None and not (isinstance(value, float) and math.isnan(value)) \
            and bool(_OPS[check["op"]](value, threshold))
        if planted:
            check["check"] += " (planted: threshold made impossible)"
            met = False
        check["passed"] = met
    passed = all(check["passed"] for check in checks)
    (out / f"{name}.json").write_text(json.dumps({"check": name, "summary": summary, "checks": checks,
                                                  "passed": passed, **figures}, indent=2, default=str) + "\n")
    print(summary)
    for check in checks:
        print(f"  {'ok    ' if check['passed'] else 'FAILED'} {check['check']}: {check['value']} "
              f"(needs {check['op']} {check['threshold']})")
    if not passed:
        raise SystemExit(1)


def _append(out: Path, name: str, row: dict) -> None:
    """One measured row, written at once (NAME.jsonl): a later crash keeps it."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.jsonl", "a") as handle:
        handle.write(json.dumps(row, default=str) + "\n")
    print(row, flush=True)


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
    _write(args, "env", f"{info.get('gpu', 'cpu')}: bf16 {rates.get('bf16')} TFLOP/s, tf32 {rates.get('tf32')}, "
                            f"fp32 {rates.get('fp32')}; cuda kernels {info['cuda_kernels']}", **info)


def _images(size: int):
    return engine.resize_long_side(load_image(CONTENT), size * 2), engine.resize_long_side(load_image(STYLE), size * 2)


def _model(args) -> str:
    """The model of a check that wants real weights: ``--model``, or its random twin in a dry run."""
    return random_model(args.model) if args.dry else args.model


def render_parity(args) -> None:
    """A fixed-seed render on the GPU against the same render on the CPU (fp32 both)."""
    size, iterations = (48, 5) if args.dry else (256, 20)
    model = _model(args)
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
    _write(args, "render-parity", f"final loss {gpu.losses['total']:.5g} vs CPU {cpu.losses['total']:.5g} "
                                      f"(rel {loss_gap:.2e}), PSNR {psnr:.1f} dB; look at render-parity.png",
           [_limit("final loss, relative gap to the CPU", loss_gap, "<", 0.02)], loss_gap=loss_gap, psnr=psnr)


def tiled(args) -> None:
    """Tiled equals untiled on the device: loss terms and image gradient (fp32)."""
    device = _device(args.dry)
    height, width = (96, 128) if args.dry else (768, 1024)
    config = RenderConfig(size=width, levels=1, model=random_model(args.model), device=device.type, precision="fp32")
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
    _write(args, "tiled-equals-untiled", f"{len(windows)} tiles: gradient max rel error {relative:.1e}, "
                                             f"loss rel {loss_gap:.1e}",
           [_limit("image gradient, max relative error", relative, "<", 1e-4),
            _limit("loss, relative error", loss_gap, "<", 1e-5)],
           gradient_error=relative, loss_error=loss_gap, tiles=len(windows))


def precision(args) -> None:
    """fp32, tf32, bf16, fp16 renders of the same pair: time, final loss, PSNR against fp32."""
    device = _device(args.dry)
    size, iterations = (48, 5) if args.dry else (512, 100)
    model = _model(args)
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
    _write(args, "precision", "; ".join(f"{r['precision']} {r['seconds']} s loss {r['loss']:.4g} "
                                            f"PSNR {r['psnr_vs_fp32']:.1f}" for r in rows)
           + " (look at precision.png)",
           [_limit(f"{r['precision']} final loss is finite", math.isfinite(r["loss"]), "==", True) for r in rows],
           rows=rows)


def cuda_graphs(args) -> None:
    """The torch backend replayed as CUDA graphs equals eager, per pass and over a render."""
    if args.dry:
        _write(args, "cuda-graphs", "skipped: CUDA graphs need a CUDA device", skipped=True)
        return
    device = torch.device("cuda")
    taps = RenderConfig().taps
    backbone = load_backbone(random_model(args.model), taps)
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
    # bf16: eager and replayed runs may round differently (autocast's weight cache is off while
    # capturing), so bf16's own rounding (2^-8) is the scale; fp32 must agree closely.
    tolerance = {"fp32": 1e-5, "bf16": 3e-2}
    _write(args, "cuda-graphs", "; ".join(f"{r['precision']}: features {r['feature_error']:.1e}, gradient "
                                          f"{r['gradient_error']:.1e}" for r in rows),
           [_limit(f"{r['precision']} {what}, graphs vs eager", r[key], "<", tolerance[r["precision"]])
            for r in rows for what, key in (("features", "feature_error"), ("gradient", "gradient_error"))],
           rows=rows)


def batch_devices(args) -> None:
    """A job through `batch --devices 0` gives the plain render's image."""
    device = _device(args.dry)
    size = 48 if args.dry else 256
    folder = args.out / "batch-devices"
    folder.mkdir(parents=True, exist_ok=True)
    config = RenderConfig(size=size, levels=1, iterations=10, model=random_model(args.model), device=device.type,
                          precision="fp32", backend="torch")
    output = folder / "job.png"
    if output.exists():
        output.unlink()
    job = BatchJob(line=1, output=output, styles=(STYLE,), config=config, content=CONTENT)
    outcome = run_batch([job], devices=None if args.dry else [0], overwrite=True)[0]
    plain = render(config, load_image(CONTENT), [load_image(STYLE)]).image
    difference = (load_image(output) - plain).abs().max().item() if outcome.status == "done" else None
    _write(args, "batch-devices", f"job {outcome.status}; max difference to a plain render {difference} "
                                  "(8-bit output: 1/255 = 0.0039)",
           [_limit(f"job {outcome.status}: max difference to a plain render", difference, "<=", 1.5 / 255)],
           status=outcome.status, reason=outcome.reason, difference=difference)


def planner_memory(args) -> None:
    """The planner's estimate against the measured peak of two iterations at each size."""
    device = _device(args.dry)
    sizes = ["64", "96"] if args.dry else ["1024", "3840x2160"]
    rows = []
    for size in sizes:
        config = RenderConfig(size=size, levels=1, iterations=2, model=random_model(args.model), device=device.type)
        content, style = _images(256)
        plan = engine.plan_for(config, engine.rendering.crop_to_frame(content, config), device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        result = render(config, content, [style])
        level = plan.levels[-1]
        rows.append({"size": size, "tiles": level.tiles, "planned_bytes": level.total_bytes,
                     "peak_bytes": result.peak_memory, "ratio": round(result.peak_memory / level.total_bytes, 3)})
    # The plan is a promise: the measured peak (max_memory_allocated) must stay within it.
    _write(args, "planner-memory", "; ".join(f"{r['size']}: peak/plan {r['ratio']} ({r['tiles']} tiles)"
                                             for r in rows),
           # On CPU the peak is the process's whole RSS, not the allocator's: no promise to check there.
           [] if args.dry else [_limit(f"{r['size']}: measured peak / planned bytes", r["ratio"], "<=", 1.0)
                                for r in rows], rows=rows)


#: The matrix rate each precision's convolutions are measured against (its own, not fp32's).
_RATE_DTYPES = {"fp32": ("float32", False), "tf32": ("float32", True), "bf16": ("bfloat16", False),
                "fp16": ("float16", False)}


def per_iteration(args) -> None:
    """Seconds per evaluation (forward, losses, image gradient) per size, precision and CUDA
    graphs (eager beside graphed, in the same run), channels-last, with the convolutions' share of
    the same precision's measured matrix rate. Rows are written as measured (per-iteration.jsonl)."""
    device = _device(args.dry)
    sizes = ["64"] if args.dry else ["512", "2048", "3840x2160"]
    precisions = ("fp32", "bf16") if args.dry else ("tf32", "bf16", "fp16")
    graph_modes = (False,) if args.dry else (False, True)
    rate_size = 1024 if args.dry else 8192
    rates = {name: matrix_tflops(device, dtype=dtype, size=rate_size, tf32=tf32)
             for name, (dtype, tf32) in _RATE_DTYPES.items() if name in precisions}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in sizes:
        height, width = engine.frame_shape(engine.parse_size(size))
        config = RenderConfig(size=size, levels=1, model=random_model(args.model), device=device.type, precision="fp32")
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
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                repeats = 2 if args.dry else (3 if height * width > 4e6 else 8)
                for attempt in range(2 + repeats):  # two warm-ups: cuDNN's choice, the capture
                    _sync(device)
                    started = time.perf_counter()
                    with Precision(name).numerics(device):
                        evaluate(backend, objective, image, plan.windows)
                    _sync(device)
                    if attempt >= 2:
                        times.append(time.perf_counter() - started)
                seconds = statistics.median(times)
                row = {"size": f"{width}x{height}", "precision": name, "cuda_graphs": graphs, "tiles": plan.tiles,
                       "s_per_iteration": round(seconds, 5), "conv_tflops": round(flops / seconds / 1e12, 2),
                       "matrix_tflops": round(rates[name], 1),
                       "share_of_matrix_rate": round(flops / seconds / 1e12 / rates[name], 3),
                       "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0}
                rows.append(row)
                _append(args.out, "per-iteration", row)
                backend.use_graphs(())  # frees the captures now (no gc needed)
                del backend
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    # The same report as `styleforge bench --report` (charts, summary, the machine), so a GPU's
    # proof lays beside any machine's bench report (`styleforge bench --compare`).
    report_rows = [{"backend": "torch graphs" if r["cuda_graphs"] else "torch", "precision": r["precision"],
                    "width": int(r["size"].split("x")[0]), "height": int(r["size"].split("x")[1]),
                    "ms_per_iteration": r["s_per_iteration"] * 1e3, "images_per_second": 1 / r["s_per_iteration"],
                    "tflops": r["conv_tflops"],
                    "share_of_matrix_rate": r["share_of_matrix_rate"], "peak_memory_bytes": r["peak_memory_bytes"]}
                   for r in rows]
    engine.write_bench_report(report_rows, engine.describe_machine(device), args.out / "bench-report",
                              model=random_model(args.model), matmul_tflops=rates,
                              source="benchmarks/gpu/checks.py per-iteration")
    smallest = rows[0]["size"]
    best = min((r for r in rows if r["size"] == smallest), key=lambda r: r["s_per_iteration"])
    _write(args, "per-iteration", f"{smallest} best {best['s_per_iteration']} s/iteration ({best['precision']}, "
                                  f"graphs {best['cuda_graphs']}); matrix rates "
                                  + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + " TFLOP/s",
           rows=rows, matrix_tflops=rates)


def gram_speed(args) -> None:
    """The CuPy Gram kernel beside cuBLAS (torch matmul) per mode, forward + backward, at the
    Gram layers' 4K UHD shapes: what kernels.KERNEL_MEASURED_FASTER is decided from."""
    if args.dry or cuda_kernels_unavailable() is not None:
        _write(args, "gram-speed", f"skipped: {cuda_kernels_unavailable() if not args.dry else 'dry run'}",
               skipped=True)
        return
    device = torch.device("cuda")
    rows = []
    for shape in ((1, 64, 2160, 3840), (1, 256, 540, 960), (1, 512, 270, 480)):
        for mode, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16),
                            ("fp16", torch.float16)):
            features = torch.randn(*shape, device=device).to(dtype).requires_grad_(True)
            row = {"shape": "x".join(map(str, shape)), "mode": mode}
            for label, function in (("kernel", gram_cuda), ("cublas", _cublas_gram)):
                before = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
                try:
                    times = []
                    for attempt in range(6):
                        _sync(device)
                        started = time.perf_counter()
                        function(features).sum().backward()
                        _sync(device)
                        if attempt >= 2:
                            times.append(time.perf_counter() - started)
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = before
                row[f"{label}_ms"] = round(statistics.median(times) * 1e3, 3)
            row["kernel_faster"] = row["kernel_ms"] < row["cublas_ms"]
            rows.append(row)
            _append(args.out, "gram-speed", row)
    faster = sorted({r["mode"] for r in rows if r["kernel_faster"]})
    _write(args, "gram-speed", f"CuPy Gram faster than cuBLAS in: {', '.join(faster) or 'no mode'}", rows=rows)


def _cublas_gram(features: torch.Tensor) -> torch.Tensor:
    if features.dtype in (torch.float16, torch.bfloat16):
        flat = features.flatten(2)
        return torch.bmm(flat, flat.transpose(1, 2), out_dtype=torch.float32) / flat.shape[2]
    return gram_reference(features)


#: The issue's targets on an H100, in seconds: (label, size, RenderConfig fields, target).
RENDERS = (("512 px x 500 iterations", "512", {"levels": 1, "iterations": 500}, 1.5),
           ("4K UHD, default schedule", "3840x2160", {}, 10.0),
           ("8K UHD, default schedule", "7680x4320", {}, 45.0))


def renders(args) -> None:
    """Whole renders against the targets, start-up excluded: one small render first (CUDA and
    cuDNN initialisation, NVRTC compiles), then each render timed alone, each row written at once."""
    device = _device(args.dry)
    model = _model(args)
    content, style = _images(64 if args.dry else 1024)
    warm = RenderConfig(size=64 if args.dry else 256, levels=1, iterations=2, model=model, device=device.type,
                        precision="bf16" if not args.dry else "fp32")
    render(warm, content, [style])
    rows, checks = [], []
    for label, size, fields, target in RENDERS:
        if args.dry:
            size, fields = "64", {"levels": 1, "iterations": 2}
        config = RenderConfig(size=size, model=model, device=device.type, precision="bf16" if not args.dry else "fp32",
                              **fields)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        started = time.perf_counter()
        result = render(config, content, [style])
        _sync(device)
        seconds = round(time.perf_counter() - started, 2)
        row = {"render": label, "size": size, "seconds": seconds, "target_s": target, "met": seconds < target,
               "peak_gib": round(result.peak_memory / 2**30, 2)}
        rows.append(row)
        _append(args.out, "renders", row)
        if not args.dry:
            checks.append(_limit(f"{label}, seconds", seconds, "<", target))
        del result
    _write(args, "renders", "; ".join(f"{r['render']} {r['seconds']} s (target < {r['target_s']})" for r in rows),
           checks, rows=rows)


def gpu_tests(args) -> None:
    """``pytest -m gpu``: on a GPU every test must run and pass (a skip is a failure: the kernels
    did not compile or load, or CUDA is not visible); in a dry run they skip, as expected."""
    xml = args.out / "gpu-tests.xml"
    completed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider",
                                "--junitxml", str(xml), str(ROOT / "tests")], cwd=ROOT, check=False)
    counts = junit_counts(xml)
    checks = [_limit("pytest exit status", completed.returncode, "in", (0, 5)),
              _limit("GPU tests failed or errored", counts["failures"] + counts["errors"], "==", 0)]
    if not args.dry:
        checks += [_limit("GPU tests skipped (each is a path not proven)", counts["skipped"], "==", 0),
                   _limit("GPU tests run", counts["tests"], ">", 0)]
    _write(args, "gpu-tests", f"{counts['tests']} tests: {counts['failures']} failed, {counts['errors']} errors, "
                              f"{counts['skipped']} skipped", checks, **counts)


def junit_counts(xml: Path) -> dict[str, int]:
    """tests, failures, errors, skipped summed over a JUnit XML's test suites (zeros if absent)."""
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    if not xml.exists():
        return counts
    root = ElementTree.parse(xml).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def sanitize(args) -> None:
    """compute-sanitizer memcheck, racecheck and synccheck on the CuPy kernels at small, ragged
    shapes (benchmarks/gpu/sanitize_kernels.py), only the project's kernels instrumented."""
    script = [sys.executable, str(Path(__file__).parent / "sanitize_kernels.py")]
    if args.dry:
        completed = subprocess.run(script, cwd=ROOT, check=False)
        _write(args, "sanitize", "dry run: the kernel script ran without compute-sanitizer",
               [_limit("script exit status", completed.returncode, "==", 0)])
        return
    rows, checks = [], []
    for tool in ("memcheck", "racecheck", "synccheck"):
        command = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "99",
                   "--kernel-name", "regex=(gram_|mrf_nearest)", *script]
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        (args.out / f"sanitize-{tool}.log").write_text(completed.stdout + completed.stderr)
        summary = next((line for line in (completed.stdout + completed.stderr).splitlines()
                        if "ERROR SUMMARY" in line), "no ERROR SUMMARY line")
        rows.append({"tool": tool, "exit": completed.returncode, "summary": summary,
                     "seconds": round(time.perf_counter() - started, 1)})
        checks.append(_limit(f"{tool}: exit status ({summary})", completed.returncode, "==", 0))
    _write(args, "sanitize", "; ".join(f"{r['tool']}: {r['summary']}" for r in rows), checks, rows=rows)


def mrf_doodle(args) -> None:
    """MRF at CNNMRF's benchmark size (384 px, 3 levels x 100) and neural-doodle's coast."""
    device = _device(args.dry)
    model = _model(args)
    shared = ROOT.parent / "shared" / "images"
    portrait = shared / "content" / "cnnmrf_portrait.jpg"
    picasso = shared / "style" / "cnnmrf_picasso.jpg"
    if not portrait.exists():
        portrait = ROOT / "tests" / "data" / "cnnmrf_portrait.jpg"
        picasso = ROOT / "tests" / "data" / "cnnmrf_picasso.jpg"
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
        result = render(config, None, [load_image(doodle / "Monet.jpg")],
                        content_map=load_image(doodle / "Coastline_sem.png"),
                        style_maps=[load_image(doodle / "Monet_sem.png")])
        _sync(device)
        rows.append({"render": "doodle Coastline x Monet", "seconds": round(time.perf_counter() - started, 2)})
        _sheet([result.image], args.out / "doodle.png")
    _write(args, "mrf-doodle", "; ".join(f"{r['render']} {r['seconds']} s" for r in rows), rows=rows)


def batch_rate(args) -> None:
    """Jobs per hour at 512 px (the default schedule) on one GPU, style targets shared."""
    device = _device(args.dry)
    model = _model(args)
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
    _write(args, "batch-rate", f"{done}/{count} jobs in {seconds:.1f} s: {done / seconds * 3600:.0f} jobs/hour",
           jobs=count, done=done, seconds=round(seconds, 2), jobs_per_hour=round(done / seconds * 3600))


CHECKS = {"env": env, "gpu-tests": gpu_tests, "sanitize": sanitize, "render-parity": render_parity,
          "tiled-equals-untiled": tiled, "precision": precision, "cuda-graphs": cuda_graphs,
          "batch-devices": batch_devices, "planner-memory": planner_memory, "per-iteration": per_iteration,
          "gram-speed": gram_speed, "renders": renders, "mrf-doodle": mrf_doodle, "batch-rate": batch_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--dry", action="store_true")
    args = parser.parse_args()
    CHECKS[args.check](args)


if __name__ == "__main__":
    main()
