"""RenderConfig: the one source of truth for render options, shared by the API, TOML and the CLI.

A RenderConfig is composed of groups, each a frozen dataclass that checks its own values:
``objective`` (what the loss asks for), ``mrf`` (Li & Wand's patches and neural-doodle maps),
``pyramid`` (sizes and iterations per level), ``optimization`` (optimiser and its start),
``runtime`` (network, weights, device, backend, precision), ``memory`` (tiling budget) and
``color_management`` (OCIO colour spaces of EXR plates).
Every field has one flat name (``style_weight``), unique across groups: the Python API, TOML
files, batch manifests and the command line's flags (``--style-weight``) all use it, and the CLI
builds its options, help and defaults from the fields' metadata here.
"""

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

# Only torch-free modules: the command line builds its options and help from this one.
from ._errors import ConfigError, check_choice
from ._layers import POOLINGS, layer_infos
from ._models import DEFAULT_MODEL, MODELS
from ._runtime_names import DEVICES, PRECISIONS
from ._style_losses import registered_entry
from ._values import coerce, parse_bytes, parse_color, parse_iterations, parse_size

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "BACKENDS", "COLOR_TRANSFERS", "GRAM_VGG19_STYLE_WEIGHT", "INITS", "METHODS", "OPTIMIZERS", "STYLE_WEIGHT",
    "ColorManagementConfig",
    "MRFConfig", "MemoryConfig",
    "ObjectiveConfig", "OptimizationConfig", "PHOTO_PRESET", "PyramidConfig", "RenderConfig", "RuntimeConfig",
    "default_style_weight", "load_config_file",
]

METHODS = ("gram", "mrf")
# The style losses of the gram method are the registry's (_style_losses; each loss's file in
# objectives registers itself), checked by name when a config is built.
#: Colour control: none, luminance only (after the render), style colours matched to the content's (before).
COLOR_TRANSFERS = ("none", "luminance", "histogram")
OPTIMIZERS = ("lbfgs", "adam")
#: Where the first level starts: the content photo, the content in the styles' palette (the
#: painting's luminance and colours at each luminance: rendering/_color.py), noise, the (first)
#: style; or an image path.
INITS = ("content", "palette", "noise", "gray", "style")
LEVEL_STARTS = ("upsample", "detail")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: The default style layers: Gatys et al.'s without relu5_1. Chosen by looking at all five reference
#: pairs at 384 px (benchmarks/RESULTS.md, Quality): with the edge-tuned vgg16-hed weights, relu5_1's
#: Gram (a 16 px stride, the whole image in its receptive field) redraws the layout — houses melt
#: into the style's large shapes on the_scream, seated-nude and shipwreck — while without it the
#: spire, the facades and the bridge keep their structure and Starry Night keeps its swirls. The
#: network then also stops at relu4_2, a fifth fewer FLOPs per evaluation.
DEFAULT_STYLE_LAYERS = GATYS_STYLE_LAYERS[:4]
#: The coarsest level of an automatic pyramid has about this long side.
PYRAMID_START = 256
#: Levels up to this long side run the full ``iterations``; larger ones follow ``iteration_decay``.
#: Tuned by looking (tubingen / Starry Night, 512 px): 500, 250, 125 over 256, 362, 512 px lost the
#: town (each level's restarted L-BFGS stylises further from a blurred start); 100 per level keeps
#: more of it in under half the single-level 500 iterations' time (not settled: see README).
FULL_ITERATIONS_UP_TO = 1024
#: The style weight where none is given, chosen per backbone by looking at the quality sheets
#: (benchmarks/RESULTS.md): 1e3 was tuned on vgg16-hed, for every style loss, and NNST was judged
#: at it on the original VGG19.
STYLE_WEIGHT = 1e3
#: Gram on the original VGG19, the default render: at 1e3 its seated-nude's left half broke into
#: facets; neural-style's own balance on this network maps to 7-99 (benchmarks/_neural_style.py).
#: Looked at on all five Gram pairs at 100, 200 and 300 (RESULTS.md, "A VGG19 Gram default"): 100
#: shrank Starry Night's swirls, 300 faceted seated-nude's left houses again, 200 kept both. W2,
#: sliced and the torchvision models were not judged on it and keep 1e3.
GRAM_VGG19_STYLE_WEIGHT = 200.0


