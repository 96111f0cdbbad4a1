"""styleforge's engine: the public API users call; the layers below it are subpackages.

Data flows one way: ``batch`` -> ``video`` -> ``rendering`` -> ``objectives`` / ``backends`` -> the core
(errors, files, values, device, image, backbone, weights, config). The engine never prints or
exits: it reports through callbacks and raises typed errors.
"""

from ._config import PHOTO_PRESET, RenderConfig, load_config_file
from ._values import frame_shape, parse_size
from ._device import Precision, resolve_device
from ._cpu import cpu_flags, native_bf16, physical_cores, use_physical_cores
from ._files import write_json_atomic
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
from ._image import DEFAULT_MAX_PIXELS, check_output_path, load_image, read_metadata, resize_long_side, resize_to, save_image
from ._maps import check_map_spec, flat_map, is_color, load_map, load_style_maps
from ._backbone import VGGFeatures, layer_infos
from ._weights import MODELS, load_backbone, model_status, resolve_weights
from .backends import backend_for, export_onnx
from .video import (
    MissingExtraError,
    ShotInterrupted,
    ShotResult,
    VideoConfig,
    VideoEvent,
    frame_store,
    open_frames,
    render_shot,
    warp_error,
)
from .batch import BatchJob, JobOutcome, ManifestError, glob_jobs, load_manifest, run_batch
from .rendering import RenderEvent, RenderResult, TargetCache, plan_for, render

__version__ = "0.1.0"

__all__ = [
    # configure
    "RenderConfig", "PHOTO_PRESET", "load_config_file", "parse_size", "frame_shape", "Precision",
    # images in and out
    "load_image", "save_image", "read_metadata", "resize_to", "resize_long_side", "check_output_path",
    "DEFAULT_MAX_PIXELS", "write_json_atomic", "load_style_maps", "flat_map", "is_color", "load_map", "check_map_spec",
    # render
    "render", "RenderEvent", "RenderResult", "plan_for", "resolve_device", "TargetCache",
    # the CPU
    "cpu_flags", "native_bf16", "physical_cores", "use_physical_cores",
    # video
    "render_shot", "open_frames", "frame_store", "VideoConfig", "VideoEvent", "ShotResult", "ShotInterrupted",
    "MissingExtraError", "warp_error",
    # batch
    "load_manifest", "glob_jobs", "run_batch", "BatchJob", "JobOutcome", "ManifestError",
    # models and backends
    "MODELS", "model_status", "resolve_weights", "load_backbone", "VGGFeatures", "layer_infos", "backend_for",
    "export_onnx",
    # errors
    "StyleforgeError", "InputError", "ConfigError", "ImageError", "WeightsError", "BackendUnavailableError",
    "RenderError", "RenderInterrupted", "OutputError", "StyleforgeWarning", "check_choice",
]
