"""The render loop: resize inputs, compute targets once, optimise the image, report each step.

The loop never prints: each loss evaluation emits a RenderEvent to the caller's callback, which
decides what to show or save. Loss values in events are device tensors, so a GPU render does no
host sync unless the callback asks for a number (torch's L-BFGS itself reads the loss each step).
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._backbone import VGGFeatures
from ._backend import Backend, create_backend
from ._batch import TargetCache
from ._config import RenderConfig
from ._errors import BackendUnavailableError, ConfigError, RenderError, RenderInterrupted
from ._image import load_image, resize_long_side, resize_to
from ._mrf import MRFObjective, semantic_labels, shared_palette, style_variants
from ._objectives import GatysObjective, style_grams
from ._planner import RenderPlan, parse_bytes, plan_render
from ._tiling import plan_tiles, tile_halo, tiled_evaluate, tiled_features, tiled_grams
from ._weights import load_backbone

__all__ = [
    "RenderEvent",
    "RenderResult",
    "match_luminance_colors",
    "peak_memory",
    "plan_for",
    "render",
    "resolve_device",
]

#: How often (in evaluations) a GPU render reads back the "something went non-finite" flag.
_FINITE_CHECK_EVERY = 10


@dataclass(frozen=True)
class RenderEvent:
    """One loss evaluation of the render (iteration counts from 1)."""

    iteration: int
    iterations: int
    losses: Mapping[str, torch.Tensor]  # scalar tensors on the render device: content, style, tv, total
    elapsed: float  # seconds since the optimisation started
    peak_memory: int  # bytes: CUDA peak allocation, or the process's peak RSS on CPU
    image: torch.Tensor = field(repr=False)  # (3, H, W) current image, unclamped; do not modify
    level: int = 0  # resolution index, coarse to fine
    levels: int = 1
    progress: float = 0.0  # share of the render's work done, evaluations weighted by their pixels (for ETAs)

    @property
    def loss(self) -> float:
        return float(self.losses["total"])

    def loss_terms(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.losses.items()}


@dataclass(frozen=True)
class RenderResult:
    image: torch.Tensor  # (3, H, W) float32 on the CPU, in [0, 1]
    iterations: int
    losses: dict[str, float]  # at the last evaluation
    elapsed: float
    peak_memory: int
    device: str


Callback = Callable[[RenderEvent], None]


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when a CUDA device is usable, else cpu; cuda without one is an error."""
    if name == "cpu":
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "auto":
            return torch.device("cpu")
        reason = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise BackendUnavailableError(f"--device cuda: {reason} (torch {torch.__version__}); use --device cpu")
    raise ConfigError(f"--device: unknown device {name!r}")


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    matrix = image.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return torch.einsum("ij,...jhw->...ihw", matrix, image)