def default_style_weight(model: object, method: object, style_loss: object) -> float:
    """The style weight a render gets where none is given (see ``STYLE_WEIGHT``)."""
    if (model, method, style_loss) == ("vgg19-oxford-8bit", "gram", "gram"):
        return GRAM_VGG19_STYLE_WEIGHT
    return STYLE_WEIGHT


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A config field with its help text and how the CLI spells it (``short``: e.g. -n;
    ``flags``: custom declarations such as --original-colors/--style-colors; ``show``: the
    default as help shows it when the value alone says too little)."""
    return field(default=default, metadata={"help": help, **cli})


def _check(condition: bool, field_name: str, problem: str) -> None:
    if not condition:
        raise ConfigError(problem, field=field_name)


def _check_weights(group: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(group, name)
        _check(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        _check(value <= 1e30, name, f"must be at most 1e30 (more can only overflow the float32 loss), got {value}")


def _check_counts(group: Any, names: tuple[str, ...], least: int = 1) -> None:
    for name in names:
        value = getattr(group, name)
        _check(value >= least, name, f"must be at least {least}, got {value}")


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """What the loss asks for. Weights are relative to the normalised terms (see objectives)."""

    method: str = _option("gram", "gram (Gatys et al.) or mrf (Li & Wand; CNNMRF's defaults: 384 px, 3 levels x "
                                  "100 iterations, content weight 0.5).", show="gram")
    style_loss: str = _option("gram", "Style loss of the gram method: gram (Gram matrices), w2 (Wasserstein-2 between "
                                      "Gaussian fits of the features) or sliced (sliced Wasserstein, histogram "
                                      "matching on random projections) or nnst (Kolkin et al.'s Neural Neighbor "
                                      "Style Transfer: each position's hypercolumn replaced by its nearest style "
                                      "one). MRF ignores it.", show="gram")
    content_weight: float = _option(1.0, "Weight of the content term.")
    style_weight: float = _option(default_style_weight(DEFAULT_MODEL, "gram", "gram"),
                                  "Weight of the style term (gram, w2, sliced or nnst).",
                                  show=f"{GRAM_VGG19_STYLE_WEIGHT:g} for the gram loss on {DEFAULT_MODEL}, "
                                       f"10000 with --photo, else {STYLE_WEIGHT:g}")
    tv_weight: float = _option(2.0, "Total-variation smoothing.")
    content_layers: tuple[str, ...] = _option(("relu4_2",), "Content layers (comma-separated).")
    style_layers: tuple[str, ...] = _option(DEFAULT_STYLE_LAYERS, "Style layers of gram, w2, sliced and nnst "
                                                                  "(comma-separated); Gatys et al. add relu5_1.")
    style_layer_weights: tuple[float, ...] | None = _option(None, "One weight per style layer.", show="equal")
    style_blend: tuple[float, ...] | None = _option(None, "Blend weights of the style images, e.g. 0.7,0.3.",
                                                    show="equal")
    style_scale: float = _option(1.0, "Style size relative to the output's long side.")
    original_colors: bool = _option(False, "Keep the content's colours (luminance-only transfer).",
                                    flags=("--original-colors/--style-colors",), show="style colours")
    # control: regions and colour
    color_transfer: str = _option("none", "Colour control: none, luminance (the content's colours, the style's "
                                          "luminance: after the render; --original-colors for short) or histogram "
                                          "(each style's colour mean and covariance matched to the content's, before "
                                          "the render).", show="none")
    unstyled_color: str | None = _option(None, "A --content-map colour that gets no style term, only content "
                                               "(e.g. #000000); the content is blended back there with a soft mask.",
                                         show="none")
    # control: photorealism
    photo_weight: float = _option(0.0, "Weight of the photorealism term (Luan et al.: the content's matting "
                                       "Laplacian keeps the output locally an affine recolouring of the photo); "
                                       "0: off.", show="0 (off)")
    photo: bool = _option(False, "Photorealistic preset: Luan et al.'s matting term, started from the "
                                 "content, no TV (see README); options given explicitly override it.",
                         flags=("--photo/--no-photo",), show="off")

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        registered_entry(self.style_loss, method="gram", field="style_loss")
        _check_weights(self, ("content_weight", "style_weight", "tv_weight"))
        _check(math.isfinite(self.style_scale) and self.style_scale > 0, "style_scale",
               f"must be a finite number > 0, got {self.style_scale}")
        _check(bool(self.style_layers), "style_layers", "at least one layer is needed")
        if self.style_layer_weights is not None:
            _check(len(self.style_layer_weights) == len(self.style_layers), "style_layer_weights",
                   f"{len(self.style_layer_weights)} values for {len(self.style_layers)} style layers")
        for name in ("style_layer_weights", "style_blend"):
            values = getattr(self, name)
            if values is not None:
                _check(all(v >= 0 for v in values) and sum(values) > 0, name,
                       f"weights must be >= 0 and not all zero, got {list(values)}")
        # control: regions and colour
        check_choice("color_transfer", self.color_transfer, COLOR_TRANSFERS)
        _check(not self.original_colors or self.color_transfer in ("none", "luminance"), "color_transfer",
               f"{self.color_transfer} contradicts original_colors (luminance transfer): give one of them")
        if self.unstyled_color is not None:
            parse_color(self.unstyled_color, field="unstyled_color")
        _check_weights(self, ("photo_weight",))  # control: photorealism

    @property
    def colors(self) -> str:
        """The colour transfer in effect: ``original_colors`` is luminance's short form."""
        return "luminance" if self.original_colors else self.color_transfer

    def style_layer_weight_map(self) -> dict[str, float]:
        """Gram style layer -> weight (equal unless given)."""
        weights = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return dict(zip(self.style_layers, weights, strict=True))


