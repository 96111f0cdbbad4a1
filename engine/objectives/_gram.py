"""Gram-matrix style (Gatys et al., CVPR 2016) as a term on global statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ._base import Objective, Window, Statistic, Term
from ._content import ContentTerm, TotalVariationTerm
from ._functional import EPS, gram
from ._registry import StyleLoss, StyleTargets, guided_moment_term, register_style_loss

__all__ = ["GramStyleTerm", "content_style_objective", "gatys_objective", "gram_statistics"]


def gram_statistics(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
                    strides: Mapping[str, int]) -> dict[str, Statistic]:
    """{layer: (Gram over the window's owned positions (1, C, C), their count)}."""
    stats = {}
    for layer in layers:
        inside = window.owned(strides.get(layer, 1), features[layer])
        positions = inside.shape[2] * inside.shape[3]
        if positions:  # an edge tile narrower than this layer's stride owns none
            stats[layer] = Statistic(gram(inside), positions)
    return stats


class GramStyleTerm(Term):
    """sum_l w_l |G_l - S_l|^2 / |S_l|^2 with layer weights normalised to 1 (see _functional)."""

    name = "style"

    def __init__(self, targets: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float],
                 strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.targets = dict(targets)
        self.layers = tuple(self.targets)
        total = sum(layer_weights.values())
        self.layer_weights = {layer: w / total for layer, w in layer_weights.items()}
        # Reciprocal target magnitudes, computed once rather than per iteration.
        self._scale = {layer: self.layer_weights[layer] / target.pow(2).sum().clamp_min(EPS)
                       for layer, target in self.targets.items()}

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return gram_statistics(features, window, self.layers, self.strides)

    def global_value(self, stats: Mapping[str, Statistic]) -> torch.Tensor:
        style: torch.Tensor | None = None
        for layer, target in self.targets.items():
            error = (stats[layer].mean - target).pow(2).sum() * self._scale[layer]
            style = error if style is None else style + error
        assert style is not None
        return style


def gatys_objective(*, content_targets: Mapping[str, torch.Tensor] | None, style_targets: Mapping[str, torch.Tensor],
                    content_weight: float, style_weight: float, tv_weight: float,
                    style_layer_weights: Mapping[str, float], strides: Mapping[str, int] | None = None) -> Objective:
    """Gatys et al.'s objective: content + Gram style + total variation (content weight 0
    without content targets)."""
    return content_style_objective(GramStyleTerm(style_targets, style_layer_weights, strides),
                                   content_targets=content_targets, content_weight=content_weight,
                                   style_weight=style_weight, tv_weight=tv_weight, strides=strides)


def content_style_objective(style_term: Term, *, content_targets: Mapping[str, torch.Tensor] | None,
                            content_weight: float, style_weight: float, tv_weight: float,
                            strides: Mapping[str, int] | None = None) -> Objective:
    """Gatys et al.'s objective with any style term (Gram, W2, sliced): content + style + total
    variation (content weight 0 without content targets)."""
    terms = [ContentTerm(content_targets, strides), style_term, TotalVariationTerm()]
    weights = {"content": content_weight if content_targets else 0.0, "style": style_weight, "tv": tv_weight}
    return Objective(terms, weights)


def _build(targets: StyleTargets) -> Term:
    return GramStyleTerm(targets.blended_targets(gram_statistics), targets.layer_weights, targets.strides)


def _build_guided(targets: StyleTargets) -> Term:
    """The guided Gram (Gatys et al. 2017): each region's Gram of m^2-weighted features."""
    return guided_moment_term(targets, ("second",), lambda found: GramStyleTerm(
        {key.rsplit("/", 1)[0]: value for key, value in found.items()}, targets.layer_weights, targets.strides))


GRAM = register_style_loss(StyleLoss("gram", _build, _build_guided))
