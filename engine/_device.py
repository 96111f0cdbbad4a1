"""Devices and numeric precision: one place decides where a render runs and in which numbers.

``resolve_device`` turns the ``device`` option into a torch device, ``Precision`` turns the
``precision`` option (resolved once per device) into the switches torch reads: TF32 for CUDA
matmuls (Gram matrices, patch matching) and cuDNN convolutions, and the autocast dtype of the
network for bf16/fp16. Backends and the render loop both enter ``Precision.numerics`` rather than
setting flags of their own, so the policy cannot drift between them.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ._cpu import bf16_pays
from ._errors import BackendUnavailableError, check_choice
from ._runtime_names import DEVICES, PRECISIONS

__all__ = ["DEVICES", "PRECISIONS", "Precision", "peak_memory", "resolve_device"]

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when a CUDA device is usable, else cpu; cuda without one is an error.
    ``cuda:N`` names one GPU (batch workers pin theirs this way)."""
    if name == "cpu":
        return torch.device("cpu")
    base, _, index = name.partition(":")
    check_choice("device", base, DEVICES)
    if torch.cuda.is_available():
        return torch.device("cuda", int(index)) if index else torch.device("cuda")
    if name == "auto":
        return torch.device("cpu")
    reason = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
    raise BackendUnavailableError(f"--device {name}: {reason} (torch {torch.__version__}); use --device cpu")


def peak_memory(device: torch.device) -> int:
    """Bytes: CUDA's peak allocation on ``device``, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@dataclass(frozen=True)
class Precision:
    """A resolved precision: fp32, tf32 (CUDA matmuls and convolutions in TF32; fp32 on CPU),
    bf16 or fp16 (the network under autocast; features handed out, Gram sums, losses and the
    optimiser's state in fp32)."""

    name: str

    def __post_init__(self) -> None:
        check_choice("precision", self.name, PRECISIONS)

    @classmethod
    def resolve(cls, option: str, device: torch.device) -> Precision:
        """The ``precision`` option on ``device``: auto is tf32 on CUDA; on a CPU bf16 where it
        runs natively and measured faster (see _cpu.bf16_pays), else fp32."""
        if option == "auto":
            if device.type == "cuda":
                return cls("tf32")
            return cls("bf16" if bf16_pays() else "fp32")
        return cls(option)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _HALF.get(self.name)

    @property
    def is_half(self) -> bool:
        return self.name in _HALF

    @contextlib.contextmanager
    def numerics(self, device: torch.device) -> Iterator[None]:
        """TF32 on for CUDA matmuls and cuDNN convolutions only when this precision is tf32
        (torch's own default leaves cuDNN's on); restored on exit. A no-op on CPU."""
        if device.type != "cuda":
            yield
            return
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.name == "tf32"
        try:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=self.name == "tf32"):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    def autocast(self, device: torch.device, *, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast to the half dtype (a null context for fp32/tf32). CUDA graph capture needs
        autocast's weight-cast cache off (``cache=False``)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype, cache_enabled=cache)