@dataclass(frozen=True, kw_only=True)
class MRFConfig:
    """Li & Wand's MRF term and neural-doodle's semantic maps (``method = "mrf"``)."""

    mrf_layers: tuple[str, ...] = _option(
        ("relu2_1", "relu3_1", "relu4_1"),
        "MRF layers. CNNMRF uses relu3_1 and relu4_1; relu2_1 is added for colour (on vgg16-hed faces came out "
        "pink and green without it; on VGG19 CNNMRF's pair is 2.6x faster, but more faceted).")
    mrf_weight: float = _option(1.0, "Weight of the MRF term.")
    mrf_layer_weights: tuple[float, ...] | None = _option(None, "One weight per MRF layer.", show="equal")
    patch_size: int = _option(3, "MRF patch size (k x k feature positions).")
    style_stride: int = _option(2, "Stride between the style patches in the bank.")
    synthesis_stride: int = _option(2, "Stride between the output's patches that are matched and pulled.")
    style_rotations: int = _option(0, "MRF: also match 2n rotated copies of the style.")
    rotation_step: float = _option(10.0, "MRF: degrees between rotated copies.")
    style_scales: int = _option(0, "MRF: also match 2n scaled copies of the style.")
    scale_step: float = _option(0.05, "MRF: scale step between scaled copies.")
    confidence: float | None = _option(None, "MRF: pull only patches matched with at least this NCC.", show="off")
    map_weight: float = _option(10.0, "How strongly semantic maps confine matches to the same region.")

    def __post_init__(self) -> None:
        _check_counts(self, ("patch_size", "style_stride", "synthesis_stride"))
        _check_counts(self, ("style_rotations", "style_scales"), least=0)
        _check_weights(self, ("mrf_weight", "map_weight"))
        for name in ("rotation_step", "scale_step"):
            _check(math.isfinite(getattr(self, name)), name, f"must be a finite number, got {getattr(self, name)}")
        _check(self.style_scales * abs(self.scale_step) < 1, "scale_step",
               f"{self.style_scales} scales of {self.scale_step} would shrink the style to nothing")
        _check(bool(self.mrf_layers), "mrf_layers", "at least one layer is needed")
        if self.mrf_layer_weights is not None:
            _check(len(self.mrf_layer_weights) == len(self.mrf_layers), "mrf_layer_weights",
                   f"{len(self.mrf_layer_weights)} values for {len(self.mrf_layers)} MRF layers")
            _check(all(v >= 0 for v in self.mrf_layer_weights) and sum(self.mrf_layer_weights) > 0,
                   "mrf_layer_weights", f"weights must be >= 0 and not all zero, got {list(self.mrf_layer_weights)}")
        if self.confidence is not None:
            _check(-1.0 <= self.confidence <= 1.0, "confidence",
                   f"a normalised cross-correlation in [-1, 1], got {self.confidence}")

    def layer_weight_map(self) -> dict[str, float]:
        weights = self.mrf_layer_weights or (1.0,) * len(self.mrf_layers)
        return dict(zip(self.mrf_layers, weights, strict=True))


