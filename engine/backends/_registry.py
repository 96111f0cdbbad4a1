"""One factory for backends, used by a render and by every batch job alike.

``backend_for(config, device, sizes)`` builds the backend a config asks for (network, weights,
pooling, precision, CUDA graphs, TensorRT profile sizes); ``backend_key`` is derived from the
same fields, so a batch worker's shared backends can never serve a job that asked for something
else. ``auto`` takes the backend ``styleforge bench`` measured fastest on this machine, among
those that can run the asked precision; else TensorRT on a GPU; else torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import torch

from .._backbone import ARCHITECTURES, VGGFeatures
from .._config import RenderConfig, RuntimeConfig
from .._cpu import keep_freed_memory, use_physical_cores, winograd_pays
from .._device import Precision
from .._errors import BackendUnavailableError
from .._files import cache_dir, write_json_atomic
from .._weights import MODELS, load_backbone
from ._base import Backend
from ._onnxruntime import OnnxRuntimeBackend, onnxruntime_providers
from ._tensorrt import TensorRTBackend, tensorrt_available
from ._torch import TorchBackend

__all__ = ["BACKEND_TYPES", "available_backends", "backend_for", "backend_key", "record_fastest_backend",
           "resolve_precision"]

#: Backend name -> class. Tests swap entries to see what a render or a batch job asked for.
BACKEND_TYPES: dict[str, type[Backend]] = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend,
                                           "tensorrt": TensorRTBackend}


def available_backends(device: torch.device, precision: Precision | None = None) -> list[str]:
    """Backends that can run on ``device`` here (and ``precision``, if given), building nothing."""
    names = ["torch"]
    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if wanted in onnxruntime_providers():
        names.append("onnxruntime")
    if device.type == "cuda" and tensorrt_available() is None:
        names.append("tensorrt")
    if precision is not None:
        names = [name for name in names if BACKEND_TYPES[name].unsupported(precision, device) is None]
    return names


def _choice_file() -> Path:
    return cache_dir() / "fastest-backend.json"


def _machine_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{os.cpu_count()}"


def _read_choices() -> dict:
    """The recorded choices; a missing, unreadable or malformed file counts as none recorded."""
    try:
        record = json.loads(_choice_file().read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_fastest_backend(device: torch.device, timings: Mapping[str, float]) -> str:
    """Remember which backend measured fastest on this machine (``styleforge bench`` calls it)."""
    fastest = min(timings, key=timings.__getitem__)
    record = _read_choices()
    record[_machine_key(device)] = {"fastest": fastest, "ms_per_iteration": dict(timings)}
    _choice_file().parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(_choice_file(), record)
    return fastest


def auto_backend(device: torch.device, precision: Precision) -> str:
    """The fastest backend measured here that runs ``precision``, else TensorRT on a GPU, else torch."""
    present = available_backends(device, precision)
    entry = _read_choices().get(_machine_key(device))
    if isinstance(entry, dict) and entry.get("fastest") in present:
        return entry["fastest"]
    return "tensorrt" if "tensorrt" in present else "torch"


def backend_key(config: RenderConfig, device: torch.device) -> tuple[object, ...]:
    """What decides a built backend: the runtime group, the taps, the device, and the seed of
    random test weights. Derived from the config, never listed beside it."""
    random_seed = config.optimization.seed if MODELS[config.runtime.model].source == "random" else None
    return (dataclasses.astuple(config.runtime), config.taps, str(device), random_seed)


def _choose(runtime: RuntimeConfig, device: torch.device) -> tuple[str, Precision]:
    """The backend and the concrete precision ``runtime`` asks for on ``device`` (BackendUnavailableError
    where they cannot run here)."""
    precision = Precision.resolve(runtime.precision, device)
    exported = MODELS[runtime.model].arch in ARCHITECTURES  # the exported graphs are VGG's
    if runtime.backend != "auto":
        name = runtime.backend
    else:  # --compile and backbones without exported graphs are torch's: auto then means torch
        name = "torch" if runtime.torch_compile or not exported else auto_backend(device, precision)
    if runtime.torch_compile and name != "torch":
        raise BackendUnavailableError(f"--compile runs on the torch backend, not {name}")
    if not exported and name != "torch":
        raise BackendUnavailableError(f"--model {runtime.model} runs on the torch backend only ({name} runs the "
                                      f"exported VGG graphs)")
    kind = BACKEND_TYPES[name]
    if runtime.precision == "auto" and kind.unsupported(precision, device) is not None:
        # auto is the best the chosen backend runs: a CPU's bf16 is not onnxruntime's (fp32 graphs).
        precision = Precision("fp32" if device.type == "cpu" else "tf32")
    reason = kind.unsupported(precision, device)
    if reason is not None:
        raise BackendUnavailableError(reason)
    return name, precision


def resolve_precision(config: RenderConfig, device: torch.device) -> RenderConfig:
    """``config`` with ``--precision auto`` replaced by the precision it runs in on ``device``
    (fp32, tf32 or bf16: what backend_for would build), so that what an output records, and what
    a batch or video hash covers, is what ran. A concrete precision is returned unchanged."""
    if config.runtime.precision != "auto":
        return config
    if device.type == "cpu":
        use_physical_cores()  # the bf16 measurement is keyed by the thread count a render runs with
    return config.replace({"precision": _choose(config.runtime, device)[1].name})


def backend_for(config: RenderConfig, device: torch.device, sizes: Sequence[tuple[int, int]] = ((512, 512),), *,
                backbone: VGGFeatures | None = None) -> Backend:
    """The backend ``config.runtime`` asks for on ``device`` (on a CPU, torch's threads are set
    to the physical cores first, unless the user chose a count, and freed memory is kept for
    reuse: see _cpu.keep_freed_memory).

    ``sizes``: the (height, width) sizes the render will run at (TensorRT's profile spans them;
    a size outside it later widens the profile). ``backbone`` overrides the model's weights
    (tests pass random-weight networks).
    """
    runtime = config.runtime
    if device.type == "cpu":
        use_physical_cores()
        keep_freed_memory()
    name, precision = _choose(runtime, device)
    kind = BACKEND_TYPES[name]
    if backbone is None:
        backbone = load_backbone(runtime.model, config.taps, pooling=runtime.pooling, weights_path=runtime.weights,
                                 seed=config.optimization.seed)
    # Each name's entry is its class or a subclass (tests record the arguments): the constructors differ.
    if name == "torch":
        winograd = device.type == "cpu" and not precision.is_half and winograd_pays()
        return cast(type[TorchBackend], kind)(backbone, device, precision, cuda_graphs=runtime.cuda_graphs,
                                              compile=runtime.torch_compile, winograd=winograd)
    if name == "onnxruntime":
        return cast(type[OnnxRuntimeBackend], kind)(backbone, device, precision, model=runtime.model)
    return cast(type[TensorRTBackend], kind)(backbone, device, precision, model=runtime.model, sizes=list(sizes))
