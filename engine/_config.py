"""RenderConfig: the one source of truth for render options, shared by the API and the CLI.

Defaults live here once; the CLI shows them in its help, a TOML file may set any of them, and the
command line overrides the file. Values are checked when the config is built, and errors name the
option as the CLI spells it (``--style-weight``) with the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._backbone import POOLINGS, layer_infos

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
from ._errors import ConfigError, check_choice
from ._weights import DEFAULT_MODEL, MODELS

__all__ = ["BACKENDS", "DEVICES", "INITS", "METHODS", "OPTIMIZERS", "RenderConfig", "load_config_file", "option_name"]

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: The coarsest level of an automatic pyramid has about this long side.
PYRAMID_START = 256
#: Levels up to this long side run the full --iterations; larger ones follow --iteration-decay.
#: Tuned by looking (tubingen / Starry Night, 512 px): 500, 250, 125 over 256, 362, 512 px lost the
#: town (each level's restarted L-BFGS stylises further from a blurred start); 100 per level keeps
#: more of it in under half the single-level 500 iterations' time (not settled: see README).
FULL_ITERATIONS_UP_TO = 1024
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
METHODS = ("gram", "mrf")
MRF_CONTENT_WEIGHT = 0.5
MRF_TV_WEIGHT = 2.0


def option_name(field_name: str) -> str:
    """The CLI spelling of a config field: style_weight -> --style-weight."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """Everything that decides what a render produces (given the same inputs and seed).

    Weights are relative to the normalised losses documented in styleforge.engine's objectives.
    """

    method: str = "gram"
    """gram (Gatys et al.) or mrf (Li & Wand, with neural-doodle's semantic maps)."""
    size: int | tuple[int, int] = 512
    """Long side of the output in pixels, or (width, height): the content is scaled to cover that
    frame and centre-cropped (``--size 3840x2160``)."""
    iterations: int | tuple[int, ...] = 100
    """Loss evaluations (forward + gradient, counted as neural-style counts them) per level up to
    1024 px on the long side; each larger level runs ``iteration_decay`` times the one before,
    never fewer than a quarter of this. A tuple gives every level's count, coarse to fine."""
    content_weight: float = 1.0
    style_weight: float = 1e4
    tv_weight: float = 2.0
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = GATYS_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    """One weight per style layer (normalised to sum 1); None weighs them equally."""
    style_blend: tuple[float, ...] | None = None
    """One weight per style image (normalised to sum 1); None weighs them equally."""
    style_scale: float = 1.0
    """Style images are resized to this fraction of the output's long side."""
    init: str = "content"
    """content, noise, style, or the path of an image to start from."""
    optimizer: str = "lbfgs"
    learning_rate: float | None = None
    """None: 1.0 for L-BFGS (its step scale), 0.02 for Adam (in [0, 1] pixel units)."""
    lbfgs_history: int = 50
    pooling: str = "max"
    model: str = DEFAULT_MODEL
    weights: str | None = None
    """Path of a weights file for the model (otherwise the cache, fetched on first use)."""
    device: str = "auto"
    tile_size: int = 0
    """Evaluate the loss tile by tile (exactly), in tiles of this many pixels; 0: the memory
    planner decides (untiled when the level fits --max-memory). Gram and MRF alike."""
    max_memory: str | None = None
    """Memory budget such as 16G; None: 90% of the free GPU memory, 80% of available RAM on CPU."""
    backend: str = "auto"
    """Where the VGG passes run: torch, onnxruntime, tensorrt, or auto (fastest measured here)."""
    original_colors: bool = False
    seed: int = 0

    # --- MRF (method = "mrf"); RenderConfig.mrf() gives CNNMRF's defaults for the rest ---
    mrf_layers: tuple[str, ...] = ("relu2_1", "relu3_1", "relu4_1")
    """CNNMRF uses relu3_1 and relu4_1 (VGG19); the edge-tuned default weights carry little colour
    there, so relu2_1 is added: without it faces came out pink and green instead of the painting's
    palette (looked at on cnnmrf_portrait with Picasso's self-portrait)."""
    mrf_weight: float = 1.0
    mrf_layer_weights: tuple[float, ...] | None = None
    patch_size: int = 3
    style_stride: int = 2
    """Stride between the style patches in the bank."""
    synthesis_stride: int = 2
    """Stride between the output's patches that are matched and pulled."""
    levels: int = 0
    """Resolutions, coarse to fine, each ``level_scale`` times the one before; 0: as many as take
    the long side from about 256 px to ``size``."""
    level_scale: float = 2**0.5
    """Size ratio between successive levels."""
    iteration_decay: float = 0.5
    """Each level above 1024 px runs this fraction of the previous level's iterations (with
    level_scale sqrt(2) a level has twice the pixels, so 0.5 spends about the same time on each)."""
    cuda_graphs: bool = False
    """Replay the torch backend's forward and backward as CUDA graphs (one capture per level size;
    cuts the per-iteration launch overhead that dominates small renders on a fast GPU)."""
    precision: str = "auto"
    """fp32, tf32 (CUDA matmuls in TF32), bf16 or fp16 (the network's features in half precision;
    Gram sums, losses and the optimiser's state stay fp32); auto: tf32 on CUDA, fp32 on CPU."""
    style_rotations: int = 0
    """n: also match against the style rotated by k * rotation_step degrees, k = -n..n."""
    rotation_step: float = 10.0
    style_scales: int = 0
    """n: also match against the style scaled by 1 + k * scale_step, k = -n..n."""
    scale_step: float = 0.05
    confidence: float | None = None
    """Only pull patches whose best match has at least this normalised cross-correlation."""
    map_weight: float = 10.0
    """How strongly semantic maps confine matches to the same region (neural doodle)."""

    def __post_init__(self) -> None:
        check_choice("--method", self.method, METHODS)
        object.__setattr__(self, "size", parse_size(self.size))
        object.__setattr__(self, "iterations", _parse_iterations(self.iterations))
        for name in ("lbfgs_history", "patch_size", "style_stride", "synthesis_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{option_name(name)}: must be at least 1, got {getattr(self, name)}")
        if self.levels < 0:
            raise ConfigError(f"--levels: must be >= 0 (0: automatic), got {self.levels}")
        if not 1.0 < self.level_scale <= 4.0:
            raise ConfigError(f"--level-scale: must be in (1, 4], got {self.level_scale}")
        if not 0.0 < self.iteration_decay <= 1.0:
            raise ConfigError(f"--iteration-decay: must be in (0, 1], got {self.iteration_decay}")
        check_choice("--precision", self.precision, ("auto", *PRECISIONS))
        if isinstance(self.iterations, tuple) and self.levels and len(self.iterations) != self.levels:
            raise ConfigError(f"--iterations: {len(self.iterations)} per-level counts for --levels {self.levels}")
        if self.tile_size < 0:
            raise ConfigError(f"--tile-size: must be >= 0, got {self.tile_size}")
        if self.max_memory is not None:
            from ._planner import parse_bytes

            parse_bytes(self.max_memory)
        if self.style_rotations < 0 or self.style_scales < 0:
            raise ConfigError("--style-rotations and --style-scales must be >= 0")
        if self.confidence is not None and not -1.0 <= self.confidence <= 1.0:
            raise ConfigError(f"--confidence: a normalised cross-correlation in [-1, 1], got {self.confidence}")
        for name in ("content_weight", "style_weight", "tv_weight", "mrf_weight", "map_weight"):
            value = getattr(self, name)
            if not value >= 0 or value == float("inf"):
                raise ConfigError(f"{option_name(name)}: must be a finite number >= 0, got {value}")
        if not self.style_scale > 0:
            raise ConfigError(f"--style-scale: must be > 0, got {self.style_scale}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate: must be > 0, got {self.learning_rate}")
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--pooling", self.pooling, POOLINGS)
        check_choice("--device", self.device, DEVICES)
        check_choice("--backend", self.backend, BACKENDS)
        arch = MODELS[check_choice("--model", self.model, MODELS)].arch
        names = [info.name for info in layer_infos(arch)]
        for option, layers in (("--content-layers", self.content_layers), ("--style-layers", self.style_layers),
                               ("--mrf-layers", self.mrf_layers)):
            for layer in layers:
                check_choice(f"{option} ({arch})", layer, names)
        if not self.style_layers:
            raise ConfigError("--style-layers: at least one layer is needed")
        if not self.mrf_layers:
            raise ConfigError("--mrf-layers: at least one layer is needed")
        if self.mrf_layer_weights is not None and len(self.mrf_layer_weights) != len(self.mrf_layers):
            raise ConfigError(f"--mrf-layer-weights: {len(self.mrf_layer_weights)} values "
                              f"for {len(self.mrf_layers)} MRF layers")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise ConfigError(
                f"--style-layer-weights: {len(self.style_layer_weights)} values "
                f"for {len(self.style_layers)} style layers"
            )
        for option, values in (("--style-layer-weights", self.style_layer_weights), ("--style-blend", self.style_blend)):
            if values is not None and (any(not v >= 0 for v in values) or sum(values) <= 0):
                raise ConfigError(f"{option}: weights must be >= 0 and not all zero, got {list(values)}")
        if self.init not in INITS and not Path(self.init).is_file():
            raise ConfigError(
                f"--init: {self.init!r} is neither one of {', '.join(INITS)} nor an existing image file"
            )

    @classmethod
    def mrf(cls, **overrides: Any) -> RenderConfig:
        """CNNMRF's defaults (Li & Wand's example): 3x3 patches, strides 2, content relu4_2, init
        from the content, 3 resolutions x 100 iterations, 384 px; weights re-tuned for the
        normalised losses, and relu2_1 added to the MRF layers (see ``mrf_layers``)."""
        defaults = dict(method="mrf", size=384, iterations=100, levels=3, level_scale=2.0, iteration_decay=1.0,
                        content_weight=MRF_CONTENT_WEIGHT, tv_weight=MRF_TV_WEIGHT, init="content")
        return cls(**{**defaults, **overrides})

    @property
    def taps(self) -> tuple[str, ...]:
        """Every layer the objective reads, in a stable order."""
        style = self.mrf_layers if self.method == "mrf" else self.style_layers
        return tuple(dict.fromkeys(self.content_layers + style))

    @property
    def level_count(self) -> int:
        """Levels of the pyramid: ``levels``, or (0) enough to start near 256 px on the long side."""
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

    def resolved_precision(self, device_type: str) -> str:
        if self.precision != "auto":
            return self.precision
        return "tf32" if device_type == "cuda" else "fp32"

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    def layer_weights(self) -> dict[str, float]:
        """Style (gram) or MRF layer -> weight, as configured for the method."""
        if self.method == "mrf":
            return dict(zip(self.mrf_layers, self.mrf_layer_weights or (1.0,) * len(self.mrf_layers), strict=True))
        weights = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return dict(zip(self.style_layers, weights, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists), the inverse of from_mapping."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "config") -> RenderConfig:
        """Build from a mapping (TOML table, JSON metadata); keys may be snake_ or kebab-case."""
        return cls().replace(values, source=source)

    def replace(self, values: Mapping[str, Any], *, source: str = "config") -> RenderConfig:
        """A copy with ``values`` applied, checking every key and value type."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{source}: unknown option {raw_key!r}{suggestion}")
            changes[key] = _coerce(source, key, value, getattr(self, key), known[key].type)
        return dataclasses.replace(self, **changes)


def _coerce(source: str, key: str, value: Any, current: Any, annotation: str) -> Any:
    """Check and convert one value to the field's type (TOML/JSON give lists, ints for floats)."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise fail("set")
    if key in ("size", "iterations"):
        try:
            return parse_size(value) if key == "size" else _parse_iterations(value)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    if "tuple[str" in annotation:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise fail("a list of layer names")
        return tuple(item.strip() for item in items if item.strip())
    if "tuple[float" in annotation:
        items = value.split(",") if isinstance(value, str) else value
        try:
            return tuple(float(item) for item in items)
        except (TypeError, ValueError):
            raise fail("a list of numbers") from None
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if not isinstance(value, str):
        raise fail("a string")
    return value


def parse_size(value: Any) -> int | tuple[int, int]:
    """--size: a long side (4096, "4096") or a frame ("3840x2160", [3840, 2160]) -> int or (w, h)."""
    size: int | tuple[int, int]
    if isinstance(value, bool):
        size = 0
    elif isinstance(value, int):
        size = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value):
        size = (value[0], value[1])
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?", value)):
        size = int(match.group(1)) if match.group(2) is None else (int(match.group(1)), int(match.group(2)))
    else:
        raise ConfigError(f"--size: {value!r} is neither a long side such as 4096 nor a frame such as 3840x2160")
    if min((size,) if isinstance(size, int) else size) < 1:
        raise ConfigError(f"--size: must be at least 1 pixel, got {value!r}")
    return size


def _parse_iterations(value: Any) -> int | tuple[int, ...]:
    """--iterations: 500 (the coarsest level; finer levels follow the decay) or 500,200,100."""
    counts: list[Any]
    if isinstance(value, str):
        counts = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        counts = list(value)
    else:
        counts = [value]
    try:
        numbers = [int(count) if isinstance(count, str) else count for count in counts]
    except ValueError:
        numbers = []
    if not numbers or any(type(n) is not int or n < 1 for n in numbers):
        raise ConfigError(f"--iterations: {value!r} is neither a count >= 1 nor a list of them such as 500,200,100")
    return numbers[0] if len(numbers) == 1 and not isinstance(value, (list, tuple)) else tuple(numbers)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of options (render options and CLI options alike) into a flat dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    # Accept options at the top level or in a [render] table.
    table = data.pop("render", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [render] must be a table")
    return {**data, **table}

