"""Fast paths for the hot loops (Gram matrices, patch matching) beside their torch references.

Each kernel has a stateless functional reference that runs anywhere and is the test oracle; the
CUDA kernels (kernels/cuda/*.cu, launched through CuPy) are chosen for CUDA tensors when CuPy is
present and compiles them, and are tested against the references; kernels/_nvrtc.py compiles
them as CuPy does (NVRTC), with no GPU, so a CPU test catches a source the runtime would reject.
"""

from __future__ import annotations

import os

import torch

from ._cuda import KernelInputError, cuda_kernels_unavailable, gram_cuda, kernel_source, mrf_nearest_cuda
from ._gram import gram_reference
from ._gram_cpu import gram_cpu
from ._patches import extract_patches, mrf_nearest_reference, normalize_patches
from ._route import (
    KERNEL_MEASURED_FASTER,
    KernelFallbackWarning,
    gram_route,
    kernel_fallbacks,
    record_fallback,
    reset_kernel_fallbacks,
)
from ._winograd import WinogradConv3x3, winograd_conv3x3, winograd_kernels


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix as gram_reference: (B, C, H, W) -> (B, C, C) float32 (float64 for float64).

    On CUDA, cuBLAS where it has tensor cores (TF32, 16-bit features), the CuPy kernel for strict
    float32, the reference for float64 (see _route.gram_route); a fallback because the kernels
    cannot run is recorded and warned about. On CPU float32/float64, one product per direction in
    the features' layout (gram_cpu)."""
    route = gram_route(features, cuda_kernels_unavailable() if features.is_cuda else None)
    if route == "kernel":
        return gram_cuda(features.contiguous())
    if route == "cpu":
        return gram_cpu(features)
    if route == "cublas" and features.dtype in (torch.float16, torch.bfloat16):
        # 16-bit operands on tensor cores, float32 accumulation and output (bmm's out_dtype).
        batch, channels, height, width = features.shape
        flat = features.reshape(batch, channels, height * width)
        return torch.bmm(flat, flat.transpose(1, 2), out_dtype=torch.float32) / (height * width)
    return gram_reference(features)


def mrf_nearest(patches: torch.Tensor, style_patches: torch.Tensor, *, chunk: int = 4096,
                normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest style patch by NCC (see mrf_nearest_reference); the fused CUDA kernel on CUDA
    tensors when it can run, the chunked torch reference otherwise (recorded as a fallback
    unless STYLEFORGE_DISABLE_CUDA_KERNELS asked for it)."""
    if patches.is_cuda:
        unavailable = cuda_kernels_unavailable()
        if unavailable is None:
            if not normalized:
                patches, style_patches = normalize_patches(patches.float()), normalize_patches(style_patches.float())
            return mrf_nearest_cuda(patches.float().contiguous(), style_patches.float().contiguous())
        if not os.environ.get("STYLEFORGE_DISABLE_CUDA_KERNELS"):
            record_fallback("mrf_nearest", unavailable)
    return mrf_nearest_reference(patches, style_patches, chunk=chunk, normalized=normalized)


__all__ = [
    "KERNEL_MEASURED_FASTER",
    "KernelFallbackWarning",
    "KernelInputError",
    "cuda_kernels_unavailable",
    "extract_patches",
    "gram",
    "gram_cpu",
    "gram_cuda",
    "gram_reference",
    "gram_route",
    "kernel_fallbacks",
    "kernel_source",
    "mrf_nearest",
    "mrf_nearest_cuda",
    "mrf_nearest_reference",
    "normalize_patches",
    "record_fallback",
    "reset_kernel_fallbacks",
    "WinogradConv3x3",
    "winograd_conv3x3",
    "winograd_kernels",
]
