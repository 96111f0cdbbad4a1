"""CuPy launches of the CUDA kernels in kernels/cuda/, with their checks.

Kernels are compiled once per process (NVRTC through cupy.RawModule), launched on torch's current
CUDA stream, and read and write torch tensors in place through DLPack (no copies). Inputs are
checked before any launch: CUDA device, supported dtype, contiguity. Everything here is optional:
``cuda_kernels_unavailable()`` says why the kernels cannot run, and callers fall back to the torch
references.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

__all__ = ["KernelInputError", "cuda_kernels_unavailable", "gram_cuda", "mrf_nearest_cuda", "kernel_source"]

_SOURCES = Path(__file__).parent / "cuda"
_TILE = 16
_GRAM_TYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}


class KernelInputError(ValueError):
    """A tensor handed to a CUDA kernel has the wrong device, dtype or layout."""


def kernel_source(name: str) -> Path:
    return _SOURCES / f"{name}.cu"


@functools.cache
def cuda_kernels_unavailable() -> str | None:
    """None when the CuPy kernels can run, else the reason they cannot."""
    if os.environ.get("STYLEFORGE_DISABLE_CUDA_KERNELS"):
        return "disabled by STYLEFORGE_DISABLE_CUDA_KERNELS"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda13x)"
    return None


@functools.cache
def _module(name: str, expressions: tuple[str, ...] = ()):
    import cupy

    code = kernel_source(name).read_text()
    return cupy.RawModule(code=code, options=("-std=c++17",), name_expressions=expressions or None)


def _gram_kernel(name: str, dtype: torch.dtype):
    """One instantiation of a templated Gram kernel (every one is compiled together, once)."""
    expressions = tuple(f"{kernel}<{t}>" for kernel in ("gram_upper", "gram_backward") for t in _GRAM_TYPES.values())
    return _module("gram", expressions).get_function(f"{name}<{_GRAM_TYPES[dtype]}>")


def _check(tensor: torch.Tensor, what: str, dtypes) -> None:
    if not tensor.is_cuda:
        raise KernelInputError(f"{what} must be a CUDA tensor, got one on {tensor.device}")
    if tensor.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise KernelInputError(f"{what} has dtype {str(tensor.dtype).replace('torch.', '')}; supported: {names}")
    if not tensor.is_contiguous():
        raise KernelInputError(f"{what} must be contiguous (call .contiguous() first)")


def _launch(kernel, grid, block, args) -> None:
    import cupy

    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
        kernel(grid, block, tuple(cupy.from_dlpack(a.detach()) if isinstance(a, torch.Tensor) else a
                                  for a in args))


def _gram_forward(features: torch.Tensor) -> torch.Tensor:
    import numpy as np

    batch, channels = features.shape[:2]
    positions = features[0, 0].numel()
    kernel = _gram_kernel("gram_upper", features.dtype)
    out = torch.empty(batch, channels, channels, device=features.device, dtype=torch.float32)
    blocks = (channels + _TILE - 1) // _TILE
    for b in range(batch):
        _launch(kernel, (blocks, blocks), (_TILE, _TILE),
                (features[b], out[b], np.int32(channels), np.int64(positions), np.float32(1.0 / positions)))
    return out


def _gram_backward(grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    import numpy as np

    batch, channels = features.shape[:2]
    positions = features[0, 0].numel()
    kernel = _gram_kernel("gram_backward", features.dtype)
    grad = grad.float().contiguous()
    out = torch.empty_like(features)
    grid = ((positions + _TILE - 1) // _TILE, (channels + _TILE - 1) // _TILE)
    for b in range(batch):
        _launch(kernel, grid, (_TILE, _TILE),
                (grad[b], features[b], out[b], np.int32(channels), np.int64(positions), np.float32(1.0 / positions)))
    return out


class _Gram(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features):
        ctx.save_for_backward(features)
        return _gram_forward(features)

    @staticmethod
    def backward(ctx, grad):
        (features,) = ctx.saved_tensors
        return _gram_backward(grad, features)


def gram_cuda(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32/float16/bfloat16 CUDA features -> (B, C, C) float32, differentiable."""
    if features.dim() != 4:
        raise KernelInputError(f"gram expects (B, C, H, W) features, got shape {tuple(features.shape)}")
    _check(features, "features", tuple(_GRAM_TYPES))
    return _Gram.apply(features)


@torch.no_grad()
def mrf_nearest_cuda(patches: torch.Tensor, style_patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused NCC + argmax on unit-norm float32 rows: (N, D), (M, D) -> (indices (N,), scores (N,))."""
    import numpy as np

    _check(patches, "patches", (torch.float32,))
    _check(style_patches, "style patches", (torch.float32,))
    if patches.shape[1] != style_patches.shape[1]:
        raise KernelInputError(f"patch widths differ: {patches.shape[1]} vs {style_patches.shape[1]}")
    count, width = patches.shape
    index = torch.empty(count, dtype=torch.int64, device=patches.device)
    score = torch.empty(count, dtype=torch.float32, device=patches.device)
    kernel = _module("patch_match").get_function("mrf_nearest_ncc")
    _launch(kernel, ((count + _TILE - 1) // _TILE,), (_TILE, _TILE),
            (patches, style_patches, index, score, np.int32(count), np.int32(style_patches.shape[0]),
             np.int32(width)))
    return index, score
