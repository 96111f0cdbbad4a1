"""Timing of backends: forward + image gradient per iteration, side by side in one run."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from .._backbone import VGGFeatures
from .._device import peak_memory
from ._base import Backend

__all__ = ["BackendTiming", "conv_flops", "machine_facts", "matrix_tflops", "time_backend"]


def machine_facts(device: torch.device) -> dict[str, object]:
    """What a timing depends on beyond the backend: torch's CPU threads and the GPU's name."""
    return {"threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def conv_flops(backbone: VGGFeatures, height: int, width: int) -> int:
    """FLOPs of one forward + image-gradient pass through the convolutions (2 per MAC).

    The backward pass needs only the input gradient of each convolution (the weights are
    frozen), which costs as many MACs as the forward convolution.
    """
    total = 0
    for info in backbone.layers:
        positions = (height // info.stride) * (width // info.stride)
        # a conv layer is one convolution; a SqueezeNet fire module its squeeze and two expands
        for name, conv in backbone.convs.items():
            if name == info.name or name.startswith(f"{info.name}_"):
                total += 2 * conv.get_parameter("weight").numel() * positions
    return 2 * total


@dataclass(frozen=True)
class BackendTiming:
    backend: str
    device: str
    height: int
    width: int
    ms_per_iteration: float
    ms_per_iteration_min: float
    images_per_second: float
    peak_memory_bytes: int
    tflops: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_backend(backend: Backend, height: int, width: int, *, iterations: int = 5, warmup: int = 2,
                 seed: int = 0) -> BackendTiming:
    """Median wall time of forward + backward at (height, width) with random upstream gradients."""
    device = backend.device
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=generator).to(device)
    grads = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(warmup + iterations):
        _sync(device)
        start = time.perf_counter()
        features = backend.forward(image)
        if grads is None:
            grads = {name: torch.randn(value.shape, generator=generator).to(device) for name, value in features.items()}
        backend.backward(grads)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return BackendTiming(
        backend=backend.name, device=str(device), height=height, width=width,
        ms_per_iteration=median * 1e3, ms_per_iteration_min=min(times) * 1e3,
        images_per_second=1.0 / median, peak_memory_bytes=peak_memory(device),
        tflops=conv_flops(backend.backbone, height, width) / median / 1e12,
    )


def matrix_tflops(device: torch.device, *, dtype: torch.dtype | str = torch.float32, size: int = 4096,
                  repeats: int = 5, tf32: bool = False) -> float:
    """The device's measured dense matrix-multiply rate (TFLOP/s) at ``dtype`` (a torch dtype or
    its name), fp32 in TF32 when ``tf32``: the yardstick for the convolutions' achieved rate."""
    resolved: torch.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    a = torch.randn(size, size, device=device, dtype=resolved)
    b = torch.randn(size, size, device=device, dtype=resolved)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        torch.mm(a, b)
        _sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return 2 * size**3 / statistics.median(times) / 1e12

