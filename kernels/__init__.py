"""Fast paths for the hot loops (Gram matrices, patch matching) beside their torch references.

Each kernel has a stateless functional reference that runs anywhere and is the test oracle; the
CUDA kernels (kernels/cuda/*.cu, launched through CuPy) are chosen for CUDA tensors when CuPy is
present and are tested against the references.
"""

from ._cuda import KernelInputError, cuda_kernels_unavailable, gram_cuda, kernel_source, mrf_nearest_cuda
from ._gram import gram, gram_reference
from ._patches import extract_patches, mrf_nearest_reference, normalize_patches


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
    "gram_cuda",
    "gram_reference",
    "kernel_source",
    "mrf_nearest",
    "mrf_nearest_cuda",
    "mrf_nearest_reference",
    "normalize_patches",
]