def match_luminance_colors(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the stylised image's luminance (Y of YIQ) and the content's chrominance (I, Q).

    neural-style's ``-original_colors 1``: the style transfers brush strokes and contrast only.
    Both images (..., 3, H, W) of the same size; returns the same shape clamped to [0, 1].
    """
    yiq = torch.cat([_rgb_to_yiq(stylised)[..., :1, :, :], _rgb_to_yiq(content)[..., 1:, :, :]], dim=-3)
    inverse = torch.linalg.inv(stylised.new_tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]))
    return torch.einsum("ij,...jhw->...ihw", inverse, yiq).clamp(0.0, 1.0)


def _check_size(what: str, shape: Sequence[int], backbone: VGGFeatures, config: RenderConfig) -> None:
    """Refuse a size too small for the deepest layer (or, for MRF, for one patch per layer)."""
    height, width = shape[-2:]
    deepest = max(backbone.feature_info.values(), key=lambda info: info.stride)
    need, reason = deepest.stride, f"the deepest layer {deepest.name}"
    if config.method == "mrf":
        stride = max(backbone.feature_info[layer].stride for layer in config.mrf_layers)
        if config.patch_size * stride > need:
            need, reason = config.patch_size * stride, f"a {config.patch_size}x{config.patch_size} MRF patch"
    if min(height, width) < need:
        raise ConfigError(
            f"{what} is {width}x{height} after resizing; {reason} needs at least {need}x{need} "
            "(raise --size, --style-scale, or lower --levels)"
        )


def plan_for(config: RenderConfig, reference: torch.Tensor | None, device: torch.device) -> RenderPlan:
    """The memory plan of every level (raises ConfigError, with the figures, when one cannot fit)."""
    shapes = config.level_shapes(None if reference is None else tuple(reference.shape[-2:]))
    budget = parse_bytes(config.max_memory) if config.max_memory is not None else None
    return plan_render(config, shapes, device, budget)


def crop_to_frame(image: torch.Tensor, config: RenderConfig) -> torch.Tensor:
    """The centre of ``image`` (..., H, W) with the aspect of a ``--size WxH`` frame (unchanged
    for a long-side size): the frame is covered, never stretched."""
    if not isinstance(config.size, tuple):
        return image
    frame_w, frame_h = config.size
    height, width = image.shape[-2:]
    if width * frame_h > height * frame_w:  # wider than the frame: crop the sides
        keep = max(1, round(height * frame_w / frame_h))
        left = (width - keep) // 2
        return image[..., :, left:left + keep]
    keep = max(1, round(width * frame_h / frame_w))
    top = (height - keep) // 2
    return image[..., top:top + keep, :]


def _initial_image(
    config: RenderConfig,
    content: torch.Tensor | None,
    styles: Sequence[torch.Tensor],
    init_image: torch.Tensor | None,
    shape: tuple[int, int],
) -> torch.Tensor:
    height, width = shape
    if init_image is not None:
        return resize_to(init_image.float(), height, width)
    if config.init == "content" and content is not None:
        return content.clone()
    if config.init == "style":
        return resize_to(styles[0], height, width)
    generator = torch.Generator().manual_seed(config.seed)
    return torch.rand((1, 3, height, width), generator=generator)


def render(
    config: RenderConfig,
    content: torch.Tensor | None,
    styles: Sequence[torch.Tensor],
    *,
    init_image: torch.Tensor | None = None,
    callback: Callback | None = None,
    backbone: VGGFeatures | None = None,
    backend: Backend | None = None,
    content_map: torch.Tensor | None = None,
    style_maps: Sequence[torch.Tensor] | None = None,
    target_cache: TargetCache | None = None,
) -> RenderResult:
    """Render ``content`` (3, H, W) in the style of ``styles`` [(3, H, W), ...].

    ``config.method``: "gram" (Gatys et al.) or "mrf" (Li & Wand), coarse to fine over
    ``config.levels`` resolutions. ``content`` may be None: texture synthesis, or (MRF) a render
    from ``content_map`` alone. ``content_map`` / ``style_maps`` (one per style, same size as it)
    are neural-doodle semantic maps, MRF only.
    ``backbone`` overrides the model named in the config (tests pass random-weight ones);
    ``backend`` overrides config.backend (a Backend already built, e.g. shared across renders);
    ``target_cache`` shares style targets (Grams, MRF banks) across renders of a batch.
    Raises RenderError on a NaN/Inf, RenderInterrupted (with the current image) on Ctrl-C.
    """
    if not styles:
        raise ConfigError("--style: at least one style image is needed")
    if config.style_blend is not None and len(config.style_blend) != len(styles):
        raise ConfigError(f"--style-blend: {len(config.style_blend)} weights for {len(styles)} style images")
    maps = _check_maps(config, content, styles, content_map, style_maps)
    if content is not None:
        content = crop_to_frame(content, config)
    if maps is not None:
        maps.content = crop_to_frame(maps.content, config)
    device = resolve_device(config.device)
    precision = config.resolved_precision(device.type)
    plan = plan_for(config, content if content is not None else (maps.content if maps else None), device)
    if backend is None:
        if backbone is None:
            backbone = load_backbone(config.model, config.taps, pooling=config.pooling,
                                     weights_path=config.weights, seed=config.seed)
        backend = create_backend(config.backend, backbone, device, model=config.model, precision=precision,
                                 sizes=plan.shapes, cuda_graphs=config.cuda_graphs)
    if init_image is None and config.init not in ("content", "noise", "style"):
        init_image = load_image(config.init)
    if init_image is not None:
        init_image = crop_to_frame(init_image, config)

    schedule = config.level_iterations()
    clock = _Clock(schedule, [height * width for height, width in plan.shapes], device=device)
    image: torch.Tensor | None = None
    carried: dict[str, torch.Tensor] | None = None
    with _matmul_precision(device, precision):
        for level, shape in enumerate(plan.shapes):
            inputs = _level_inputs(config, content, styles, maps, shape, device, backend)
            objective = _objective(config, backend, inputs, target_cache, plan.levels[level].tile_size)
            if image is None:
                start = _initial_image(config, inputs.content, inputs.styles,
                                       None if init_image is None else init_image[None], inputs.shape)
            else:
                start = resize_to(image, *inputs.shape)  # the coarser result initialises this level
            image, carried = _optimize(config, backend, objective, start.to(device), inputs, clock, level,
                                       callback, plan.levels[level], schedule[level], carried)
    assert image is not None
    return RenderResult(
        image=_finish(config, image, inputs),
        iterations=clock.evaluations,
        losses={"total": float(clock.last_loss)} if clock.last_loss is not None else {},
        elapsed=time.perf_counter() - clock.started,
        peak_memory=peak_memory(device),
        device=str(device),
    )


@dataclass
class _Maps:
    palette: torch.Tensor
    content: torch.Tensor  # (3, H, W)
    styles: list[torch.Tensor]


@dataclass
class _LevelInputs:
    content: torch.Tensor | None  # (1, 3, H, W) at this level
    styles: list[torch.Tensor]
    shape: tuple[int, int]
    content_labels: torch.Tensor | None = None
    style_labels: list[torch.Tensor] | None = None


def _check_maps(config, content, styles, content_map, style_maps) -> _Maps | None:
    if content_map is None and style_maps is None:
        if content is None and config.method == "mrf":
            raise ConfigError("--method mrf needs a content image or a --content-map")
        return None
    if config.method != "mrf":
        raise ConfigError("--content-map/--style-map need --method mrf")
    if content_map is None or style_maps is None:
        raise ConfigError("semantic maps come in pairs: give both --content-map and --style-map")
    if len(style_maps) != len(styles):
        raise ConfigError(f"--style-map: {len(style_maps)} maps for {len(styles)} style images")
    for index, (style, style_map) in enumerate(zip(styles, style_maps)):
        if style_map.shape[-2:] != style.shape[-2:]:
            raise ConfigError(f"--style-map {index + 1} is {style_map.shape[-1]}x{style_map.shape[-2]}, "
                              f"its style image {style.shape[-1]}x{style.shape[-2]}: they must be the same size")
    if content is not None and content_map.shape[-2:] != content.shape[-2:]:
        raise ConfigError(f"--content-map is {content_map.shape[-1]}x{content_map.shape[-2]}, the content image "
                          f"{content.shape[-1]}x{content.shape[-2]}: they must be the same size")
    palette = shared_palette(content_map, torch.cat([m.reshape(3, 1, -1) for m in style_maps], dim=2))
    return _Maps(palette, content_map, list(style_maps))


def _level_inputs(config, content, styles, maps, shape, device, backend) -> _LevelInputs:
    long_side = max(shape)
    _check_size("the output" if content is None else "the content image", shape, backend.backbone, config)
    content_batch = resize_to(content.float(), *shape)[None].to(device) if content is not None else None
    style_side = max(1, math.ceil(config.style_scale * long_side))
    style_batches = [resize_long_side(style.float(), style_side)[None].to(device) for style in styles]
    for index, style in enumerate(style_batches):
        _check_size(f"style image {index + 1}", style.shape, backend.backbone, config)
    inputs = _LevelInputs(content_batch, style_batches, shape)
    if maps is not None:
        inputs.content_labels = semantic_labels(resize_to(maps.content, *shape), maps.palette).to(device)
        inputs.style_labels = [semantic_labels(resize_to(m, *s.shape[-2:]), maps.palette).to(device)
                               for m, s in zip(maps.styles, style_batches)]
    return inputs


def _objective(config: RenderConfig, backend: Backend, inputs: _LevelInputs, cache: TargetCache | None,
               tile_size: int = 0):
    """The method's objective with its targets computed once for this level (or from the cache).
    On a tiled level the content features and style Grams are computed tile by tile as well (the
    MRF style bank is computed whole: its patches are the style's memory cost anyway)."""
    def cached(compute, *parts):
        if cache is None:
            return compute()
        # What decides a style target: the style pixels at this size, the network and its weights,
        # the layers, and the method's parameters.
        key = TargetCache.key(config.method, config.model, config.weights, config.pooling, config.seed,
                              backend.name, *parts, *inputs.styles)
        return cache.get(key, compute)

    with torch.no_grad():
        content_targets = None
        if inputs.content is not None and config.content_weight > 0:
            if tile_size:
                content_targets = tiled_features(backend, inputs.content, tile_size, config.content_layers)
            else:
                features = backend.features(inputs.content)
                content_targets = {layer: features[layer] for layer in config.content_layers}
        if config.method == "gram":
            blend = config.style_blend or (1.0,) * len(inputs.styles)
            grams_of = (lambda style: tiled_grams(backend, style, tile_size, config.style_layers)) if tile_size else None
            return GatysObjective(
                content_targets=content_targets,
                style_targets=cached(lambda: style_grams(backend.features, inputs.styles, blend, config.style_layers,
                                                         grams_of),
                                     list(blend), config.style_layers),
                content_weight=config.content_weight, style_weight=config.style_weight,
                tv_weight=config.tv_weight, style_layer_weights=config.layer_weights(),
            )
        return MRFObjective(
            features_of=backend.features, styles=inputs.styles, content_targets=content_targets,
            layer_weights=config.layer_weights(), content_weight=config.content_weight,
            mrf_weight=config.mrf_weight, tv_weight=config.tv_weight, patch_size=config.patch_size,
            style_stride=config.style_stride, synthesis_stride=config.synthesis_stride,
            variants=style_variants(config.style_rotations, config.rotation_step, config.style_scales,
                                    config.scale_step),
            style_labels=inputs.style_labels, content_labels=inputs.content_labels,
            map_weight=config.map_weight, confidence=config.confidence,
            bank_cache=lambda build: cached(
                build, config.mrf_layers, config.patch_size, config.style_stride, config.style_rotations,
                config.rotation_step, config.style_scales, config.scale_step, config.map_weight,
                inputs.content_labels is not None, *(inputs.style_labels or [])),
        )


def _finish(config: RenderConfig, raw: torch.Tensor, inputs: _LevelInputs) -> torch.Tensor:
    result = raw.detach().clamp(0.0, 1.0)
    if config.original_colors and inputs.content is not None:
        result = match_luminance_colors(result, inputs.content)
    return result[0].float().cpu()


@contextlib.contextmanager
def _matmul_precision(device: torch.device, precision: str):
    """CUDA matmuls (Gram matrices, patch matching) in TF32 only when --precision tf32 asks."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _carry_adam_state(state: dict[str, torch.Tensor], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Adam's moments resampled to the next level's size. The losses are means over positions,
    so a pixel's gradient scales as 1 / pixels: the moments are rescaled to match, and the
    step count carries on (no bias-correction restart)."""
    old = state["exp_avg"].shape[-2] * state["exp_avg"].shape[-1]
    ratio = old / (shape[0] * shape[1])

    def resample(moment: torch.Tensor) -> torch.Tensor:
        return F.interpolate(moment, size=shape, mode="bilinear", align_corners=False)

    return {"step": state["step"].clone(), "exp_avg": resample(state["exp_avg"]) * ratio,
            "exp_avg_sq": resample(state["exp_avg_sq"]).clamp_min_(0.0) * ratio**2}


def _optimize(config, backend, objective, start, inputs, clock, level, callback, level_plan, iterations,
              carried) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Run one level's ``iterations`` on ``start`` (1, 3, H, W); returns the optimised image and
    the optimiser state to carry to the next level (Adam's; L-BFGS restarts at each level, since
    its curvature pairs do not survive resampling). A tiled ``level_plan`` evaluates the loss tile
    by tile (exactly)."""
    image = start.contiguous().requires_grad_(True)
    done_before = clock.evaluations
    tiles = None
    if level_plan.tile_size:
        halo = tile_halo(backend.backbone.layers, config.mrf_layers if config.method == "mrf" else (),
                         config.patch_size)
        tiles = plan_tiles(*image.shape[-2:], level_plan.tile_size, halo)

    def evaluate() -> torch.Tensor:
        if tiles is not None:
            losses, image.grad = tiled_evaluate(backend, objective, image.detach(), tiles)
            return report(losses)
        # The backend gives features and, from the loss gradients at them, the image gradient;
        # autograd only sees the (small) loss graph on top of the features.
        features = {name: value.requires_grad_(True) for name, value in backend.forward(image.detach()).items()}
        pixels = image.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = objective(features, pixels)
            *tap_grads, tv_grad = torch.autograd.grad(
                losses["total"], [*features.values(), pixels], allow_unused=True, materialize_grads=True)
        image.grad = backend.backward(dict(zip(features, tap_grads))) + tv_grad
        return report(losses)

    def report(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        clock.record(losses["total"], level)
        if callback is not None:
            callback(RenderEvent(clock.evaluations, clock.total, {k: v.detach() for k, v in losses.items()},
                                 time.perf_counter() - clock.started, peak_memory(clock.device), image.detach()[0],
                                 level=level, levels=config.level_count, progress=clock.progress))
        return losses["total"].detach()

    try:
        if config.optimizer == "lbfgs":
            # One L-BFGS iteration is one evaluation here (no line search), as in neural-style;
            # zero tolerances: the render runs the iterations it was asked for. step() returns
            # early when the direction stops descending; go on with the evaluations left.
            optimizer = torch.optim.LBFGS(
                [image], lr=config.resolved_learning_rate, max_iter=iterations,
                max_eval=iterations, tolerance_grad=0.0, tolerance_change=0.0,
                history_size=level_plan.lbfgs_history, line_search_fn=None,
            )
            while (remaining := iterations - (clock.evaluations - done_before)) > 0:
                optimizer.param_groups[0].update(max_iter=remaining, max_eval=remaining)
                optimizer.step(evaluate)
            carried = None
        else:
            optimizer = torch.optim.Adam([image], lr=config.resolved_learning_rate)
            if carried is not None:
                optimizer.state[image] = _carry_adam_state(carried, tuple(image.shape[-2:]))
            for _ in range(iterations):
                optimizer.step(evaluate)
                with torch.no_grad():
                    image.clamp_(0.0, 1.0)  # projected Adam: stay in the valid range
        clock.check_finite(force=True)
        if not torch.isfinite(image).all():
            raise RenderError("the image became NaN/Inf; lower --learning-rate or the loss weights")
    except KeyboardInterrupt:
        clock.check_finite(force=True)
        raise RenderInterrupted(_finish(config, image, inputs), clock.evaluations) from None
    if config.optimizer == "adam":
        carried = {key: value.detach() for key, value in optimizer.state[image].items()}
    return image.detach(), carried


class _Clock:
    """Evaluations across levels, and a device-side non-finite flag read back every few steps."""

    def __init__(self, iterations: Sequence[int], pixels: Sequence[int], device: torch.device) -> None:
        self.total = sum(iterations)
        self._pixels = list(pixels)
        self._work = sum(count * size for count, size in zip(iterations, pixels))
        self._done = 0
        self.device = device
        self.evaluations = 0
        self.last_loss: torch.Tensor | None = None
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.started = time.perf_counter()

    @property
    def progress(self) -> float:
        return min(1.0, self._done / self._work)

    def record(self, loss: torch.Tensor, level: int) -> None:
        self.evaluations += 1
        self._done += self._pixels[level]
        self.last_loss = loss.detach()
        self._nonfinite |= ~torch.isfinite(self.last_loss)
        self.check_finite()

    def check_finite(self, *, force: bool = False) -> None:
        if force or self.evaluations % _FINITE_CHECK_EVERY == 0:
            if bool(self._nonfinite):
                raise RenderError(
                    f"the loss became NaN/Inf by iteration {self.evaluations}; "
                    "lower --learning-rate or the loss weights"
                )