@dataclass(frozen=True, kw_only=True)
class PyramidConfig:
    """Output size and the coarse-to-fine schedule."""

    size: int | tuple[int, int] = _option(
        512, "Long side of the output (4096), or a frame the content is scaled to cover and centre-cropped to "
             "(3840x2160).")
    iterations: int | tuple[int, ...] = _option(
        100, "Loss evaluations per level up to 1024 px (larger levels: see --iteration-decay), or one count per "
             "level (500,200,100).", short="-n")
    levels: int = _option(0, "Resolutions, coarse to fine; 0: from about 256 px up by --level-scale.")
    level_scale: float = _option(2**0.5, "Size ratio between levels.")
    iteration_decay: float = _option(0.5, "Each level above 1024 px runs this fraction of the previous level's "
                                          "iterations.")
    level_start: str = _option("detail", "How a finer level starts: the coarser result upsampled, or (detail) that "
                                           "plus the content's detail the coarser level could not hold.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", parse_size(self.size))
        check_choice("level_start", self.level_start, LEVEL_STARTS)
        object.__setattr__(self, "iterations", parse_iterations(self.iterations))
        _check_counts(self, ("levels",), least=0)
        _check(self.levels <= 100, "levels", f"must be at most 100, got {self.levels}")
        _check(1.0 < self.level_scale <= 4.0, "level_scale", f"must be in (1, 4], got {self.level_scale}")
        _check(0.0 < self.iteration_decay <= 1.0, "iteration_decay", f"must be in (0, 1], got {self.iteration_decay}")
        if isinstance(self.iterations, tuple) and self.levels:
            _check(len(self.iterations) == self.levels, "iterations",
                   f"{len(self.iterations)} per-level counts for levels = {self.levels}")

    @property
    def level_count(self) -> int:
        """``levels``, or (0) enough to start near 256 px on the long side."""
        if self.levels:
            return self.levels
        if isinstance(self.iterations, tuple):
            return len(self.iterations)
        long_side = self.size if isinstance(self.size, int) else max(self.size)
        return 1 + max(0, round(math.log(long_side / PYRAMID_START) / math.log(self.level_scale)))

    def level_shapes(self, reference: tuple[int, int] | None) -> list[tuple[int, int]]:
        """(height, width) of each level, coarse to fine. The last is the output: ``size`` as
        (width, height), or ``size`` on the long side with the reference's (height, width)
        aspect (square without one); coarser levels are smaller by ``level_scale`` each."""
        if isinstance(self.size, tuple):
            height, width = self.size[1], self.size[0]
        elif reference is None:
            height = width = self.size
        else:
            scale = self.size / max(reference)
            height, width = max(1, round(reference[0] * scale)), max(1, round(reference[1] * scale))
        count = self.level_count
        return [(max(1, round(height / self.level_scale ** (count - 1 - level))),
                 max(1, round(width / self.level_scale ** (count - 1 - level)))) for level in range(count)]

    def level_iterations(self) -> list[int]:
        """Iterations of each level, coarse to fine (see ``iterations``)."""
        if isinstance(self.iterations, tuple):
            return list(self.iterations)
        floor = max(1, math.ceil(self.iterations / 4))
        counts, count = [], float(self.iterations)
        for height, width in self.level_shapes(None):
            if max(height, width) > FULL_ITERATIONS_UP_TO:
                count *= self.iteration_decay
            counts.append(max(floor, math.ceil(count)))
        return counts


