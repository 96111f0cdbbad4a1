"""CuPy launches of the CUDA kernels in kernels/cuda/, with their checks.

Kernels are compiled once per process (NVRTC through cupy.RawModule, with NVRTC_OPTIONS and the
name expressions in KERNELS, which kernels/_nvrtc.py and the tests compile with too), launched on
torch's current CUDA stream, and read and write torch tensors in place by device pointer (no
copies; no DLPack, which CuPy refuses for bfloat16). Inputs are checked before any launch: CUDA
device, supported dtype, contiguity. Everything here is optional: ``cuda_kernels_unavailable()``
says why the kernels cannot run, and callers fall back to the torch references.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from ._gram import gram_reference

__all__ = ["KernelInputError", "cuda_kernels_unavailable", "gram_cuda", "mrf_nearest_cuda", "kernel_source"]

_SOURCES = Path(__file__).parent / "cuda"
_GRAM_TYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}

# The options CuPy's RawModule gets (CuPy adds -I<CUDA>/include, -ftz=true and -arch itself).
NVRTC_OPTIONS = ("-std=c++17",)
# Every kernel launched below, by source: templated ones as the name expressions NVRTC
# instantiates, extern "C" ones by name.
KERNELS = {
    "gram": tuple(f"{k}<{t}>" for k in ("gram_partial", "gram_backward") for t in _GRAM_TYPES.values()),
    "patch_match": ("mrf_nearest_ncc",),
}

# Mirrors of gram.cu's TILE, K_TILE, SUB_TILES and THREADS (a test checks they agree).
_TILE, _K_TILE, _SUB_TILES, _THREADS = 64, 64, 4, 256
_BLOCKS_PER_SM = 8  # forward blocks aimed at: every SM filled several times over
_MIN_CHUNK = 2048  # positions per block at least: writing its 64 x 64 partial stays cheap
_MAX_PARTIALS = 1 << 24  # float32 entries of the (B, S, C, C) partials at most (64 MiB)
_MRF_TILE = 16  # patch_match.cu's TILE


class KernelInputError(ValueError):
    """A tensor handed to a CUDA kernel has the wrong device, dtype or layout."""


def kernel_source(name: str) -> Path:
    return _SOURCES / f"{name}.cu"


def name_expressions(name: str) -> tuple[str, ...]:
    """The templated kernels of kernels/cuda/<name>.cu, which NVRTC instantiates by name."""
    return tuple(kernel for kernel in KERNELS[name] if "<" in kernel)


@functools.cache
def cuda_kernels_unavailable() -> str | None:
    """None when the CuPy kernels can run, else the reason they cannot.

    On a GPU this compiles and loads every kernel (once per process; CuPy also caches compiled
    modules on disk), so a source that NVRTC rejects is reported here, as the reason, and callers
    fall back to the references instead of failing at the first launch.
    """
    if os.environ.get("STYLEFORGE_DISABLE_CUDA_KERNELS"):
        return "disabled by STYLEFORGE_DISABLE_CUDA_KERNELS"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda13x)"
    for name, kernels in KERNELS.items():
        try:
            for kernel in kernels:
                _module(name).get_function(kernel)
        except Exception as error:  # CuPy's CompileException, CUDADriverError, RuntimeError, ...
            return f"{kernel_source(name).name} does not compile or load: {error}"
    return None


@functools.cache
def _module(name: str) -> Any:  # a cupy.RawModule (CuPy ships no types)
    import cupy

    return cupy.RawModule(code=kernel_source(name).read_text(), options=NVRTC_OPTIONS,
                          name_expressions=name_expressions(name) or None)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _check(tensor: torch.Tensor, what: str, dtypes: tuple[torch.dtype, ...]) -> None:
    if not tensor.is_cuda:
        raise KernelInputError(f"{what} must be a CUDA tensor, got one on {tensor.device}")
    if tensor.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise KernelInputError(f"{what} has dtype {str(tensor.dtype).replace('torch.', '')}; supported: {names}")
    if not tensor.is_contiguous():
        raise KernelInputError(f"{what} must be contiguous (call .contiguous() first)")


def _launch(source: str, kernel: str, device: torch.device, grid: tuple[int, ...], block: tuple[int, ...],
            args: tuple[object, ...]) -> None:
    """Launch on ``device``'s current torch stream; tensors are passed as device pointers."""
    import cupy
    import numpy as np

    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream):
        _module(source).get_function(kernel)(
            grid, block, tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else a for a in args))


