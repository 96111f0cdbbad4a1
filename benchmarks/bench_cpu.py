"""Per-evaluation time on the CPU: a plain eager PyTorch port against styleforge, side by side.

One evaluation is what an L-BFGS step costs: the network's forward to the deepest tap, the Gram
style, content and total-variation losses, and the gradient with respect to the image.

- **baseline**: what the classic PyTorch ports of neural-style do (the PyTorch tutorial,
  neural-style-pt): a torchvision-style ``nn.Sequential`` VGG16 ``features`` (Conv2d, in-place
  ReLU, MaxPool2d) run to the deepest tap in NCHW fp32, ``F.mse_loss`` on Gram matrices and
  features, ``loss.backward()`` to the image, ``torch.optim.LBFGS`` without line search.
- **styleforge**: ``render()`` with its CPU configuration (``--precision auto``, the torch
  backend, channels-last, Winograd where it measured faster, freed memory kept, ``--compile``
  when asked), timed from its own per-evaluation events.

Same architecture (vgg16, vgg16-hed's: the default model when these figures were taken; the default is
VGG19 since 2026-12-06), same seeded random weights (timing does not
depend on them), same layers and image size. Each (side, round) runs in a fresh process so its
peak RSS is its own, and the sides alternate round by round, so a neighbour's load falls on both.

    python benchmarks/bench_cpu.py                        # 512x384, JSON to results/cpu.json
    python benchmarks/bench_cpu.py --size 64 --evaluations 2 --rounds 1 --warmup 1   # dry run
    STYLEFORGE_KEEP_FREED_MEMORY=0 python benchmarks/bench_cpu.py --output /tmp/nokeep.json

Threads: both sides use torch's thread count; styleforge sets it to the physical cores unless
OMP_NUM_THREADS is set, so set it (or neither) for both. The JSON records the CPU's SIMD flags.
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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402

from styleforge.engine import RenderConfig, load_backbone, render  # noqa: E402

MODEL = "vgg16-random"  # vgg16-hed's architecture with seeded random weights
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: torchvision's vgg16 ``features`` indices of the ReLUs named above.
_VGG16_RELUS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 18, "relu4_2": 20, "relu5_1": 25}
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _images(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, height, width, generator=generator), torch.rand(3, width, width, generator=generator)


# --- the baseline: a classic eager PyTorch port ----------------------------------------------


def baseline_features(deepest: int) -> nn.Sequential:
    """torchvision's ``vgg16().features`` cut after index ``deepest``, weights copied from
    styleforge's seeded vgg16-random (the same numbers styleforge runs)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = item
    features = nn.Sequential(*layers[: deepest + 1])
    source = load_backbone(MODEL, ("relu5_1",))
    convs = [module for module in features if isinstance(module, nn.Conv2d)]
    for conv, named in zip(convs, source.convs.values()):
        conv.load_state_dict(named.state_dict())
    return features.requires_grad_(False).eval()


def _gram(feature: torch.Tensor) -> torch.Tensor:
    b, c, h, w = feature.shape
    flat = feature.view(b * c, h * w)
    return torch.mm(flat, flat.t()) / (c * h * w)


def _taps(features: nn.Sequential, image: torch.Tensor, wanted: dict[int, str]) -> dict[str, torch.Tensor]:
    """Run the Sequential, keeping a copy of the wanted outputs (the next in-place ReLU would
    overwrite a conv output; a ReLU output is only read by the next layer, so it is kept as is)."""
    out: dict[str, torch.Tensor] = {}
    x = image
    for index, layer in enumerate(features):
        x = layer(x)
        if index in wanted:
            out[wanted[index]] = x
    return out


