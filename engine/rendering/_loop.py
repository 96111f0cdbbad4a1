"""The render loop: inputs checked once, then each pyramid level as an explicit step,
``render_level(config, backend, inputs, plan, iterations, state) -> state``.

The loop never prints: each loss evaluation emits a RenderEvent to the caller's callback, which
decides what to show or save. Loss values in events are device tensors, so a GPU render does no
host sync unless the callback asks for a number (torch's L-BFGS itself reads the loss each step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._backbone import VGGFeatures
from .._config import RenderConfig
from .._device import peak_memory, resolve_device
from .._errors import RenderError, RenderInterrupted
from .._image import resize_to
from .._wait import WaitCallback, report_waits
from ..backends import Backend, backend_for
from ..objectives import Objective
from ._color import match_luminance_colors
from ._evaluate import evaluate
from ._inputs import LevelInputs, RenderInputs, initial_image, level_inputs, prepare_inputs
from ._planner import LevelPlan, RenderPlan, plan_render
from ._regions import blend_unstyled
from ._targets import ExtraTerms, TargetCache, build_objective, with_terms

__all__ = ["LevelState", "RenderClock", "RenderEvent", "RenderResult", "plan_for", "render", "render_level"]

#: How often (in evaluations) a GPU render reads back the "something went non-finite" flag.
_FINITE_CHECK_EVERY = 10
#: A level ending with more than this share of the image's values at or beyond 0 or 1, from a start
#: that was not, has diverged: the clamp (Adam's projection, or the final one) hides an optimiser
#: that jumped out of the valid range instead of converging.
_PINNED_SHARE = 0.99
#: ... as has a level whose last loss is this many times its first (and not negligible): an
#: optimiser that works lowers the loss of the start it was given.
_EXPLODED_RATIO = 10.0
#: ... to more than this, and more than this share of the terms' weights (see _exploded).
_NEGLIGIBLE_LOSS = 1e-3
_NEGLIGIBLE_SHARE = 1e-5
#: The time left is estimated from a level's evaluations after its first few (which pay the level's
#: set-up: style targets, first-run allocations), once this many have been timed.
_SETTLE_EVALUATIONS, _TIMED_EVALUATIONS = 2, 3


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
    remaining: float | None = None  # estimated seconds left; None until a few evaluations were timed

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
    precision: str = ""  # what ran: fp32, tf32, bf16 or fp16 (never auto)
    backend: str = ""


Callback = Callable[[RenderEvent], None]


@dataclass
class LevelState:
    """What one level hands the next: its image (1, 3, h, w) on the device, the optimiser state
    to carry (Adam's moments), and its inputs (for the final colour step)."""

    image: torch.Tensor
    carried: dict[str, torch.Tensor] | None
    inputs: LevelInputs


def plan_for(config: RenderConfig, reference: torch.Tensor | None, device: torch.device) -> RenderPlan:
    """The memory plan of every level (raises ConfigError, with the figures, when one cannot fit);
    ``reference`` gives the output's aspect (the content, or its map)."""
    aspect = None if reference is None else (reference.shape[-2], reference.shape[-1])
    shapes = config.pyramid.level_shapes(aspect)
    return plan_render(config, shapes, device, config.memory.budget_bytes)


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
    style_maps: Sequence[torch.Tensor | str] | None = None,
    target_cache: TargetCache | None = None,
    extra_terms: ExtraTerms | None = None,
    on_wait: WaitCallback | None = None,
) -> RenderResult:
    """Render ``content`` (3, H, W) in the style of ``styles`` [(3, H, W), ...].

    ``config.objective.method``: "gram" (Gatys et al.) or "mrf" (Li & Wand), coarse to fine over
    the pyramid's levels. ``content`` may be None: texture synthesis, or (MRF) a render from
    ``content_map`` alone. ``content_map`` / ``style_maps`` (one per style, same size as it) are
    neural-doodle semantic maps: each region of the output takes its style from the matching regions of the
    styles (every style loss and MRF; a map may be a flat colour, see ``load_style_maps``).
    ``backbone`` overrides the model named in the config (tests pass random-weight ones);
    ``backend`` overrides the config's (a Backend already built, e.g. shared across renders);
    ``target_cache`` shares style targets (Grams, MRF banks) across renders of a batch.
    ``extra_terms`` adds terms to every level's objective (video's temporal term).
    ``on_wait`` hears of every wait that is not an evaluation (a download, a conversion, an
    export, an engine build, a first compile, the bf16 measurement) as WaitEvents; the result
    names the precision and backend that ran.
    Raises RenderError on a NaN/Inf, RenderInterrupted (with the current image) on Ctrl-C.
    """
    with report_waits(on_wait):
        return _render(config, content, styles, init_image=init_image, callback=callback, backbone=backbone,
                       backend=backend, content_map=content_map, style_maps=style_maps, target_cache=target_cache,
                       extra_terms=extra_terms)


