"""Targets and the objective of one level: content features and style statistics computed once
(tile by tile on tiled levels), shared across renders through a TargetCache.

Adding a loss means a Term in objectives and a line here; the loop and the tiling do not change.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._config import RenderConfig
from ..backends import Backend
from ..objectives import (
    GramStyleTerm,
    Objective,
    PhotorealismTerm,
    Region,
    SlicedStyleTerm,
    Term,
    W2StyleTerm,
    blend_statistics,
    build_patch_bank,
    build_sliced_target,
    content_style_objective,
    gaussian_statistics,
    gram_statistics,
    mrf_objective,
    style_variants,
)
from ._evaluate import features_over_regions, statistics_over_regions
from ._inputs import LevelInputs
from ._planner import plan_tiles, receptive_radius
from ._regions import guided_style_term

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


def _regions(backend: Backend, image: torch.Tensor, tile_size: int) -> list[Region]:
    """Tiles for computing an image's targets (no objective extent: features only)."""
    if not tile_size:
        return [Region.whole(*image.shape[-2:])]
    return plan_tiles(*image.shape[-2:], tile_size, receptive_radius(backend.backbone.layers))


def _over_regions(backend: Backend, tile_size: int) -> Callable[[torch.Tensor, Callable[..., Any]], list[Any]]:
    """over_regions(image, compute): ``compute(features, region)`` for each of the image's target
    tiles (one whole region when ``tile_size`` is 0), without gradients."""
    def over_regions(image: torch.Tensor, compute: Callable[..., Any]) -> list[Any]:
        with torch.no_grad():
            return [compute(backend.features(region.crop(image)), region)
                    for region in _regions(backend, image, tile_size)]

    return over_regions


def with_terms(objective: Objective, extra: Sequence[tuple[Term, float]]) -> Objective:
    """``objective`` with ``extra`` (term, weight) pairs added after its own terms."""
    if not extra:
        return objective
    terms = [*objective.terms.values(), *(term for term, _ in extra)]
    return Objective(terms, {**objective.weights, **{term.name: weight for term, weight in extra}})


def build_objective(config: RenderConfig, backend: Backend, level: LevelInputs, cache: TargetCache | None = None,
                    tile_size: int = 0) -> Objective:
    """The method's objective with its targets for this level (computed, or from ``cache``), and
    the controls' terms (photorealism: the matting Laplacian of this level's content)."""
    objective = _method_objective(config, backend, level, cache, tile_size)
    photo = config.objective.photo_weight  # control: photorealism
    return with_terms(objective, [(PhotorealismTerm(level.content), photo)] if photo > 0 else [])


def _method_objective(config: RenderConfig, backend: Backend, level: LevelInputs, cache: TargetCache | None,
                      tile_size: int) -> Objective:
    """The method's objective with its targets for this level (computed, or from ``cache``).

    On a tiled level (``tile_size``) the content features and style statistics are computed tile
    by tile too; the MRF style bank is computed whole (its patches are the style's memory cost).
    """
    objective, runtime = config.objective, config.runtime
    strides = backend.strides

    def cached(compute: Callable[[], Any], *parts: Any) -> Any:
        if cache is None:
            return compute()
        key = TargetCache.key(objective.method, runtime.model, runtime.weights, runtime.pooling,
                              config.optimization.seed, backend.name, *parts, *level.styles)
        return cache.get(key, compute)

    content_targets = None
    with torch.no_grad():
        if level.content is not None and objective.content_weight > 0:
            content_targets = features_over_regions(backend, level.content, _regions(backend, level.content, tile_size),
                                                    objective.content_layers)
    if objective.method == "gram":
        if level.content_labels is not None:  # regions: each takes its statistics from its styles' regions
            style_term = guided_style_term(config, backend, level, cached, _over_regions(backend, tile_size))
        else:
            style_term = _style_term(config, backend, level, cached, tile_size)
        return content_style_objective(style_term,
                                       content_targets=content_targets, content_weight=objective.content_weight,
                                       style_weight=objective.style_weight, tv_weight=objective.tv_weight,
                                       strides=strides)
    mrf = config.mrf
    map_scale = math.sqrt(mrf.map_weight) if level.content_labels is not None else 0.0
    variants = style_variants(mrf.style_rotations, mrf.rotation_step, mrf.style_scales, mrf.scale_step)
    bank = cached(
        lambda: build_patch_bank(backend.features, level.styles, mrf.mrf_layers, patch_size=mrf.patch_size,
                                 style_stride=mrf.style_stride, variants=variants,
                                 style_labels=level.style_labels, map_scale=map_scale),
        mrf.mrf_layers, mrf.patch_size, mrf.style_stride, mrf.style_rotations, mrf.rotation_step,
        mrf.style_scales, mrf.scale_step, mrf.map_weight, level.content_labels is not None,
        *(level.style_labels or []))
    return mrf_objective(bank, mrf.layer_weight_map(), content_targets=content_targets,
                         content_weight=objective.content_weight, mrf_weight=mrf.mrf_weight,
                         tv_weight=objective.tv_weight, patch_size=mrf.patch_size,
                         synthesis_stride=mrf.synthesis_stride, strides=strides,
                         content_labels=level.content_labels, map_scale=map_scale, confidence=mrf.confidence,
                         unstyled=level.unstyled)


def _style_term(config: RenderConfig, backend: Backend, level: LevelInputs, cached: Callable[..., Any],
                tile_size: int) -> Term:
    """The gram method's style term, chosen by ``style_loss``, with its (cached) targets."""
    objective, strides = config.objective, backend.strides
    blend = list(objective.style_blend or (1.0,) * len(level.styles))
    layers, layer_weights = objective.style_layers, objective.style_layer_weight_map()

    def blended(statistics: Callable[..., Any]) -> dict[str, torch.Tensor]:
        per_style = [statistics_over_regions(backend, statistics, style, _regions(backend, style, tile_size))
                     for style in level.styles]
        return blend_statistics(per_style, blend)

    if objective.style_loss == "w2":
        moments = cached(lambda: blended(lambda f, r: gaussian_statistics(f, r, layers, strides)), "w2", blend, layers)
        return W2StyleTerm(moments, layer_weights, strides)
    if objective.style_loss == "sliced":
        channels = {layer: backend.backbone.feature_info[layer].channels for layer in layers}
        over_regions = _over_regions(backend, tile_size)
        target = cached(lambda: build_sliced_target(over_regions, level.styles, blend, layers, strides, channels,
                                                    seed=config.optimization.seed), "sliced", blend, layers)
        return SlicedStyleTerm(target, layer_weights, strides)
    grams = cached(lambda: blended(lambda f, r: gram_statistics(f, r, layers, strides)), "gram", blend, layers)
    return GramStyleTerm(grams, layer_weights, strides)
