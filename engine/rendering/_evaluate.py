"""Evaluate an objective and its image gradient on a backend, whole or tile by tile (exactly).

Untiled, one forward and one backward run over the whole image, with autograd through the
objective on top of the features. Tiled (when a level's activations do not fit the budget), the
objective's contract (objectives._base) is all it takes:

- pass 1 sums every global statistic over the tiles' interiors (no gradients kept), the global
  terms are computed from them, and their gradient with respect to each statistic is taken;
- pass 2 runs forward + backward per tile: its upstream gradient is that statistic gradient
  pulled back through the tile's own statistics (weighted by its share of the positions), plus
  the gradient of the local terms at the positions the tile owns; the crop's image gradient is
  added into the full gradient, halo included.

Each feature position belongs to one tile's interior and the halo makes interior features exact,
so the sum over tiles is the untiled gradient up to floating-point summation order. Pixel terms
(total variation) run on the whole image once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..backends import Backend
from ..objectives import Objective, Window, Statistic, combine_statistics

__all__ = ["evaluate", "features_over_windows", "statistics_over_windows"]


def _grads(output: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if not output.requires_grad:
        return [torch.zeros_like(value) for value in inputs]
    return list(torch.autograd.grad(output, list(inputs), allow_unused=True, materialize_grads=True))


def _leaves(features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.requires_grad_(True) for name, value in features.items()}


def evaluate(backend: Backend, objective: Objective, image: torch.Tensor,
             windows: Sequence[Window] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The objective's terms (with "total") and d total / d image (1, 3, H, W).

    ``windows``: the tiles to evaluate in (see rendering.plan_tiles); None or the whole image
    alone evaluates untiled.
    """
    image = image.detach()
    if windows is None or (len(windows) == 1 and windows[0].is_whole):
        # The backend gives features and, from the loss gradients at them, the image gradient;
        # autograd only sees the (small) loss graph on top of the features.
        features = _leaves(backend.forward(image))
        pixels = image.detach().requires_grad_(True)
        with torch.enable_grad():
            terms = objective(features, pixels)
            *tap_grads, pixel_grad = _grads(terms["total"], [*features.values(), pixels])
        gradient = backend.backward(dict(zip(features, tap_grads))) + pixel_grad
        return {name: value.detach() for name, value in terms.items()}, gradient
    return _evaluate_tiled(backend, objective, image, windows)


def statistics_over_windows(backend: Backend,
                            statistics: Callable[[Mapping[str, torch.Tensor], Window], dict[str, Statistic]],
                            image: torch.Tensor,
                            windows: Sequence[Window]) -> dict[str, Statistic]:
    """``statistics(features, window)`` of the whole ``image``, summed over its windows'
    interiors (no gradients kept): pass 1, and style targets too large to run whole."""
    with torch.no_grad():
        return combine_statistics([statistics(backend.features(window.crop(image)), window) for window in windows])


@torch.no_grad()
def features_over_windows(backend: Backend, image: torch.Tensor, windows: Sequence[Window],
                          layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Whole feature maps of ``layers`` assembled from the windows' interiors (content targets)."""
    if len(windows) == 1 and windows[0].is_whole:
        features = backend.features(image)
        return {layer: features[layer] for layer in layers}
    strides = backend.strides
    height, width = image.shape[-2:]
    maps: dict[str, torch.Tensor] = {}
    for window in windows:
        features = backend.features(window.crop(image))
        for layer in layers:
            stride, crop = strides[layer], features[layer]
            if layer not in maps:
                maps[layer] = crop.new_zeros(crop.shape[0], crop.shape[1], height // stride, width // stride)
            maps[layer][:, :, *window.full_interior(stride, crop)] = window.owned(stride, crop)
    return maps


def _evaluate_tiled(backend: Backend, objective: Objective, image: torch.Tensor,
                    windows: Sequence[Window]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    zero = image.new_zeros(())
    stats = statistics_over_windows(backend, objective.statistics, image, windows)
    leaves = {key: Statistic(value.mean.detach().requires_grad_(True), value.positions) for key, value in stats.items()}
    with torch.enable_grad():
        global_terms = objective.global_terms(leaves)
        weighted = objective.total(global_terms) if global_terms else zero
        stat_grads = dict(zip(leaves, _grads(weighted, [leaf.mean for leaf in leaves.values()])))
    constant = {key: Statistic(value.mean.detach(), value.positions) for key, value in stats.items()}

    local_sums: dict[str, torch.Tensor] = {}
    image_grad = torch.zeros_like(image)
    for window in windows:
        features = _leaves(backend.forward(window.crop(image)))
        with torch.enable_grad():
            surrogate = zero
            for key, (mean, count) in objective.statistics(features, window).items():
                surrogate = surrogate + (stat_grads[key] * mean).sum() * (count / stats[key].positions)
            local = objective.local_terms(features, window, constant)
            if local:
                surrogate = surrogate + objective.total(local)
            upstream = dict(zip(features, _grads(surrogate, list(features.values()))))
        for name, value in local.items():
            local_sums[name] = local_sums[name] + value.detach() if name in local_sums else value.detach()
        window_grad = backend.backward(upstream)
        image_grad[..., window.cy0:window.cy1, window.cx0:window.cx1] += window_grad

    pixels = image.detach().requires_grad_(True)
    with torch.enable_grad():
        pixel_terms = objective.pixel_terms(pixels)
        if pixel_terms:
            (pixel_grad,) = _grads(objective.total(pixel_terms), [pixels])
            image_grad += pixel_grad
    parts = {**{k: v.detach() for k, v in global_terms.items()}, **local_sums,
             **{k: v.detach() for k, v in pixel_terms.items()}}
    return objective.report(parts, zero), image_grad