def baseline_run(height: int, width: int, evaluations: int) -> list[float]:
    """Seconds per L-BFGS evaluation of the classic port (the first ones included)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    wanted = {_VGG16_RELUS[name]: name for name in CONTENT_LAYERS + STYLE_LAYERS}
    features = baseline_features(max(wanted))
    content, style = _images(height, width)
    with torch.no_grad():
        content_target = _taps(features, (content[None] - mean) / std, wanted)["relu4_2"].clone()
        style_taps = _taps(features, (style[None] - mean) / std, wanted)
        gram_targets = {name: _gram(style_taps[name]) for name in STYLE_LAYERS}
    image = content[None].clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=evaluations, max_eval=evaluations, history_size=50,
                                  tolerance_grad=0.0, tolerance_change=0.0)
    stamps = [time.perf_counter()]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        taps = _taps(features, (image - mean) / std, wanted)
        loss = F.mse_loss(taps["relu4_2"], content_target)
        for name in STYLE_LAYERS:
            loss = loss + 1e4 / len(STYLE_LAYERS) * F.mse_loss(_gram(taps[name]), gram_targets[name])
        tv = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean() + (image[..., 1:] - image[..., :-1]).pow(2).mean()
        loss = loss + 2.0 * tv
        loss.backward()
        stamps.append(time.perf_counter())
        return loss

    while len(stamps) <= evaluations:
        optimizer.step(closure)
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])][:evaluations]


# --- styleforge ------------------------------------------------------------------------------


def styleforge_config(size: int, evaluations: int, *, precision: str, compile: bool,
                      model: str = MODEL) -> RenderConfig:
    """The same layers as the baseline for vgg16; another model (``--model``) takes its own defaults."""
    options = dict(size=size, levels=1, iterations=evaluations, model=model, device="cpu", backend="torch",
                   precision=precision, torch_compile=compile)
    if model == MODEL:
        options.update(content_layers=CONTENT_LAYERS, style_layers=STYLE_LAYERS)
    return RenderConfig(**options)


def styleforge_run(height: int, width: int, evaluations: int, *, precision: str, compile: bool,
                   model: str = MODEL) -> list[float]:
    content, style = _images(height, width)
    stamps: list[float] = []
    started = time.perf_counter()
    config = styleforge_config(width, evaluations, precision=precision, compile=compile, model=model)
    render(config, content, [style], callback=lambda event: stamps.append(time.perf_counter()))
    stamps.insert(0, started)  # the first "evaluation" includes the targets (and compilation)
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


# --- driver ----------------------------------------------------------------------------------


def child(side: str, height: int, width: int, evaluations: int, precision: str, compile: bool, model: str) -> dict:
    started = time.perf_counter()
    if side == "baseline":
        times = baseline_run(height, width, evaluations)
    else:
        times = styleforge_run(height, width, evaluations, precision=precision, compile=compile, model=model)
    return {"side": side, "seconds": times, "wall": time.perf_counter() - started, "peak_rss_bytes": _peak_rss(),
            "threads": torch.get_num_threads()}


def _spawn(side: str, args: argparse.Namespace, height: int, width: int) -> dict:
    command = [sys.executable, __file__, "--child", side, "--size", str(args.size), "--evaluations",
               str(args.warmup + args.evaluations), "--precision", args.precision, "--model", args.model]
    if args.compile:
        command.append("--compile")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict], warmup: int) -> dict:
    timed = [value for run in runs for value in run["seconds"][warmup:]]
    return {"seconds_per_evaluation": statistics.median(timed), "seconds_per_evaluation_min": min(timed),
            "evaluations_timed": len(timed), "first_evaluation_seconds": [run["seconds"][0] for run in runs],
            "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs), "threads": runs[0]["threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="long side; the frame is 4:3 (512 -> 512x384)")
    parser.add_argument("--evaluations", type=int, default=4, help="timed evaluations per round and side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed evaluations first in each round")
    parser.add_argument("--rounds", type=int, default=3, help="baseline and styleforge alternate this many times")
    parser.add_argument("--precision", default="auto", help="styleforge's --precision (auto: its CPU choice)")
    parser.add_argument("--compile", action="store_true", help="styleforge with --compile")
    parser.add_argument("--model", default=MODEL, help="styleforge's model (e.g. squeezenet1_1-random, with its own "
                                                       "default layers); the baseline stays vgg16")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "cpu.json")
    parser.add_argument("--child", choices=("baseline", "styleforge"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = args.size * 3 // 4, args.size

    if args.child:
        print(json.dumps(child(args.child, height, width, args.evaluations, args.precision, args.compile,
                               args.model)))
        return

    runs: dict[str, list[dict]] = {"baseline": [], "styleforge": []}
    for round_ in range(args.rounds):
        for side in runs:
            run = _spawn(side, args, height, width)
            runs[side].append(run)
            timed = run["seconds"][args.warmup:]
            print(f"round {round_ + 1} {side:10s} {statistics.median(timed) * 1000:9.1f} ms/evaluation  "
                  f"peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    rows = {side: _summary(side_runs, args.warmup) for side, side_runs in runs.items()}
    ratio = rows["baseline"]["seconds_per_evaluation"] / rows["styleforge"]["seconds_per_evaluation"]
    for side, row in rows.items():
        print(f"{side:10s} {width}x{height}: {row['seconds_per_evaluation'] * 1000:9.1f} ms/evaluation (median of "
              f"{row['evaluations_timed']}), peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB, "
              f"{row['threads']} threads")
    print(f"styleforge is {ratio:.2f}x the baseline's speed per evaluation (target >= 1.8x)")
    write_report(args.output, "cpu: per-evaluation time, eager PyTorch port vs styleforge",
                 [{"side": side, **row} for side, row in rows.items()], size=[height, width], model=args.model,
                 precision=args.precision, compile=args.compile, speedup=ratio,
                 cpu_flags=_cpu_flags(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                 physical_cores=_physical_cores())


def _cpu_flags() -> list[str]:
    """The SIMD flags that decide CPU speed (avx*, amx*, fma, f16c)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return sorted(flag for flag in line.split()[2:] if flag.startswith(("avx", "amx", "fma", "f16c")))


def _physical_cores() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