def _render(config: RenderConfig, content: torch.Tensor | None, styles: Sequence[torch.Tensor], *,
            init_image: torch.Tensor | None, callback: Callback | None, backbone: VGGFeatures | None,
            backend: Backend | None, content_map: torch.Tensor | None, style_maps: Sequence[torch.Tensor | str] | None,
            target_cache: TargetCache | None, extra_terms: ExtraTerms | None) -> RenderResult:
    inputs = prepare_inputs(config, content, styles, init_image=init_image, content_map=content_map,
                            style_maps=style_maps)
    device = resolve_device(config.runtime.device)
    plan = plan_for(config, inputs.reference, device)
    if backend is None:
        backend = backend_for(config, device, plan.shapes, backbone=backbone)
    schedule = config.pyramid.level_iterations()
    clock = RenderClock(schedule, [height * width for height, width in plan.shapes], device=device)
    state: LevelState | None = None
    try:
        with backend.precision.numerics(device):
            for level_plan, iterations in zip(plan.levels, schedule):
                state = render_level(config, backend, inputs, level_plan, iterations, state, clock=clock,
                                     callback=callback, target_cache=target_cache, extra_terms=extra_terms)
    finally:
        backend.use_graphs(())  # the last level's captures go now, not when the backend does
    assert state is not None
    return RenderResult(
        image=_finish(config, state.image, state.inputs),
        iterations=clock.evaluations,
        losses={"total": float(clock.last_loss)} if clock.last_loss is not None else {},
        elapsed=time.perf_counter() - clock.started,
        peak_memory=peak_memory(device),
        device=str(device),
        precision=backend.precision.name,
        backend=backend.name,
    )


def render_level(config: RenderConfig, backend: Backend, inputs: RenderInputs, plan: LevelPlan, iterations: int,
                 state: LevelState | None, *, clock: RenderClock, callback: Callback | None = None,
                 target_cache: TargetCache | None = None, extra_terms: ExtraTerms | None = None) -> LevelState:
    """One pyramid level: its inputs and targets, its start (the coarser result upsampled, or
    the initial image), and ``iterations`` of the optimiser."""
    # The level's start is built from the content at the first level and, with level_start =
    # detail, at every finer one (its detail band); otherwise it is the coarser result upsampled.
    builds_start = state is None or config.pyramid.level_start == "detail"
    level = level_inputs(config, inputs, (plan.height, plan.width), backend.device, backend.backbone,
                         builds_start=builds_start)
    backend.use_graphs(plan.graph_shapes)  # frees the previous level's captures
    if state is None:
        start = initial_image(config, inputs, level)
    else:
        start = _next_level_start(config, state, level)
    start = start.to(backend.device)
    objective = build_objective(config, backend, level, target_cache, plan.tile_size, start=start,
                                first=state is None)
    if extra_terms is not None:
        objective = with_terms(objective, extra_terms(level.shape, backend.device))
    image, carried = _optimize(config, backend, objective, start, level, clock, plan.level,
                               callback, plan, iterations, state.carried if state is not None else None)
    return LevelState(image, carried, level)


