"""Targets and the objective of one level: content features and style statistics computed once
(tile by tile on tiled levels), shared across renders through a TargetCache.

Which loss, and how its target is built, is the loss's own declaration (objectives.StyleLoss,
read through ``style_loss_for``); nothing here names a loss, so a new one is one file in
objectives, and the loop and the tiling do not change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._config import RenderConfig
from ..backends import Backend
from .._errors import ConfigError
from ..objectives import (
    Objective,
    PhotorealismTerm,
    Window,
    StyleTargets,
    Term,
    content_style_objective,
    style_loss_for,
)
from ._evaluate import features_over_windows
from ._inputs import LevelInputs
from ._planner import objective_extent, plan_tiles, receptive_radius

__all__ = ["ExtraTerms", "TargetCache", "build_objective", "with_terms"]

#: Terms a caller adds to every level's objective, built for the level's (height, width) on its
#: device, with their weights: e.g. video's temporal term, whose reference frame is per level.
ExtraTerms = Callable[[tuple[int, int], torch.device], Sequence[tuple[Term, float]]]


@dataclass
class TargetCache:
    """Style targets (Gram matrices, Gaussian moments, projection histograms, MRF patch banks)
    computed once per key and reused.

    The key covers what decides a target: the style pixels at their working size, the network
    and its weights, the layers and the term's parameters. ``computed`` counts the misses.
    """

    entries: dict[str, Any] = field(default_factory=dict)
    computed: int = 0

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.entries:
            self.entries[key] = compute()
            self.computed += 1
        return self.entries[key]

    @staticmethod
    def key(*parts: Any) -> str:
        digest = hashlib.sha256()
        for part in parts:
            if isinstance(part, torch.Tensor):
                digest.update(part.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
                digest.update(str(tuple(part.shape)).encode())
            else:
                digest.update(json.dumps(part, sort_keys=True, default=str).encode())
            digest.update(b"\0")
        return digest.hexdigest()


def _windows(backend: Backend, image: torch.Tensor, tile_size: int) -> list[Window]:
    """Tiles for computing an image's targets (no objective extent: features only)."""
    if not tile_size:
        return [Window.whole(*image.shape[-2:])]
    height, width = image.shape[-2:]
    return plan_tiles(height, width, tile_size, receptive_radius(backend.backbone.layers))


def _over_windows(backend: Backend, tile_size: int) -> Callable[[torch.Tensor, Callable[..., Any]], list[Any]]:
    """over_windows(image, compute): ``compute(features, window)`` for each of the image's target
    tiles (one whole window when ``tile_size`` is 0), without gradients."""
    def over_windows(image: torch.Tensor, compute: Callable[..., Any]) -> list[Any]:
        with torch.no_grad():
            return [compute(backend.features(window.crop(image)), window)
                    for window in _windows(backend, image, tile_size)]

    return over_windows


def with_terms(objective: Objective, extra: Sequence[tuple[Term, float]]) -> Objective:
    """``objective`` with ``extra`` (term, weight) pairs added after its own terms."""
    if not extra:
        return objective
    terms = [*objective.terms.values(), *(term for term, _ in extra)]
    return Objective(terms, {**objective.weights, **{term.name: weight for term, weight in extra}})


def build_objective(config: RenderConfig, backend: Backend, level: LevelInputs, cache: TargetCache | None = None,
                    tile_size: int = 0, *, start: torch.Tensor | None = None, first: bool = True) -> Objective:
    """The method's objective with its targets for this level (computed, or from ``cache``), and
    the controls' terms (photorealism: the matting Laplacian of this level's content).
    ``start``: the level's first image and ``first``: whether it is the pyramid's first level
    (for losses whose targets depend on them: NNST)."""
    objective = _method_objective(config, backend, level, cache, tile_size, start, first)
    photo = config.objective.photo_weight  # control: photorealism
    if photo <= 0:
        return objective
    assert level.content is not None, "prepare_inputs refuses the photorealism term without a content photo"
    return with_terms(objective, [(PhotorealismTerm(level.content), photo)])


def _method_objective(config: RenderConfig, backend: Backend, level: LevelInputs, cache: TargetCache | None,
                      tile_size: int, start: torch.Tensor | None, first: bool) -> Objective:
    """Content + the declared style term (with its targets for this level) + TV.

    On a tiled level (``tile_size``) the content features and the style targets are computed
    tile by tile too (the MRF bank whole: its patches are the style's memory cost).
    """
    objective, runtime = config.objective, config.runtime
    strides = backend.strides
    loss = style_loss_for(config)
    guided = level.content_labels is not None and level.style_labels is not None
    build = loss.guided if guided else loss.build
    if build is None:
        raise ConfigError(f"{loss.name} has no guided variant: semantic maps cannot be used with it",
                          field="style_loss")

    def cached(compute: Callable[[], Any], *parts: Any) -> Any:
        if cache is None:
            return compute()
        key = TargetCache.key(objective.method, loss.name, guided, runtime.model, runtime.weights, runtime.pooling,
                              config.optimization.seed, backend.name, *parts, *level.styles,
                              *(level.style_labels or []), level.unstyled)
        return cache.get(key, compute)

    content_targets = None
    with torch.no_grad():
        if level.content is not None and objective.content_weight > 0:
            content_targets = features_over_windows(backend, level.content, _windows(backend, level.content, tile_size),
                                                    objective.content_layers)
    mrf = objective.method == "mrf"
    layer_weights = config.mrf.layer_weight_map() if mrf else objective.style_layer_weight_map()
    targets = StyleTargets(
        config=config, styles=level.styles, blend=list(objective.style_blend or (1.0,) * len(level.styles)),
        layers=tuple(layer_weights), layer_weights=layer_weights, strides=strides,
        channels={layer: backend.backbone.feature_info[layer].channels for layer in layer_weights},
        seed=config.optimization.seed, cached=cached, over_windows=_over_windows(backend, tile_size),
        features=backend.features, content=level.content, start=start, first=first,
        content_labels=level.content_labels if guided else None, style_labels=level.style_labels if guided else None,
        unstyled=level.unstyled)
    style_term = build(targets)
    declared = objective_extent(config)
    if any(extra > declared.get(layer, 0) for layer, extra in style_term.extent().items()):
        raise ValueError(f"style loss {loss.name!r} reads {style_term.extent()} beyond a position but declares "
                         f"{declared}: tiles would be inexact")
    return content_style_objective(style_term, content_targets=content_targets,
                                   content_weight=objective.content_weight,
                                   style_weight=config.mrf.mrf_weight if mrf else objective.style_weight,
                                   tv_weight=objective.tv_weight, strides=strides)