@dataclass(frozen=True, kw_only=True)
class OptimizationConfig:
    """The optimiser and the image it starts from."""

    optimizer: str = _option("lbfgs", "lbfgs or adam.")
    learning_rate: float | None = _option(None, "Step size.", show="1.0 for lbfgs, 0.02 for adam")
    lbfgs_history: int = _option(50, "L-BFGS corrections kept (memory: 2 image-sized vectors each).")
    average: float = _option(0.0, "Iterate averaging: each level's result is the exponential moving average of its "
                                  "iterates with this decay (0: off, the last iterate; 0.9 to 0.99 with adam).")
    # palette by default: from the photo's own colours the optimiser keeps each colour near where it
    # was (a blue sky stays the painting's nearest blue); from the content in the painting's palette,
    # skies and walls take the painting's colours at their luminance, as neural-style's references
    # have them. Chosen by looking at every pair of the quality benchmark (benchmarks/RESULTS.md).
    init: str = _option("palette", "content, palette (the content in the styles' colours; with --color-transfer "
                                   "luminance or histogram, the content), noise (uniform), gray (the network's mean "
                                   "pixel: neural-style's near-flat random start), style or an image path.")
    seed: int = _option(0, "Seed of the noise and gray inits (and of random test weights).")

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_counts(self, ("lbfgs_history",))
        _check(0.0 <= self.average < 1.0, "average", f"must be in [0, 1), got {self.average}")
        if self.learning_rate is not None:
            _check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
                   f"must be a finite number > 0, got {self.learning_rate}")
            _check(self.learning_rate <= 1e30, "learning_rate",
                   f"must be at most 1e30 (more can only diverge), got {self.learning_rate}")
            # Adam's first step moves every pixel by about the rate: from 1 on, all of them hit 0 or 1.
            _check(self.optimizer != "adam" or self.learning_rate < 1, "learning_rate",
                   f"must be below 1 for adam (each step moves every pixel by about this much), got "
                   f"{self.learning_rate}")
        _check(0 <= self.seed < 2**63, "seed", f"must be in [0, 2**63), got {self.seed}")
        if self.init not in INITS:
            _check("\0" not in self.init and Path(self.init).is_file(), "init",
                   f"{self.init!r} is neither one of {', '.join(INITS)} nor an existing image file")

    @property
    def init_image(self) -> Path | None:
        """The image file the render starts from, or None for a named start (content, noise, ...)."""
        return None if self.init in INITS else Path(self.init)

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer == "lbfgs" else 0.02


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where and how the network runs. Everything a built backend depends on is here, so the
    backend cache key is derived from this group (see backends.backend_key)."""

    model: str = _option(DEFAULT_MODEL, "Backbone and weights (see 'styleforge models').")
    weights: str | None = _option(None, "Weights file for --model (otherwise the cache).", show="the cache")
    pooling: str = _option("max", "max or avg.")
    device: str = _option("auto", "auto, cpu or cuda.")
    backend: str = _option("auto", "torch, onnxruntime, tensorrt or auto (fastest measured by 'styleforge bench').")
    precision: str = _option("auto", f"auto, {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]} (bf16, fp16: "
                                     "features in half precision; Grams, losses, optimiser fp32).",
                             show="tf32 on CUDA; on a CPU bf16 where it is native and measured faster, else fp32")
    cuda_graphs: bool = _option(False, "Replay the torch backend's passes as CUDA graphs (one capture per input "
                                       "shape: a tiled level has several; a level whose captures would not fit "
                                       "the memory budget runs eagerly, as --dry-run says).",
                                flags=("--cuda-graphs/--no-cuda-graphs",), show="off")
    torch_compile: bool = _option(False, "torch backend: run the network's forward and image gradient through "
                                         "torch.compile (compiles once per size; see benchmarks/RESULTS.md for "
                                         "when it pays).", flags=("--compile/--no-compile",), show="off")

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("device", self.device, DEVICES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("precision", self.precision, ("auto", *PRECISIONS))


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """The memory budget and exact tiling."""

    tile_size: int = _option(0, "Evaluate the loss exactly, tile by tile, in tiles of this many pixels; 0: the "
                                "planner decides.")
    max_memory: str | None = _option(None, "Memory budget, e.g. 16G.",
                                     show="90% of free GPU memory, 80% of available RAM")

    def __post_init__(self) -> None:
        _check_counts(self, ("tile_size",), least=0)
        if self.max_memory is not None:
            parse_bytes(self.max_memory)

    @property
    def budget_bytes(self) -> int | None:
        return parse_bytes(self.max_memory) if self.max_memory is not None else None


@dataclass(frozen=True, kw_only=True)
class ColorManagementConfig:
    """OpenColorIO names for EXR plates (the config: $OCIO, else OCIO's built-in ACES CG config).
    Checked against the config when a plate is read or written (``_colorspace``), so a config
    without the exr extra installed still builds."""

    input_colorspace: str | None = _option(None, "Colour space of EXR inputs (an OCIO name, e.g. ACEScg).",
                                           show="the OCIO config's scene_linear (ACEScg)")
    output_colorspace: str | None = _option(None, "Colour space of EXR outputs.", show="the input's")
    view: str | None = _option(None, "How the network sees an EXR plate: an OCIO view of the default display, or "
                                     "DISPLAY/VIEW; the output comes back through its inverse.",
                               show="the config's default (sRGB - Display, ACES 2.0 - SDR 100 nits)")

    def __post_init__(self) -> None:
        for name in ("input_colorspace", "output_colorspace", "view"):
            value = getattr(self, name)
            _check(value is None or (value.strip() != "" and "\0" not in value), name, f"must be a name, got {value!r}")


_GROUPS: "dict[str, type[DataclassInstance]]" = {
    "objective": ObjectiveConfig, "mrf": MRFConfig, "pyramid": PyramidConfig, "optimization": OptimizationConfig,
    "runtime": RuntimeConfig, "memory": MemoryConfig, "color_management": ColorManagementConfig}
#: Flat option name -> (group name, dataclass field).
_FIELDS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (group, f) for group, cls in _GROUPS.items() for f in fields(cls)}
#: Options added after batch and video outputs began to carry hashes of ``to_dict()`` (see ``hashed``).
_LATER_OPTIONS = tuple(f.name for f in fields(ColorManagementConfig))
#: CNNMRF's defaults (Li & Wand's example): 3x3 patches, strides 2, content relu4_2, 3 resolutions x
#: 100 iterations, 384 px; weights re-tuned for the normalised losses. CNNMRF starts from the
#: content; the palette start (the default init) gave its portrait the painting's ochre background
#: where the photo's blue-grey came through as streaks (benchmarks/RESULTS.md, Quality). On the
#: original VGG19 (CNNMRF's own network), as the MRF sheets favour: on both MRF pairs of the quality
#: benchmark far better than vgg16-hed (the portrait's eyes and contours, the doodle's rock and sea;
#: RESULTS.md, "Quality on the original VGG19"); the Gram default has taken it since as well.
_MRF_DEFAULTS = dict(method="mrf", size=384, iterations=100, levels=3, level_scale=2.0, iteration_decay=1.0,
                     content_weight=0.5, tv_weight=2.0, level_start="upsample", model="vgg19-oxford-8bit")
#: The photorealistic preset (``photo = true``, ``--photo``, ``RenderConfig(photo=True)``): Luan et
#: al.'s matting-Laplacian term, started from the content, no TV (the term smooths only where the
#: photo is smooth). Chosen by looking at tubingen in the look of a night photo at 256 px
#: (benchmarks/RESULTS.md, "Control: photorealism"): relu3_1 and deeper style layers drew large
#: shapes into the flat sky (the style's roof line) that the term cannot forbid there, the first two
#: carry the colours; a content weight of 20 keeps the windows, photo weight 3e4 the edges straight.
#: VGG layer names: other backbones need --style-layers. Explicit options override the preset.
PHOTO_PRESET: dict[str, Any] = dict(photo=True, photo_weight=3e4, style_weight=1e4, content_weight=20.0,
                                    style_layers=("relu1_1", "relu2_1"), init="content", tv_weight=0.0)


@dataclass(frozen=True, init=False)
class RenderConfig:
    """Everything that decides what a render produces (given the same inputs and seed).

    Built from flat options, ``RenderConfig(size=1024, style_weight=5e3)``, or from groups,
    ``RenderConfig(pyramid=PyramidConfig(size=1024))``; read through the groups
    (``config.pyramid.size``) or flat with ``to_dict()``. Flat options without a style weight get
    the one chosen for their model and loss (``default_style_weight``); a group brings its own
    values, so an ``ObjectiveConfig`` brings its style weight (the default model's unless given).
    """

    objective: ObjectiveConfig
    mrf: MRFConfig
    pyramid: PyramidConfig
    optimization: OptimizationConfig
    runtime: RuntimeConfig
    memory: MemoryConfig
    color_management: ColorManagementConfig

    FIELDS: ClassVar[tuple[str, ...]] = tuple(_FIELDS)

    def __init__(self, **values: Any) -> None:
        if values.get("photo") is True:  # the preset fills what is not given
            values = {**PHOTO_PRESET, **values}
        grouped: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
        for key, value in values.items():
            if key in _GROUPS:
                if not isinstance(value, _GROUPS[key]):
                    raise ConfigError(f"must be a {_GROUPS[key].__name__}, got {type(value).__name__}", field=key)
                grouped[key] = {f.name: getattr(value, f.name) for f in fields(value)} | grouped[key]
            elif key in _FIELDS:
                grouped[_FIELDS[key][0]][key] = value
            else:
                raise ConfigError(f"unknown option {key!r}{_hint(key)}")
        _arch_default_layers(grouped)
        objective = grouped["objective"]
        if "style_weight" not in objective:  # the model's own, as defaults_for chooses it
            objective["style_weight"] = default_style_weight(
                grouped["runtime"].get("model", DEFAULT_MODEL), objective.get("method", "gram"),
                objective.get("style_loss", "gram"))
        for name, cls in _GROUPS.items():
            object.__setattr__(self, name, cls(**grouped[name]))
        self._check_across_groups()

    def _check_across_groups(self) -> None:
        """Layers must exist in the model's architecture."""
        arch = MODELS[self.runtime.model].arch
        names = [info.name for info in layer_infos(arch)]
        for name, layers in (("content_layers", self.objective.content_layers),
                             ("style_layers", self.objective.style_layers), ("mrf_layers", self.mrf.mrf_layers)):
            for layer in layers:
                try:
                    check_choice(name, layer, names)
                except ConfigError as error:
                    raise ConfigError(f"{error.problem} ({arch})", field=name) from None

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def mrf_defaults(cls, **overrides: Any) -> "RenderConfig":
        """CNNMRF's defaults with ``overrides`` applied (see ``_MRF_DEFAULTS``)."""
        return cls(**{**_MRF_DEFAULTS, **overrides})

    @classmethod
    def photo_defaults(cls, **overrides: Any) -> "RenderConfig":
        """The photorealistic preset with ``overrides`` applied (see ``PHOTO_PRESET``)."""
        return cls(**{**PHOTO_PRESET, **overrides})

    @classmethod
    def defaults_for(cls, values: Mapping[str, Any]) -> "RenderConfig":
        """The base that options are applied on: the method's defaults (CNNMRF's for ``method =
        "mrf"``), under the photorealistic preset where ``photo`` is true, with the style weight
        of the model and style loss given (``default_style_weight``). The command line, TOML
        files, manifests and ``from_options`` all start here, so a preset never overrides an
        option given explicitly, wherever it was given."""
        given = {str(key).replace("-", "_"): value for key, value in values.items()}
        base = dict(_MRF_DEFAULTS) if given.get("method") == "mrf" else {}
        if "photo" in given and coerce("photo", given["photo"], bool):
            base |= PHOTO_PRESET
        base.setdefault("style_weight", default_style_weight(
            *(given.get(name, base.get(name, _FIELDS[name][1].default)) for name in ("model", "method", "style_loss"))))
        return cls(**base)

    @classmethod
    def from_options(cls, values: Mapping[str, Any], *, source: str | None = None,
                     base: "RenderConfig | None" = None) -> "RenderConfig":
        """Options as a TOML file, a manifest or the command line give them (snake_ or kebab-case
        keys, values checked and converted), on ``base`` or on ``defaults_for(values)``."""
        if base is None:
            base = cls.defaults_for(values)
        return base.replace(values, source=source)

    def replace(self, values: Mapping[str, Any], *, source: str | None = None) -> "RenderConfig":
        """A copy with flat ``values`` applied, each checked against its field's type; errors
        name the field (and ``source``, the file the values came from). Every option not in
        ``values`` keeps this config's value, the style weight included: a new model or style
        loss does not bring its own default weight here (``from_options`` chooses it)."""
        flat = self.to_flat()
        try:
            for raw_key, value in values.items():
                key = str(raw_key).replace("-", "_")
                if key not in _FIELDS:
                    raise ConfigError(f"unknown option {raw_key!r}{_hint(key)}")
                flat[key] = coerce(key, value, _FIELDS[key][1].type)
            return RenderConfig(**flat)
        except ConfigError as error:
            if source is None:
                raise
            raise ConfigError(error.problem, field=error.field, source=source) from None

    # --- reading --------------------------------------------------------------------------------

    def to_flat(self) -> dict[str, Any]:
        """Flat option name -> value (tuples kept)."""
        return {name: getattr(getattr(self, group), name) for name, (group, _) in _FIELDS.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict (tuples become lists): what outputs embed and from_options reads."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.to_flat().items()}

    def hashed(self) -> dict[str, Any]:
        """``to_dict()`` as output hashes read it: options added after outputs carried hashes are
        left out while at their defaults, so those outputs keep their hashes (a rerun resumes)."""
        values = self.to_dict()
        for name in _LATER_OPTIONS:
            if values[name] == _FIELDS[name][1].default:
                del values[name]
        return values

    @property
    def taps(self) -> tuple[str, ...]:
        """Every layer the objective reads, in a stable order."""
        style = self.mrf.mrf_layers if self.objective.method == "mrf" else self.objective.style_layers
        return tuple(dict.fromkeys(self.objective.content_layers + style))

    @staticmethod
    def field_help(name: str) -> dict[str, Any]:
        """A field's help text, CLI spelling and default, for the CLI to build its options from."""
        group, spec = _FIELDS[name]
        return {"group": group, "type": spec.type, "default": spec.default,
                "mrf_default": _MRF_DEFAULTS.get(name, spec.default), **spec.metadata}

    @staticmethod
    def flag(name: str) -> str:
        """The command line's spelling of a field: style_weight -> --style-weight."""
        return "--" + name.replace("_", "-")


#: Default layers of backbones whose layer names are not VGG's, used where VGG's defaults stand:
#: CS231n's style transfer layers for SqueezeNet (content features[3], style features[1, 4, 6, 7]).
ARCH_DEFAULT_LAYERS: dict[str, dict[str, tuple[str, ...]]] = {
    "squeezenet1_1": {"content_layers": ("fire2",), "style_layers": ("relu1", "fire3", "fire4", "fire5"),
                      "mrf_layers": ("fire3", "fire5", "fire7")}}


def _arch_default_layers(grouped: dict[str, dict[str, Any]]) -> None:
    """Put the model's own default layers where the (VGG) defaults stand, and the style loss's
    own layers (its registry entry's ``default_layers``, e.g. NNST's hypercolumns) where the
    style layers are the defaults."""
    model = grouped["runtime"].get("model", DEFAULT_MODEL)
    if model not in MODELS:
        return  # an unknown model: RuntimeConfig says so, with the valid list
    arch = MODELS[model].arch
    for name, layers in ARCH_DEFAULT_LAYERS.get(arch, {}).items():
        group, spec = _FIELDS[name]
        if tuple(grouped[group].get(name, spec.default)) == spec.default:
            grouped[group][name] = layers
    loss = grouped["objective"].get("style_loss", "gram")
    try:
        own = registered_entry(loss).default_layers
    except ConfigError:
        return  # an unknown loss: ObjectiveConfig says so, with the valid list
    spec = _FIELDS["style_layers"][1]
    if arch in own and tuple(grouped["objective"].get("style_layers", spec.default)) in (
            spec.default, ARCH_DEFAULT_LAYERS.get(arch, {}).get("style_layers")):
        grouped["objective"]["style_layers"] = own[arch]


def _hint(key: str) -> str:
    hint = difflib.get_close_matches(key, _FIELDS, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of options (render options and CLI options alike) into a flat dict;
    keys may sit at the top level or in a ``[render]`` table."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", source=str(path))
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML ({error})", source=str(path)) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", source=str(path)) from None
    except ValueError as error:  # e.g. an integer longer than Python converts (4300 digits)
        raise ConfigError(f"invalid TOML ({error})", source=str(path)) from None
    table = data.pop("render", {})
    if not isinstance(table, dict):
        raise ConfigError("[render] must be a table", source=str(path))
    return {**data, **table}
