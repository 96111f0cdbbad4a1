"""Fast paths for the hot loops (Gram matrices, patch matching) beside their torch references.

Each kernel has a stateless functional reference that runs anywhere and is the test oracle; the
CUDA kernels (kernels/cuda/*.cu, launched through CuPy) are chosen for CUDA tensors when CuPy is
present and compiles them, and are tested against the references; kernels/_nvrtc.py compiles
them as CuPy does (NVRTC), with no GPU, so a CPU test catches a source the runtime would reject.
"""

import torch

from ._cuda import KernelInputError, cuda_kernels_unavailable, gram_cuda, kernel_source, mrf_nearest_cuda
from ._gram import gram_reference
from ._gram_cpu import gram_cpu
from ._patches import extract_patches, mrf_nearest_reference, normalize_patches
from ._winograd import WinogradConv3x3, winograd_conv3x3, winograd_kernels


def gram(features):
    """Gram matrix as gram_reference; on CUDA tensors, the CuPy kernel when it can run; on float32
    and float64 CPU tensors, one product per direction in the features' layout (gram_cpu)."""
    if features.is_cuda and features.dim() == 4 and cuda_kernels_unavailable() is None:
        return gram_cuda(features.contiguous())
    if features.device.type == "cpu" and features.dim() == 4 and features.dtype in (torch.float32, torch.float64):
        return gram_cpu(features)
    return gram_reference(features)


def mrf_nearest(patches, style_patches, *, chunk: int = 4096, normalized: bool = False):
    """Nearest style patch by NCC (see mrf_nearest_reference); the fused CUDA kernel on CUDA
    tensors when it can run, the chunked torch reference otherwise."""
    if patches.is_cuda and cuda_kernels_unavailable() is None:
        if not normalized:
            patches, style_patches = normalize_patches(patches.float()), normalize_patches(style_patches.float())
        return mrf_nearest_cuda(patches.float().contiguous(), style_patches.float().contiguous())
    return mrf_nearest_reference(patches, style_patches, chunk=chunk, normalized=normalized)


__all__ = [
    "KernelInputError",
    "cuda_kernels_unavailable",
    "extract_patches",
    "gram",
    "gram_cpu",
    "gram_cuda",
    "gram_reference",
    "kernel_source",
    "mrf_nearest",
    "mrf_nearest_cuda",
    "mrf_nearest_reference",
    "normalize_patches",
    "WinogradConv3x3",
    "winograd_conv3x3",
    "winograd_kernels",
]
