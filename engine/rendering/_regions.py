"""Regions of one level: the guided style term with each region's targets (Gram, W2, sliced),
and the unstyled region's content blended back into the result.

A region's target statistics come from the styles whose maps contain its colour (the one
palette of objectives._semantic), blended with the styles' weights renormalised over those: a
style whose map is one flat colour is bound to that region alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .._config import RenderConfig
from ..backends import Backend
from ..objectives import (
    REGION_SHARE,
    GramStyleTerm,
    GuidedSlicedTerm,
    GuidedStyleTerm,
    RegionGuide,
    SlicedStyleTerm,
    SlicedTarget,
    Statistic,
    Term,
    W2StyleTerm,
    blend_statistics,
    build_sliced_target,
    combine_statistics,
    guided_moments,
    guided_projection_statistics,
    normalized_region,
)
from ._color import soften
from ._inputs import LevelInputs

__all__ = ["blend_unstyled", "guided_style_term"]

#: over_regions(image, compute) -> [compute(features of a region's crop, region) for each region]
OverRegions = Callable[[torch.Tensor, Callable[..., Any]], list[Any]]


def guided_style_term(config: RenderConfig, backend: Backend, level: LevelInputs, cached: Callable[..., Any],
                      over_regions: OverRegions) -> Term:
    """The gram method's style term (``style_loss``) per region of the level's maps, its
    targets computed once per style, region and level (tile by tile where ``over_regions``
    tiles) and cached."""
    assert level.content_labels is not None and level.style_labels is not None
    objective, strides = config.objective, backend.strides
    layers, layer_weights = objective.style_layers, objective.style_layer_weight_map()
    blend = list(objective.style_blend or (1.0,) * len(level.styles))
    styled = [r for r in range(level.content_labels.shape[1]) if r != level.unstyled]
    guides = [RegionGuide(labels, styled) for labels in level.style_labels]
    # A style's map holds a colour where it covers as much of it as the palette asks of a region.
    present = [{r for r in styled if float(labels[0, r].mean()) >= REGION_SHARE} for labels in level.style_labels]
    guide = RegionGuide(level.content_labels, styled)

    def per_region(statistics: Callable[..., dict[str, Statistic]], names: Sequence[str]
                   ) -> dict[int, dict[str, torch.Tensor]]:
        per_style = [combine_statistics(over_regions(style, lambda f, region, g=g: statistics(f, region, g)))
                     for style, g in zip(level.styles, guides)]
        return _blend_regions(per_style, blend, present, styled, layers, names)

    parts = ("regions", objective.style_loss, blend, layers, styled, *level.style_labels)
    if objective.style_loss == "sliced":
        channels = {layer: backend.backbone.feature_info[layer].channels for layer in layers}
        targets = cached(lambda: _sliced_targets(over_regions, level, blend, per_region, layers, strides, channels,
                                                 seed=config.optimization.seed), *parts)
        return GuidedSlicedTerm({r: SlicedStyleTerm(target, layer_weights, strides) for r, target in targets.items()},
                                guide, strides)
    w2 = objective.style_loss == "w2"
    names = ("mean", "second") if w2 else ("second",)
    targets = cached(lambda: per_region(
        lambda f, region, g: guided_moments(f, region, layers, strides, g, means=w2), names), *parts)
    if w2:
        terms: dict[int, Term] = {r: W2StyleTerm(t, layer_weights, strides) for r, t in targets.items()}
    else:
        terms = {r: GramStyleTerm({key.rsplit("/", 1)[0]: value for key, value in t.items()}, layer_weights, strides)
                 for r, t in targets.items()}
    return GuidedStyleTerm(terms, guide, strides)


def _blend_regions(per_style: Sequence[Mapping[str, Statistic]], blend: Sequence[float], present: Sequence[set[int]],
                   styled: Sequence[int], layers: Sequence[str], names: Sequence[str]
                   ) -> dict[int, dict[str, torch.Tensor]]:
    """Region -> its guided statistics {"<layer>/<name>": ...}, blended over the styles that
    contain it (weights renormalised over them); regions no style holds at this size are left out."""
    targets = {}
    for r in styled:
        chosen = [(normalized_region(stats, r, layers, names), weight)
                  for stats, weight, has in zip(per_style, blend, present) if r in has and weight > 0]
        chosen = [(stats, weight) for stats, weight in chosen if stats is not None]
        if chosen:
            targets[r] = blend_statistics([{key: Statistic(value, 1) for key, value in stats.items()}
                                           for stats, _ in chosen], [weight for _, weight in chosen])
    return targets


def _sliced_targets(over_regions: OverRegions, level: LevelInputs, blend: Sequence[float],
                    per_region: Callable[..., dict[int, dict[str, torch.Tensor]]], layers: Sequence[str],
                    strides: Mapping[str, int], channels: Mapping[str, int], *, seed: int) -> dict[int, SlicedTarget]:
    """Each region's sliced target: the directions and bins of the unguided target (which span
    every style's projections), with the region's guided histograms and variances."""
    base = build_sliced_target(over_regions, level.styles, blend, layers, strides, channels, seed=seed)
    bins = next(iter(base.histogram.values())).shape[1]

    def statistics(features, region, guide):
        return guided_projection_statistics(features, region, layers, strides, guide, base.directions, base.low,
                                            base.width, bins, moments=True)

    found = per_region(statistics, ("histogram", "mean", "square"))
    return {r: SlicedTarget(
        directions=base.directions, low=base.low, width=base.width,
        histogram={layer: stats[f"{layer}/histogram"] for layer in layers},
        variance={layer: (stats[f"{layer}/square"] - stats[f"{layer}/mean"].pow(2)).sum() for layer in layers})
        for r, stats in found.items()}


def blend_unstyled(image: torch.Tensor, content: torch.Tensor, labels: torch.Tensor, unstyled: int) -> torch.Tensor:
    """The content blended back into (1, 3, H, W) ``image`` where the map is the unstyled
    colour, through its softened mask."""
    mask = soften(labels[:, unstyled:unstyled + 1].to(image.dtype))
    return image * (1 - mask) + content.to(image) * mask
