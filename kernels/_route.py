"""Which implementation a kernel call takes, and a record of every fallback the user did not ask for.

The CUDA kernels are optional: when CuPy is missing or a kernel does not compile, calls on CUDA
tensors fall back to the torch references. That must not pass silently: every such fallback is
counted (``kernel_fallbacks()``, which the GPU proof reads and fails on) and warned about once
per reason (``KernelFallbackWarning``). A route the user chose (STYLEFORGE_DISABLE_CUDA_KERNELS)
or one the kernels do not serve (float64) is not a fallback.

The Gram matrix on CUDA takes cuBLAS (torch's batched matmul) where it can use tensor cores:
TF32, or 16-bit features. The CuPy kernel multiplies on CUDA cores in float32 (well under cuBLAS's
tensor-core rate on an H100), so it keeps only strict float32, unless a measurement (the GPU
proof's call B times both) puts a mode into KERNEL_MEASURED_FASTER.
"""

from __future__ import annotations

import collections
import os
import warnings

import torch

__all__ = ["KERNEL_MEASURED_FASTER", "KernelFallbackWarning", "gram_route", "kernel_fallbacks", "record_fallback",
           "reset_kernel_fallbacks"]

#: Modes ("tf32", "fp16", "bf16") where the CuPy Gram was measured faster than cuBLAS on a GPU.
#: Empty until the GPU proof has measured it: cuBLAS is the default there.
KERNEL_MEASURED_FASTER: frozenset[str] = frozenset()

_FALLBACKS: collections.Counter[tuple[str, str]] = collections.Counter()
_HALF_MODES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


class KernelFallbackWarning(RuntimeWarning):
    """A CUDA tensor took a torch reference because the CUDA kernels cannot run."""


def record_fallback(kernel: str, reason: str) -> None:
    """Count a fallback the user did not ask for; warn the first time for each reason."""
    _FALLBACKS[(kernel, reason)] += 1
    if _FALLBACKS[(kernel, reason)] == 1:
        warnings.warn(f"{kernel}: CUDA kernel not used, torch reference instead: {reason}", KernelFallbackWarning,
                      stacklevel=3)


def kernel_fallbacks() -> dict[str, int]:
    """{"kernel: reason": calls} of every fallback since the start (or the last reset)."""
    return {f"{kernel}: {reason}": count for (kernel, reason), count in _FALLBACKS.items()}


def reset_kernel_fallbacks() -> None:
    _FALLBACKS.clear()


def gram_route(features: torch.Tensor, unavailable: str | None) -> str:
    """How gram() computes ``features``' Gram: "kernel" (CuPy), "cublas" (torch matmul on the
    GPU), "cpu" (gram_cpu), "reference" (gram_reference), or "fallback" (the reference, because
    the kernels cannot run: ``unavailable`` says why, and it is recorded)."""
    if features.device.type == "cpu":
        return "cpu" if features.dim() == 4 and features.dtype in (torch.float32, torch.float64) else "reference"
    if not features.is_cuda or features.dim() != 4 or features.dtype == torch.float64:
        return "reference"  # float64 has no kernel: the reference is the exact path, not a fallback
    mode = _HALF_MODES.get(features.dtype, "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32")
    if mode != "fp32" and mode not in KERNEL_MEASURED_FASTER:
        return "cublas"
    if unavailable is not None:
        if os.environ.get("STYLEFORGE_DISABLE_CUDA_KERNELS"):
            return "reference"  # asked for
        record_fallback("gram", unavailable)
        return "fallback"
    return "kernel"