def _next_level_start(config: RenderConfig, state: LevelState, level: LevelInputs) -> torch.Tensor:
    """The coarser result upsampled to this level; with ``level_start = detail``, plus the band
    of the content this level can hold and the coarser one could not (the content minus its
    own down-and-up-sampled copy), so structure washed out at the coarse level comes back; with
    ``init = palette``, that band in the styles' palette, as the render started."""
    start = resize_to(state.image, *level.shape)
    if config.pyramid.level_start == "detail" and level.start_content is not None:
        coarse = tuple(state.image.shape[-2:])
        content = level.start_content.to(start.device, start.dtype)
        start = (start + content - resize_to(resize_to(content, *coarse), *level.shape)).clamp(0.0, 1.0)
    return start


def _finish(config: RenderConfig, raw: torch.Tensor, level: LevelInputs) -> torch.Tensor:
    result = raw.detach().clamp(0.0, 1.0)
    if config.objective.colors == "luminance" and level.content is not None:
        result = match_luminance_colors(result, level.content)
    if level.unstyled is not None and level.content is not None and level.content_labels is not None:
        result = blend_unstyled(result, level.content, level.content_labels, level.unstyled)
    return result[0].float().cpu()


def carry_adam_state(state: dict[str, torch.Tensor], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Adam's moments resampled to the next level's size. The losses are means over positions,
    so a pixel's gradient scales as 1 / pixels: the moments are rescaled to match, and the
    step count carries on (no bias-correction restart)."""
    old = state["exp_avg"].shape[-2] * state["exp_avg"].shape[-1]
    ratio = old / (shape[0] * shape[1])

    def resample(moment: torch.Tensor) -> torch.Tensor:
        return F.interpolate(moment, size=shape, mode="bilinear", align_corners=False)

    return {"step": state["step"].clone(), "exp_avg": resample(state["exp_avg"]) * ratio,
            "exp_avg_sq": resample(state["exp_avg_sq"]).clamp_min_(0.0) * ratio**2}


def _optimize(config: RenderConfig, backend: Backend, objective: Objective, start: torch.Tensor,
              level: LevelInputs, clock: RenderClock, index: int, callback: Callback | None, level_plan: LevelPlan,
              iterations: int, carried: dict[str, torch.Tensor] | None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Run one level's ``iterations`` on ``start`` (1, 3, H, W); returns the optimised image and
    the optimiser state to carry to the next level (Adam's; L-BFGS restarts at each level, since
    its curvature pairs do not survive resampling). A tiled ``level_plan`` evaluates the loss tile
    by tile (exactly)."""
    optimization = config.optimization
    image = start.contiguous().requires_grad_(True)
    done_before = clock.evaluations
    start_pinned = _pinned_share(image)
    first_loss: list[torch.Tensor] = []
    average = _IterateAverage(optimization.average)

    def closure() -> torch.Tensor:
        losses, image.grad = evaluate(backend, objective, image, level_plan.windows)
        return report(losses)

    def report(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if not first_loss:
            first_loss.append(losses["total"].detach())
        else:  # each evaluation after the first is at a new iterate (L-BFGS without line search, Adam)
            average.update(image.detach())
        clock.record(losses["total"], index)
        if callback is not None:
            callback(RenderEvent(clock.evaluations, clock.total, {k: v.detach() for k, v in losses.items()},
                                 time.perf_counter() - clock.started, peak_memory(clock.device), image.detach()[0],
                                 level=index, levels=clock.levels, progress=clock.progress,
                                 remaining=clock.remaining))
        return losses["total"].detach()

    try:
        if optimization.optimizer == "lbfgs":
            # One L-BFGS iteration is one evaluation here (no line search), as in neural-style;
            # zero tolerances: the render runs the iterations it was asked for. step() returns
            # early when the direction stops descending; go on with the evaluations left.
            lbfgs = torch.optim.LBFGS(
                [image], lr=optimization.resolved_learning_rate, max_iter=iterations,
                max_eval=iterations, tolerance_grad=0.0, tolerance_change=0.0,
                history_size=level_plan.lbfgs_history, line_search_fn=None,
            )
            while (remaining := iterations - (clock.evaluations - done_before)) > 0:
                lbfgs.param_groups[0].update(max_iter=remaining, max_eval=remaining)
                lbfgs.step(closure)
            carried = None
        else:
            optimizer = torch.optim.Adam([image], lr=optimization.resolved_learning_rate)
            if carried is not None:
                optimizer.state[image] = carry_adam_state(carried, (image.shape[-2], image.shape[-1]))
            for _ in range(iterations):
                optimizer.step(closure)
                with torch.no_grad():
                    image.clamp_(0.0, 1.0)  # projected Adam: stay in the valid range
        clock.check_finite(force=True)
        if not torch.isfinite(image).all():
            raise RenderError("the image became NaN/Inf; lower it or the loss weights", field="learning_rate")
        result = average.result(image.detach())
        first = first_loss[0] if first_loss else None
        last = clock.last_loss
        _check_divergence(result, start_pinned, first, last, index, optimization.optimizer,
                          optimization.resolved_learning_rate, weights=sum(map(abs, objective.weights.values())),
                          half=backend.precision.name if backend.precision.is_half else None)
    except KeyboardInterrupt:
        clock.check_finite(force=True)
        raise RenderInterrupted(_finish(config, average.result(image.detach()), level), clock.evaluations) from None
    if optimization.optimizer == "adam":
        carried = {key: value.detach() for key, value in optimizer.state[image].items()}
    return result, carried


class _IterateAverage:
    """The exponential moving average of a level's iterates, bias-corrected (crowsonkb's EMA):
    with decay d, iterate k of n weighs (1 - d) d^(n-k) / (1 - d^n). Decay 0 keeps the last."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self._sum: torch.Tensor | None = None
        self._weight = 0.0

    def update(self, image: torch.Tensor) -> None:
        if self.decay == 0.0:
            return
        if self._sum is None:
            self._sum = torch.zeros_like(image)
        self._sum.mul_(self.decay).add_(image, alpha=1.0 - self.decay)
        self._weight = self._weight * self.decay + (1.0 - self.decay)

    def result(self, last: torch.Tensor) -> torch.Tensor:
        """The average including ``last`` (the final iterate, which no evaluation saw)."""
        if self.decay == 0.0:
            return last
        self.update(last)
        assert self._sum is not None
        return self._sum / self._weight


def _pinned_share(image: torch.Tensor) -> float:
    """Share of the image's values at or beyond the valid range's ends (0 or 1)."""
    with torch.no_grad():
        return float(((image <= 0) | (image >= 1)).float().mean())


def _check_divergence(image: torch.Tensor, start_pinned: float, first: torch.Tensor | None,
                      last: torch.Tensor | None, level: int, optimizer: str, rate: float, *,
                      weights: float = 0.0, half: str | None = None) -> None:
    """RenderError naming learning_rate when a level ended pinned at the clamp or with its loss
    exploded: what a too-large step does, and what the clamp would otherwise hide. Under a half
    precision (``half``; --precision auto picks bf16 on CPUs that run it natively) the message
    also offers fp32: L-BFGS's curvature pairs are what half-precision gradients upset first."""
    precision = f", {half}" if half else ""
    how = (f"after level {level + 1} ({'Adam' if optimizer == 'adam' else 'L-BFGS'}{precision}, "
           f"learning rate {rate:g})")
    remedy = "lower it" + (" or use --precision fp32" if half else "")
    pinned = _pinned_share(image)
    if pinned > _PINNED_SHARE >= start_pinned:
        raise RenderError(f"the render diverged: {pinned:.1%} of the image is pinned at 0 or 1 {how}; {remedy}",
                          field="learning_rate")
    if first is None or last is None:
        return
    start, end = float(first), float(last)
    if _exploded(start, end, weights):
        raise RenderError(f"the render diverged: the loss rose from {start:.4g} to {end:.4g} {how}; {remedy}",
                              field="learning_rate")


def _exploded(start: float, end: float, weights: float = 0.0) -> bool:
    """Whether a level's loss rose from ``start`` to ``end`` as a too-large step makes it: many
    times over, and by more than a negligible amount. Negligible is measured against the terms'
    ``weights`` (their sum): every term is a relative error, so 1e-5 of the weights is a change
    no one could see. A start at the loss's floor (a one-colour image in a style of its colour:
    3e-9 in fp32) otherwise "exploded" when L-BFGS's first step, scaled by the inverse of a
    near-zero gradient, took it to 1e-3; in bf16 that gradient rounds to exactly 0 and no step
    is taken, which is why only fp32 failed."""
    return end > _EXPLODED_RATIO * max(start, 0.0) and end > max(_NEGLIGIBLE_LOSS, _NEGLIGIBLE_SHARE * weights)


class RenderClock:
    """Evaluations across levels, the time left, and a device-side non-finite flag read back
    every few steps: ``RenderClock(iterations per level, pixels per level, device)``, one per
    render, handed to every ``render_level`` of it.

    The time left is the work left (evaluations weighted by their level's pixels, so a pyramid's
    fine levels count for what they cost) at the seconds per unit of work timed on the current
    level after its first few evaluations, else on the last level timed; None until then. From
    the start instead, the first estimate carried the set-up (the style targets, the first
    evaluation's allocations) into every evaluation to come: 9140 s shown for a 700 s render.
    ``now`` is the clock (tests pass a fake one)."""

    def __init__(self, iterations: Sequence[int], pixels: Sequence[int], device: torch.device, *,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.total = sum(iterations)
        self.levels = len(iterations)
        self._pixels = list(pixels)
        self._work = sum(count * size for count, size in zip(iterations, pixels))
        self._done = 0
        self.device = device
        self.evaluations = 0
        self.last_loss: torch.Tensor | None = None
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self._now = now
        self._level, self._level_evaluations = -1, 0
        self._mark: tuple[float, int] | None = None  # (time, work done) where the level's timing starts
        self._seconds_per_work: float | None = None
        self.remaining: float | None = None
        self.started = now()

    @property
    def progress(self) -> float:
        return min(1.0, self._done / self._work)

    def record(self, loss: torch.Tensor, level: int) -> None:
        self.evaluations += 1
        self._done += self._pixels[level]
        self._time(level)
        self.last_loss = loss.detach()
        self._nonfinite |= ~torch.isfinite(self.last_loss)
        self.check_finite()

    def _time(self, level: int) -> None:
        now = self._now()
        if level != self._level:
            self._level, self._level_evaluations, self._mark = level, 0, None
        self._level_evaluations += 1
        if self._level_evaluations == _SETTLE_EVALUATIONS:
            self._mark = (now, self._done)
        elif self._mark is not None and self._level_evaluations >= _SETTLE_EVALUATIONS + _TIMED_EVALUATIONS:
            self._seconds_per_work = (now - self._mark[0]) / max(self._done - self._mark[1], 1)
        if self._seconds_per_work is not None:
            self.remaining = self._seconds_per_work * (self._work - self._done)

    def check_finite(self, *, force: bool = False) -> None:
        if force or self.evaluations % _FINITE_CHECK_EVERY == 0:
            if bool(self._nonfinite):
                raise RenderError(f"the loss became NaN/Inf by iteration {self.evaluations}; lower it or the "
                                  "loss weights", field="learning_rate")
