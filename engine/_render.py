"""The render loop: resize inputs, compute targets once, optimise the image, report each step.

The loop never prints: each loss evaluation emits a RenderEvent to the caller's callback, which
decides what to show or save. Loss values in events are device tensors, so a GPU render does no
host sync unless the callback asks for a number (torch's L-BFGS itself reads the loss each step).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ._backbone import VGGFeatures
from ._backend import Backend, create_backend
from ._config import RenderConfig
from ._errors import BackendUnavailableError, ConfigError, RenderError, RenderInterrupted
from ._image import load_image, resize_long_side, resize_to
from ._objectives import GatysObjective, style_grams
from ._weights import load_backbone

__all__ = [
    "RenderEvent",
    "RenderResult",
    "match_luminance_colors",
    "peak_memory",
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


def _check_size(what: str, image: torch.Tensor, backbone: VGGFeatures) -> None:
    height, width = image.shape[-2:]
    need = backbone.min_size
    if min(height, width) < need:
        deepest = max(backbone.feature_info.values(), key=lambda info: info.stride).name
        raise ConfigError(
            f"{what} is {width}x{height} after resizing; the deepest layer {deepest} "
            f"needs at least {need}x{need} (raise --size or --style-scale)"
        )


def _output_shape(config: RenderConfig, content: torch.Tensor | None) -> tuple[int, int]:
    if content is None:
        return config.size, config.size
    height, width = content.shape[-2:]
    scale = config.size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


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
) -> RenderResult:
    """Render ``content`` (3, H, W) in the style of ``styles`` [(3, H, W), ...] (Gatys et al.).

    ``content`` may be None for pure texture synthesis (a square output of ``config.size``).
    ``backbone`` overrides the model named in the config (tests pass random-weight ones);
    ``backend`` overrides config.backend (a Backend already built, e.g. shared across renders).
    Raises RenderError on a NaN/Inf, RenderInterrupted (with the current image) on Ctrl-C.
    """
    if not styles:
        raise ConfigError("--style: at least one style image is needed")
    if config.style_blend is not None and len(config.style_blend) != len(styles):
        raise ConfigError(f"--style-blend: {len(config.style_blend)} weights for {len(styles)} style images")
    device = resolve_device(config.device)
    if backend is None:
        if backbone is None:
            taps = tuple(config.content_layers) + tuple(config.style_layers)
            backbone = load_backbone(config.model, taps, pooling=config.pooling,
                                     weights_path=config.weights, seed=config.seed)
        backend = create_backend(config.backend, backbone, device, model=config.model,
                                 sizes=[_output_shape(config, content)])
    if init_image is None and config.init not in ("content", "noise", "style"):
        init_image = load_image(config.init)

    # --- inputs at their working sizes -------------------------------------------------------
    if content is not None:
        content_batch = resize_long_side(content.float(), config.size)[None].to(device)
        _check_size("the content image", content_batch, backend.backbone)
        shape = tuple(content_batch.shape[-2:])
    else:
        content_batch = None
        shape = (config.size, config.size)
    style_side = max(1, math.ceil(config.style_scale * config.size))
    style_batches = [resize_long_side(style.float(), style_side)[None].to(device) for style in styles]
    for index, style in enumerate(style_batches):
        _check_size(f"style image {index + 1}", style, backend.backbone)

    # --- targets, once per render ------------------------------------------------------------
    blend = config.style_blend or (1.0,) * len(styles)
    with torch.no_grad():
        content_targets = None
        if content_batch is not None and config.content_weight > 0:
            content_features = backend.features(content_batch)
            content_targets = {layer: content_features[layer] for layer in config.content_layers}
        style_targets = style_grams(backend.features, style_batches, blend, config.style_layers)
    objective = GatysObjective(
        content_targets=content_targets,
        style_targets=style_targets,
        content_weight=config.content_weight,
        style_weight=config.style_weight,
        tv_weight=config.tv_weight,
        style_layer_weights=config.layer_weights(),
    )

    # --- optimisation -------------------------------------------------------------------------
    start = _initial_image(config, content_batch, style_batches,
                           None if init_image is None else init_image[None], shape)
    image = start.to(device).contiguous().requires_grad_(True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state = _LoopState(config.iterations, device)
    started = time.perf_counter()

    def evaluate() -> torch.Tensor:
        # The backend gives features and, from the loss gradients at them, the image gradient;
        # autograd only sees the (small) loss graph on top of the features.
        features = {name: value.requires_grad_(True) for name, value in backend.forward(image.detach()).items()}
        pixels = image.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = objective(features, pixels)
            *tap_grads, tv_grad = torch.autograd.grad(
                losses["total"], [*features.values(), pixels], allow_unused=True, materialize_grads=True)
        image.grad = backend.backward(dict(zip(features, tap_grads))) + tv_grad
        state.record(losses["total"])
        if callback is not None:
            callback(RenderEvent(state.evaluations, config.iterations, {k: v.detach() for k, v in losses.items()},
                                 time.perf_counter() - started, peak_memory(device), image.detach()[0]))
        return losses["total"].detach()

    def finish(raw: torch.Tensor) -> torch.Tensor:
        result = raw.detach().clamp(0.0, 1.0)
        if config.original_colors and content_batch is not None:
            result = match_luminance_colors(result, content_batch)
        return result[0].float().cpu()

    if config.optimizer == "lbfgs":
        # One L-BFGS iteration is one evaluation here (no line search), as in neural-style;
        # zero tolerances: the render runs the iterations it was asked for.
        state.optimizer = torch.optim.LBFGS(
            [image], lr=config.resolved_learning_rate, max_iter=config.iterations,
            max_eval=config.iterations, tolerance_grad=0.0, tolerance_change=0.0,
            history_size=config.lbfgs_history, line_search_fn=None,
        )
    else:
        state.optimizer = torch.optim.Adam([image], lr=config.resolved_learning_rate)
    try:
        if config.optimizer == "lbfgs":
            # step() returns early when the gradient vanishes or the direction stops descending;
            # keep the history and go on with the evaluations left.
            while state.evaluations < config.iterations:
                remaining = config.iterations - state.evaluations
                state.optimizer.param_groups[0].update(max_iter=remaining, max_eval=remaining)
                state.optimizer.step(evaluate)
        else:
            for _ in range(config.iterations):
                state.optimizer.step(evaluate)
                with torch.no_grad():
                    image.clamp_(0.0, 1.0)  # projected Adam: stay in the valid range
        state.check_finite(force=True)
        if not torch.isfinite(image).all():
            raise RenderError("the image became NaN/Inf; lower --learning-rate or the loss weights")
    except KeyboardInterrupt:
        state.check_finite(force=True)
        raise RenderInterrupted(finish(image), state.evaluations) from None

    last = state.last_loss
    return RenderResult(
        image=finish(image),
        iterations=state.evaluations,
        losses={"total": float(last)} if last is not None else {},
        elapsed=time.perf_counter() - started,
        peak_memory=peak_memory(device),
        device=str(device),
    )


class _LoopState:
    """Evaluation count and a device-side non-finite flag read back only every few steps."""

    def __init__(self, iterations: int, device: torch.device) -> None:
        self.iterations = iterations
        self.evaluations = 0
        self.optimizer: torch.optim.Optimizer
        self.last_loss: torch.Tensor | None = None
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def record(self, loss: torch.Tensor) -> None:
        self.evaluations += 1
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
