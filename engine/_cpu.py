"""What the CPU can do, read once: its SIMD flags, its physical cores, and whether bf16 pays.

- Threads: torch's intra-op pool is set to the physical cores the process may run on (SMT
  siblings share one core's vector units, so they add contention, not FLOPs), unless the user
  chose: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads`` called.
- bf16: only CPUs with native bf16 arithmetic (AVX-512 BF16, AMX) run it faster than fp32; on
  others oneDNN emulates it (measured 6x slower than fp32 for a 3x3 convolution on an AVX2 EPYC).
  Even where it is native it must measure faster: a micro-measurement (a few convolutions
  forward + backward in fp32 and under bf16 autocast) is taken once and kept in the cache, like
  the backend choice ``styleforge bench`` records.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import torch

from ._files import cache_dir, write_json_atomic

__all__ = ["NATIVE_BF16_FLAGS", "bf16_pays", "cpu_flags", "native_bf16", "physical_cores", "use_physical_cores"]

#: /proc/cpuinfo flags of native bf16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: torch's own choice, read before anything here could change it: a different count later means
#: someone (the user, a batch worker) set it.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    line = next((line for line in _cpuinfo().splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def native_bf16() -> bool:
    """Whether the CPU does bf16 arithmetic natively (flags, or torch's own capability probe)."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS)) or torch.backends.cpu.get_cpu_capability() in (
        "AVX512_BF16", "AMX")


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores, processor, package = set(), None, "0"
    for line in _cpuinfo().splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            processor = int(value)
        elif key == "physical id":
            package = value
        elif key == "core id" and processor in allowed:
            cores.add((package, value))
    return max(1, len(cores) or len(allowed))


def use_physical_cores() -> int:
    """Set torch's threads to the physical cores unless the user chose a count; the count in use."""
    chosen = any(os.environ.get(name) for name in _THREAD_VARIABLES)
    if not chosen and torch.get_num_threads() == _TORCH_DEFAULT_THREADS:
        torch.set_num_threads(physical_cores())
    return torch.get_num_threads()


def _choice_file() -> Path:
    return cache_dir() / "cpu-precision.json"


def _machine_key() -> str:
    model = next((line.partition(":")[2].strip() for line in _cpuinfo().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}|{torch.__version__}|{torch.get_num_threads()} threads"


def _time_convolutions(dtype: torch.dtype | None, repeats: int = 3) -> float:
    """Median seconds of a small 3x3 convolution stack's forward + input gradient."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(128, 128, 3, 3, generator=generator) * 0.03 for _ in range(3)]
    image = torch.randn(1, 128, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats + 1):
        leaf = image.clone().requires_grad_(True)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            x = leaf
            for weight in weights:
                x = torch.relu(torch.nn.functional.conv2d(x, weight, padding=1))
        x.float().sum().backward()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]


def bf16_pays() -> bool:
    """Whether bf16 measured faster than fp32 here: never without native bf16; else measured once
    per CPU model, torch version and thread count, and remembered in the cache."""
    if not native_bf16():
        return False
    key = _machine_key()
    try:
        record = json.loads(_choice_file().read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    entry = record.get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("bf16_faster"), bool)):
        fp32, bf16 = _time_convolutions(None), _time_convolutions(torch.bfloat16)
        entry = {"bf16_faster": bf16 < fp32, "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3}
        record[key] = entry
        try:
            _choice_file().parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(_choice_file(), record)
        except OSError:
            pass  # an unwritable cache only means measuring again next time
    return entry["bf16_faster"]
