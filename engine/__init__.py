"""styleforge's engine: image I/O, backbones and weights, objectives, the render loop.

The public API is what this module exports; the implementation lives in private modules.
The engine never prints or exits: it reports through callbacks and raises typed errors.
"""

from ._backbone import ARCHITECTURES, POOLINGS, FeatureInfo, Preprocessing, VGGFeatures, layer_infos
from ._backend import Backend, OnnxRuntimeBackend, TorchBackend, available_backends, create_backend, record_fastest_backend
from ._config import BACKENDS, DEVICES, INITS, OPTIMIZERS, RenderConfig, load_config_file, option_name
from ._batch import (
    BatchJob,
    JobOutcome,
    ManifestError,
    TargetCache,
    glob_jobs,
    job_hash,
    load_manifest,
    parse_option_value,
    run_batch,
    run_job,
    write_json_atomic,
)
from ._batch import summarize as summarize_outcomes
from ._bench import BackendTiming, conv_flops, matrix_tflops, time_backend
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    ImageError,
    InputError,
    RenderError,
    RenderInterrupted,
    StyleforgeError,
    WeightsError,
    check_choice,
)
from ._image import (
    DEFAULT_MAX_PIXELS,
    OUTPUT_FORMATS,
    check_output_path,
    load_image,
    read_metadata,
    resize_long_side,
    resize_to,
    save_image,
)
from ._export import ExportedGraphs, export_onnx
from ._objectives import GatysObjective, content_loss, style_grams, style_loss, total_variation
from ._planner import LevelPlan, RenderPlan, parse_bytes, plan_render
from ._render import (
    RenderEvent,
    RenderResult,
    crop_to_frame,
    match_luminance_colors,
    peak_memory,
    plan_for,
    render,
    resolve_device,
)
from ._config import PRECISIONS
from ._tensorrt import tensorrt_available
from ._weights import DEFAULT_MODEL, MODELS, ModelSpec, ModelStatus, cache_dir, load_backbone, model_status, resolve_weights

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "BACKENDS", "DEFAULT_MAX_PIXELS", "DEFAULT_MODEL", "DEVICES", "INITS", "MODELS", "OPTIMIZERS",
    "OUTPUT_FORMATS", "POOLINGS",
    "Backend", "BackendUnavailableError", "ConfigError", "ExportedGraphs", "OnnxRuntimeBackend", "TorchBackend",
    "BatchJob", "JobOutcome", "ManifestError", "TargetCache", "glob_jobs", "job_hash", "load_manifest",
    "parse_option_value", "run_batch", "run_job", "summarize_outcomes", "write_json_atomic",
    "LevelPlan", "RenderPlan", "crop_to_frame", "parse_bytes", "plan_for", "plan_render",
    "PRECISIONS", "tensorrt_available", "BackendTiming", "available_backends", "check_choice", "conv_flops", "create_backend", "matrix_tflops", "time_backend", "export_onnx", "record_fastest_backend", "FeatureInfo", "GatysObjective", "ImageError", "InputError",
    "ModelSpec", "ModelStatus", "Preprocessing", "RenderConfig", "RenderError", "RenderEvent",
    "RenderInterrupted", "RenderResult", "StyleforgeError", "VGGFeatures", "WeightsError",
    "cache_dir", "check_output_path", "content_loss", "layer_infos", "load_backbone", "load_config_file", "load_image",
    "match_luminance_colors", "model_status", "option_name", "peak_memory", "read_metadata", "render",
    "resize_long_side", "resize_to", "resolve_device", "resolve_weights", "save_image", "style_grams",
    "style_loss", "total_variation",
]
