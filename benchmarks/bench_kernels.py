"""CUDA kernels against their plain torch formulations (needs a GPU with CuPy).

    python benchmarks/bench_kernels.py

Gram: the CuPy upper-triangle kernel vs cuBLAS (torch.bmm) on relu1_1 .. relu5_1-sized features.
Patch matching: the fused NCC + argmax kernel vs conv2d (cuBLAS/cuDNN) scores + argmax, which
materialises the whole score matrix. Each kernel is checked against its reference first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from styleforge.kernels import (
    cuda_kernels_unavailable,
    gram_cuda,
    gram_reference,
    mrf_nearest_cuda,
    mrf_nearest_reference,
    normalize_patches,
)


def cuda_time(function, repeats: int = 10) -> float:
    """Median milliseconds of function() timed with CUDA events."""
    function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "kernels.json")
    args = parser.parse_args()
    missing = cuda_kernels_unavailable()
    if missing is not None:
        sys.exit(f"bench_kernels: {missing}")

    rows = []
    for channels, side in ((64, 1024), (128, 512), (256, 256), (512, 128), (512, 64)):
        for dtype in (torch.float32, torch.bfloat16):
            features = torch.randn(1, channels, side, side, device="cuda", dtype=dtype)
            error = ((gram_cuda(features) - gram_reference(features.double()).float()).abs().max()
                     / gram_reference(features.double()).abs().max()).item()
            rows.append({"kernel": "gram", "channels": channels, "size": side, "dtype": str(dtype),
                         "max_relative_error": error,
                         "ms_kernel": cuda_time(lambda: gram_cuda(features)),
                         "ms_torch": cuda_time(lambda: gram_reference(features))})
            print(rows[-1], flush=True)

    for count, dim in ((2048, 2304), (8192, 2304), (32768, 4608)):
        patches = normalize_patches(torch.randn(count, dim, device="cuda"))
        style = normalize_patches(torch.randn(count, dim, device="cuda"))
        index, _ = mrf_nearest_cuda(patches, style)
        reference, _ = mrf_nearest_reference(patches, style, normalized=True)
        agreement = (index == reference).float().mean().item()

        def torch_scores():
            return (patches @ style.T).argmax(dim=1)  # materialises count x count scores

        rows.append({"kernel": "patch_match", "patches": count, "dim": dim, "index_agreement": agreement,
                     "ms_kernel": cuda_time(lambda: mrf_nearest_cuda(patches, style)),
                     "ms_torch": cuda_time(torch_scores)})
        print(rows[-1], flush=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
