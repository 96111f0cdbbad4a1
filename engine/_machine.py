"""A description of the machine a measurement ran on, for reports laid side by side."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ._cpu import cpu_flags, physical_cores

__all__ = ["SIMD_FLAGS", "describe_machine"]

#: The CPU flags that decide a convolution's speed (vector width, fused multiply-add, bf16, AMX).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "neon", "asimd", "sve")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU (model, cores, the SIMD flags that matter), memory, GPU (name, memory, compute
    capability) where ``device`` is one, and the software (torch, CUDA, Python, OS). JSON-ready."""
    device = torch.device(device)
    flags = cpu_flags()
    machine: dict[str, Any] = {
        "cpu": _cpu_model(), "cpu_flags": [flag for flag in SIMD_FLAGS if flag in flags],
        "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "memory_bytes": _memory_bytes(), "device": str(device), "gpu": None,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        machine.update(gpu=properties.name, gpu_memory_bytes=properties.total_memory,
                       compute_capability=f"{properties.major}.{properties.minor}",
                       gpu_count=torch.cuda.device_count())
    return machine