def gram_splits(batch: int, channels: int, positions: int, sms: int) -> tuple[int, int]:
    """(splits S, chunk): the forward cuts the positions into S chunks of ``chunk`` positions.

    Aims at _BLOCKS_PER_SM * sms blocks of (upper tile, chunk, batch item), with chunks of at least
    _MIN_CHUNK positions and at most _MAX_PARTIALS partial entries; chunk is a multiple of K_TILE
    and every chunk is non-empty: (S - 1) * chunk < positions <= S * chunk.
    """
    side = -(-channels // _TILE)
    tiles = side * (side + 1) // 2
    splits = -(-_BLOCKS_PER_SM * sms // (tiles * batch))
    splits = max(1, min(splits, -(-positions // _MIN_CHUNK), _MAX_PARTIALS // (batch * channels * channels), 65535))
    chunk = -(-positions // splits)
    chunk = -(-chunk // _K_TILE) * _K_TILE
    return -(-positions // chunk), chunk


def pairwise_sum_(partials: torch.Tensor) -> torch.Tensor:
    """Sum of (B, S, ...) over S as a balanced tree, in place; returns the view partials[:, 0].

    Each round adds the top half onto the bottom half, so after ceil(log2 S) rounds every entry is
    a tree of that depth: float32 rounding grows like log S, where a running sum grows like S.
    """
    count = partials.shape[1]
    while count > 1:
        half = count // 2
        partials[:, :half] += partials[:, count - half : count]
        count -= half
    return partials[:, 0]


def _gram_forward(features: torch.Tensor) -> torch.Tensor:
    import numpy as np

    batch, channels = features.shape[:2]
    positions = features[0, 0].numel()
    splits, chunk = gram_splits(batch, channels, positions, _sm_count(features.device.index))
    side = -(-channels // _TILE)
    partials = torch.empty(batch, splits, channels, channels, device=features.device, dtype=torch.float32)
    _launch("gram", f"gram_partial<{_GRAM_TYPES[features.dtype]}>", features.device,
            (side * (side + 1) // 2, splits, batch), (_THREADS,),
            (features, partials, np.int32(channels), np.int64(positions), np.int64(chunk)))
    return pairwise_sum_(partials) / positions


def _gram_backward(grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    import numpy as np

    batch, channels = features.shape[:2]
    positions = features[0, 0].numel()
    grad = grad.float()
    symmetric = (grad + grad.transpose(1, 2)).contiguous()
    out = torch.empty_like(features)
    _launch("gram", f"gram_backward<{_GRAM_TYPES[features.dtype]}>", features.device,
            (-(-positions // _TILE), -(-channels // _TILE), batch), (_THREADS,),
            (symmetric, features, out, np.int32(channels), np.int64(positions), np.float32(1.0 / positions)))
    return out


class _Gram(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features)
        return _gram_forward(features)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        return _gram_backward(grad, features)


def gram_cuda(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32/float16/bfloat16 CUDA features -> (B, C, C) float32, differentiable.

    G = F F^T / (H W), as gram_reference; split over positions and summed as a tree (gram.cu).
    """
    if features.dim() != 4:
        raise KernelInputError(f"gram expects (B, C, H, W) features, got shape {tuple(features.shape)}")
    _check(features, "features", tuple(_GRAM_TYPES))
    if features.numel() == 0:
        return gram_reference(features)
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
    _launch("patch_match", "mrf_nearest_ncc", patches.device, (-(-count // _MRF_TILE),), (_MRF_TILE, _MRF_TILE),
            (patches, style_patches, index, score, np.int32(count), np.int32(style_patches.shape[0]),
             np.int32(width)))
    return index, score
