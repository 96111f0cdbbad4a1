"""What the CPU can do, read once: its SIMD flags, its physical cores, whether bf16 and Winograd
convolutions pay, and glibc's handling of freed memory.

- Threads: torch's intra-op pool is set to the physical cores the process may run on (SMT
  siblings share one core's vector units, so they add contention, not FLOPs), unless the user
  chose: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads`` called.
- bf16: only CPUs with native bf16 arithmetic (AVX-512 BF16, AMX) run it faster than fp32; on
  others oneDNN emulates it (measured 6x slower than fp32 for a 3x3 convolution on an AVX2 EPYC).
  Even where it is native it must measure clearly faster: a micro-measurement (a few
  convolutions forward + backward in fp32 and under bf16 autocast, in interleaved pairs so that
  a change of the machine's load hits both alike) is taken once and kept in the cache with its
  figures, its date and the rule (``BF16_RULE``); ``styleforge bench --cpu-precision`` takes it
  again. A single timing each way swung from "bf16 2.6x slower" to "1.1x faster" on one loaded
  2-core machine: hence pairs, medians and a margin.
- Winograd F(2x2, 3x3) for the 3x3 convolutions with 256+ input channels (kernels._winograd):
  2.25x fewer products; used where a one-off measurement on such a layer found it faster than
  oneDNN's direct convolution (on an AVX2 EPYC it was ~1.7-2x faster there, and slower on
  64-128 channels, where its transforms' memory traffic dominates).
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from styleforge.kernels import WinogradConv3x3

from ._files import cache_dir, write_json_atomic
from ._wait import waiting

__all__ = ["BF16_RULE", "NATIVE_BF16_FLAGS", "Bf16Measurement", "bf16_decision", "bf16_pays", "cpu_flags",
           "keep_freed_memory", "measure_bf16", "native_bf16", "physical_cores", "use_physical_cores", "winograd_pays"]

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


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the kernel.

    Every evaluation frees and allocates the same few hundred MB of activations; glibc serves
    blocks over 32 MB with fresh mmaps and trims its heap on free, so each evaluation paid page
    faults and the kernel's zeroing of every page again (a fifth of a 512 px evaluation's time
    was system time). With mmap off and trimming off, freed blocks are reused; the peak RSS is
    that of one evaluation, as before. Once per process; False where it does not apply (not
    glibc) or ``STYLEFORGE_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get("STYLEFORGE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def _choice_file() -> Path:
    return cache_dir() / "cpu-precision.json"


def _machine_key() -> str:
    """What a measurement holds for: the CPU, its SIMD level, torch and the threads. The model
    name alone is not enough: virtual machines report generic names ("AMD EPYC") for CPUs with
    and without AVX-512 BF16, and a cache directory may be shared across such hosts."""
    model = next((line.partition(":")[2].strip() for line in _cpuinfo().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    simd = torch.backends.cpu.get_cpu_capability() + ("+bf16" if native_bf16() else "")
    return f"{model}|{simd}|{torch.__version__}|{torch.get_num_threads()} threads"


def _time(step: Callable[[], object], repeats: int = 3) -> float:
    """Median seconds of ``step()`` after one untimed run."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2]


def _convolution_step(dtype: torch.dtype | None, *, winograd: bool = False, channels: int = 128,
                      size: int = 64) -> Callable[[], None]:
    """One forward + input gradient of a small 3x3 convolution stack, in fp32 or under ``dtype``
    autocast, directly or by Winograd."""
    generator = torch.Generator().manual_seed(0)
    convs = [torch.nn.Conv2d(channels, channels, 3, padding=1).requires_grad_(False) for _ in range(3)]
    layers = [WinogradConv3x3(conv) if winograd else conv for conv in convs]
    image = torch.randn(1, channels, size, size, generator=generator).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        x = leaf = image.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            for layer in layers:
                x = torch.relu(layer(x))
        x.float().sum().backward()
        assert leaf.grad is not None

    return step


def _time_convolutions(dtype: torch.dtype | None, *, winograd: bool = False, channels: int = 128,
                       size: int = 64) -> float:
    """Median seconds of ``_convolution_step``."""
    return _time(_convolution_step(dtype, winograd=winograd, channels=channels, size=size))


def _time_pairs(pairs: int) -> tuple[list[float], list[float]]:
    """Seconds of the fp32 and the bf16 step, interleaved (fp32 bf16, bf16 fp32, ...: the order
    alternates so that neither always runs second, on warmer caches), after one untimed run each."""
    steps = {"fp32": _convolution_step(None), "bf16": _convolution_step(torch.bfloat16)}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for pair in range(pairs):
        for name in ("fp32", "bf16") if pair % 2 == 0 else ("bf16", "fp32"):
            started = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - started)
    return times["fp32"], times["bf16"]


#: Interleaved pairs per measurement, the margin bf16's median must win by, and the share of
#: pairs it must win: a loaded machine's swings (2x between identical runs) stay below both.
BF16_PAIRS = 7
BF16_MARGIN = 0.15
BF16_MAJORITY = 2 / 3
BF16_RULE = (f"bf16 when its median over {BF16_PAIRS} interleaved pairs is at least {BF16_MARGIN:.0%} below "
             f"fp32's and it is faster in at least {BF16_MAJORITY:.0%} of the pairs")


