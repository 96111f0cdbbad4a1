"""styleforge's engine: the public API users call; the layers below it are subpackages.

Data flows one way: ``preview`` -> ``batch`` -> ``video`` -> ``rendering`` -> ``objectives`` / ``backends`` -> the core
(errors, files, values, device, image, backbone, weights, config). The engine never prints or
exits: it reports through callbacks and raises typed errors.

Configuration, errors and values load at once and without torch, so ``styleforge --help`` and
anything that only builds or checks a config stay fast; every other name is imported on first use
(PEP 562 ``__getattr__``, from the table ``_LAZY``). Type checkers read the imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config import PHOTO_PRESET, RenderConfig, load_config_file
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    ImageError,
    InputError,
    OutputError,
    RenderError,
    RenderInterrupted,
    StyleforgeError,
    StyleforgeWarning,
    WeightsError,
    check_choice,
)
from ._files import write_json_atomic
from ._layers import layer_infos
from ._models import MODELS
from ._values import DEFAULT_MAX_PIXELS, frame_shape, is_color, parse_size
from ._video_config import VideoConfig
from ._wait import WaitEvent, report_waits

if TYPE_CHECKING:
    # Re-exported (``as``) although not in __all__: the subpackages are attributes, not star imports.
    from . import backends as backends, batch as batch, preview as preview, rendering as rendering, video as video
    from ._backbone import VGGFeatures
    from ._colorspace import color_pipeline
    from ._cpu import cpu_flags, measure_bf16, native_bf16, physical_cores, use_physical_cores
    from ._device import Precision, resolve_device
    from ._machine import describe_machine
    from ._image import check_output_path, load_image, read_metadata, resize_long_side, resize_to, save_image
    from ._maps import check_map_spec, flat_map, load_map, load_style_maps
    from ._plate import Plate, read_plate
    from ._weights import load_backbone, model_status, resolve_weights
    from .backends import (
        backend_for,
        compare_bench_reports,
        export_onnx,
        read_bench_report,
        resolve_precision,
        write_bench_report,
    )
    from .batch import BatchJob, JobOutcome, ManifestError, glob_jobs, load_manifest, run_batch
    from .preview import PreviewServer, check_preview, open_preview
    from .rendering import RenderEvent, RenderResult, TargetCache, plan_for, render
    from .video import (
        MissingExtraError,
        ShotInterrupted,
        ShotResult,
        VideoEvent,
        frame_store,
        open_frames,
        parse_frame_range,
        render_shot,
        warp_error,
    )

__version__ = "0.1.0"

__all__ = [
    # configure
    "RenderConfig", "PHOTO_PRESET", "load_config_file", "parse_size", "frame_shape", "Precision",
    # images in and out
    "load_image", "save_image", "read_metadata", "resize_to", "resize_long_side", "check_output_path",
    "DEFAULT_MAX_PIXELS", "write_json_atomic", "read_plate", "Plate", "color_pipeline", "load_style_maps", "flat_map",
    "is_color", "load_map", "check_map_spec",
    # render
    "render", "RenderEvent", "RenderResult", "plan_for", "resolve_device", "TargetCache", "resolve_precision",
    "WaitEvent", "report_waits",
    # the CPU
    "cpu_flags", "native_bf16", "physical_cores", "use_physical_cores", "measure_bf16", "describe_machine",
    # video
    "render_shot", "open_frames", "frame_store", "VideoConfig", "VideoEvent", "ShotResult", "ShotInterrupted",
    "MissingExtraError", "warp_error", "parse_frame_range",
    # batch
    "load_manifest", "glob_jobs", "run_batch", "BatchJob", "JobOutcome", "ManifestError",
    # the live preview page
    "open_preview", "check_preview", "PreviewServer",
    # models and backends
    "MODELS", "model_status", "resolve_weights", "load_backbone", "VGGFeatures", "layer_infos", "backend_for",
    "export_onnx", "write_bench_report", "read_bench_report", "compare_bench_reports",
    # errors
    "StyleforgeError", "InputError", "ConfigError", "ImageError", "WeightsError", "BackendUnavailableError",
    "RenderError", "RenderInterrupted", "OutputError", "StyleforgeWarning", "check_choice",
]

#: Name -> the module (relative to this package) it is imported from on first use; a subpackage's
#: own name gives the subpackage (``engine.batch.write_report``).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("backends", "batch", "preview", "rendering", "video"), ""),
    "VGGFeatures": "._backbone",
    "color_pipeline": "._colorspace",  # numpy and, on use, OpenColorIO: not for --help
    **dict.fromkeys(("cpu_flags", "measure_bf16", "native_bf16", "physical_cores", "use_physical_cores"), "._cpu"),
    **dict.fromkeys(("Precision", "resolve_device"), "._device"),
    "describe_machine": "._machine",
    **dict.fromkeys(("check_output_path", "load_image", "read_metadata", "resize_long_side", "resize_to",
                     "save_image"), "._image"),
    **dict.fromkeys(("check_map_spec", "flat_map", "load_map", "load_style_maps"), "._maps"),
    **dict.fromkeys(("Plate", "read_plate"), "._plate"),
    **dict.fromkeys(("load_backbone", "model_status", "resolve_weights"), "._weights"),
    **dict.fromkeys(("backend_for", "compare_bench_reports", "export_onnx", "read_bench_report", "resolve_precision",
                     "write_bench_report"), ".backends"),
    **dict.fromkeys(("PreviewServer", "check_preview", "open_preview"), ".preview"),
    **dict.fromkeys(("BatchJob", "JobOutcome", "ManifestError", "glob_jobs", "load_manifest", "run_batch"),
                    ".batch"),
    **dict.fromkeys(("RenderEvent", "RenderResult", "TargetCache", "plan_for", "render"), ".rendering"),
    **dict.fromkeys(("MissingExtraError", "ShotInterrupted", "ShotResult", "VideoEvent", "frame_store",
                     "open_frames", "parse_frame_range", "render_shot", "warp_error"), ".video"),
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name or f".{name}", __name__)
    value = module if not module_name else getattr(module, name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
