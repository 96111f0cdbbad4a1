"""styleforge's engine: image I/O, backbones and weights, objectives, the render loop.

The public API is what this module exports; the implementation lives in private modules.
The engine never prints or exits: it reports through callbacks and raises typed errors.
"""

from ._backbone import ARCHITECTURES, POOLINGS, FeatureInfo, Preprocessing, VGGFeatures, layer_infos
from ._config import DEVICES, INITS, OPTIMIZERS, RenderConfig, load_config_file, option_name
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    ImageError,
    InputError,
    RenderError,
    RenderInterrupted,
    StyleforgeError,
    WeightsError,
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
from ._objectives import GatysObjective, content_loss, style_grams, style_loss, total_variation
from ._render import RenderEvent, RenderResult, match_luminance_colors, peak_memory, render, resolve_device
from ._weights import DEFAULT_MODEL, MODELS, ModelSpec, ModelStatus, cache_dir, load_backbone, model_status, resolve_weights

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "DEFAULT_MAX_PIXELS", "DEFAULT_MODEL", "DEVICES", "INITS", "MODELS", "OPTIMIZERS",
    "OUTPUT_FORMATS", "POOLINGS",
    "BackendUnavailableError", "ConfigError", "FeatureInfo", "GatysObjective", "ImageError", "InputError",
    "ModelSpec", "ModelStatus", "Preprocessing", "RenderConfig", "RenderError", "RenderEvent",
    "RenderInterrupted", "RenderResult", "StyleforgeError", "VGGFeatures", "WeightsError",
    "cache_dir", "check_output_path", "content_loss", "layer_infos", "load_backbone", "load_config_file", "load_image",
    "match_luminance_colors", "model_status", "option_name", "peak_memory", "read_metadata", "render",
    "resize_long_side", "resize_to", "resolve_device", "resolve_weights", "save_image", "style_grams",
    "style_loss", "total_variation",
]