@dataclass(frozen=True)
class Bf16Measurement:
    """One bf16-against-fp32 measurement and its verdict (milliseconds per step)."""

    bf16_preferred: bool
    fp32_ms: list[float]
    bf16_ms: list[float]
    fp32_median_ms: float
    bf16_median_ms: float
    pairs_won: int
    rule: str = BF16_RULE
    measured_at: str = ""

    def describe(self) -> str:
        verdict = "bf16" if self.bf16_preferred else "fp32"
        return (f"fp32 {self.fp32_median_ms:.1f} ms, bf16 {self.bf16_median_ms:.1f} ms (medians of "
                f"{len(self.fp32_ms)} interleaved pairs), bf16 faster in {self.pairs_won} of them: "
                f"--precision auto runs {verdict} here")


def bf16_decision(fp32_seconds: Sequence[float], bf16_seconds: Sequence[float], *, margin: float = BF16_MARGIN,
                  majority: float = BF16_MAJORITY) -> Bf16Measurement:
    """The rule on paired timings (pair i: ``fp32_seconds[i]``, ``bf16_seconds[i]``): bf16 only
    when its median is at least ``margin`` below fp32's and it won at least ``majority`` of the
    pairs. Ties and noise keep fp32, the precision that needs no justification."""
    if len(fp32_seconds) != len(bf16_seconds) or not fp32_seconds:
        raise ValueError(f"needs paired timings, got {len(fp32_seconds)} fp32 and {len(bf16_seconds)} bf16")
    fp32, bf16 = statistics.median(fp32_seconds), statistics.median(bf16_seconds)
    won = sum(b < a for a, b in zip(fp32_seconds, bf16_seconds))
    preferred = bf16 <= (1.0 - margin) * fp32 and won >= majority * len(fp32_seconds)
    return Bf16Measurement(preferred, [round(t * 1e3, 3) for t in fp32_seconds],
                           [round(t * 1e3, 3) for t in bf16_seconds], round(fp32 * 1e3, 3), round(bf16 * 1e3, 3),
                           won, measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


#: (name, machine key) -> the answer, so a process reads the cache file once per question.
_MEMO: dict[tuple[str, str], bool] = {}


def _read_record() -> dict[str, Any]:
    try:
        record = json.loads(_choice_file().read_text())
    except (OSError, ValueError):
        record = {}
    return record if isinstance(record, dict) else {}


#: A measurement: (faster, {figures kept beside the answer in the cache's JSON}).
Measurement = Callable[[], tuple[bool, dict[str, Any]]]


def _measured(name: str, measure: Measurement, *, retake: bool = False) -> bool:
    """A yes/no measured once per CPU model, torch version and thread count, kept in the cache:
    ``measure()`` -> (faster, {figures}). ``retake`` measures again and replaces the entry."""
    key = _machine_key()
    if (name, key) in _MEMO and not retake:
        return _MEMO[name, key]
    record = _read_record()
    stored = record.get(key)
    entry: dict[str, Any] = stored if isinstance(stored, dict) else {}
    if retake or not isinstance(entry.get(name), bool):
        faster, figures = measure()
        entry = {**entry, name: faster, **figures}
        record[key] = entry
        try:
            _choice_file().parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(_choice_file(), record)
        except OSError:
            pass  # an unwritable cache only means measuring again next time
    _MEMO[name, key] = bool(entry[name])
    return _MEMO[name, key]


def _measure_bf16() -> tuple[bool, dict[str, Any]]:
    with waiting("measuring bf16 against fp32 on this CPU (once; styleforge bench --cpu-precision retakes it)"):
        measurement = bf16_decision(*_time_pairs(BF16_PAIRS))
    return measurement.bf16_preferred, {"bf16_measurement": asdict(measurement)}


def bf16_pays() -> bool:
    """Whether bf16 measured clearly faster than fp32 here (``BF16_RULE``): never without native
    bf16; else measured once and cached."""
    if not native_bf16():
        return False
    return _measured("bf16_preferred", _measure_bf16)


def measure_bf16() -> Bf16Measurement | None:
    """Measure bf16 against fp32 again and replace the cached choice (None: no native bf16 here,
    so auto is fp32 with nothing to measure). An unwritable cache keeps the answer for this
    process only."""
    if not native_bf16():
        return None
    taken: list[dict[str, Any]] = []

    def measure() -> tuple[bool, dict[str, Any]]:
        preferred, figures = _measure_bf16()
        taken.append(figures["bf16_measurement"])
        return preferred, figures

    _measured("bf16_preferred", measure, retake=True)
    return Bf16Measurement(**taken[0])


def winograd_pays() -> bool:
    """Whether Winograd F(2x2, 3x3) measured faster than the direct (oneDNN) convolution here, on
    a 256-channel layer (the size from which it pays on an AVX2 EPYC), measured once."""

    def measure() -> tuple[bool, dict[str, Any]]:
        direct = _time_convolutions(None, channels=256, size=48)
        winograd = _time_convolutions(None, channels=256, size=48, winograd=True)
        return winograd < direct, {"direct_256ch_ms": direct * 1e3, "winograd_256ch_ms": winograd * 1e3}

    return _measured("winograd_faster", measure)
