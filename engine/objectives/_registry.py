"""The objective registry: a style loss is one file that declares itself here.

Each loss's file ends with ``register_style_loss(StyleLoss(...))``: its config name, how its
term and target are built from the style features at one level (``build``), its guided
(semantic-map) variant (``guided``, or None: maps with it are then a clear error), its reach
(``extent``: feature positions beyond an owned one its value reads, which tiles add to their
halo) and its memory (``memory``: bytes its targets hold over a level, which the planner adds to
the image's state). Config, targets, regions and the memory planner read the declaration and
nothing else (timm's ``@register_model``; pystiche's losses owning their targets), so a new loss
touches no other file, and an unknown name is an error, never a fallback to Gram.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._backbone import FeatureInfo
from .._config import RenderConfig
from .._errors import ConfigError
from .._style_losses import register_entry, registered_entry
from ._base import Window, Statistic, Term, blend_statistics, combine_statistics
from ._regions import GuidedStyleTerm, RegionGuide, guided_moments, normalized_region
from ._semantic import REGION_SHARE

__all__ = ["OverWindows", "StyleLoss", "StyleTargets", "guided_moment_term", "register_style_loss", "style_loss_for"]

#: over_windows(image, compute) -> [compute(features of a window's crop, window) for each window]
#: (one whole window when the level is untiled), without gradients.
OverWindows = Callable[[torch.Tensor, Callable[[Mapping[str, torch.Tensor], Window], Any]], list[Any]]
#: statistics(features, window) -> {key: Statistic} over the window's owned positions.
Statistics = Callable[[Mapping[str, torch.Tensor], Window], dict[str, Statistic]]
#: statistics(features, window, guide) -> {key: Statistic}, per region of the guide's maps.
GuidedStatistics = Callable[[Mapping[str, torch.Tensor], Window, RegionGuide], dict[str, Statistic]]


def _with_guide(statistics: GuidedStatistics, guide: RegionGuide) -> Statistics:
    """``statistics`` with its guide bound (a closure per guide, not one late-bound to the last)."""
    return lambda features, window: statistics(features, window, guide)


@dataclass(frozen=True)
class StyleTargets:
    """What a loss builds its term from at one level (rendering fills it in).

    ``styles``: (1, 3, h, w) images on the device; ``blend``: their weights; ``layers`` and
    ``layer_weights``: the method's style layers; ``strides``/``channels``: each tap's metadata;
    ``cached(compute, *parts)``: ``compute()`` once per style, level and ``parts`` (the loss's
    parameters; the loss's name, the styles and their maps are in the key already);
    ``over_windows``: the level's target tiles; ``features(image)``: a whole image's taps, no gradient.
    ``content`` (1, 3, h, w) or None and ``start``
    (the level's first image; ``first``: the pyramid's first level) serve losses whose targets
    depend on the content (NNST). With semantic maps, ``content_labels`` (1, K, h, w) and one
    ``style_labels`` per style are set, and ``unstyled`` is the label that gets no style term.
    ``config``: the render's options, for a loss's own parameters.
    """

    config: RenderConfig
    styles: Sequence[torch.Tensor]
    blend: Sequence[float]
    layers: tuple[str, ...]
    layer_weights: Mapping[str, float]
    strides: Mapping[str, int]
    channels: Mapping[str, int]
    seed: int
    cached: Callable[..., Any]
    over_windows: OverWindows
    features: Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
    content: torch.Tensor | None = None
    start: torch.Tensor | None = None
    first: bool = True
    content_labels: torch.Tensor | None = None
    style_labels: Sequence[torch.Tensor] | None = None
    unstyled: int | None = None

    @property
    def guided(self) -> bool:
        return self.content_labels is not None and self.style_labels is not None

    def blended_targets(self, statistics: Callable[[Mapping[str, torch.Tensor], Window, Sequence[str],
                                                    Mapping[str, int]], dict[str, Statistic]],
                        ) -> dict[str, torch.Tensor]:
        """``statistics(features, window, layers, strides)`` of the styles, blended and cached."""
        return self.cached(lambda: self.blended(lambda f, window: statistics(f, window, self.layers, self.strides)),
                           list(self.blend), self.layers)

    def blended(self, statistics: Statistics) -> dict[str, torch.Tensor]:
        """``statistics`` of every style (summed over its windows), blended by ``blend``."""
        per_style = [combine_statistics(self.over_windows(style, statistics)) for style in self.styles]
        return blend_statistics(per_style, list(self.blend))

    # --- semantic maps ----------------------------------------------------------------------

    @property
    def styled(self) -> list[int]:
        """The label channels that carry a style term (all but the unstyled one)."""
        assert self.content_labels is not None
        return [r for r in range(self.content_labels.shape[1]) if r != self.unstyled]

    def content_guide(self) -> RegionGuide:
        assert self.content_labels is not None
        return RegionGuide(self.content_labels, self.styled)

    def per_region(self, statistics: GuidedStatistics, names: Sequence[str]) -> dict[int, dict[str, torch.Tensor]]:
        """Region -> its guided statistics {"<layer>/<name>": ...}: ``statistics(features, window,
        guide)`` of each style (summed over its windows), normalised by the region's weight and
        blended over the styles whose maps hold the region (weights renormalised over them);
        regions no style holds at this size are left out."""
        assert self.style_labels is not None
        styled = self.styled
        per_style = []
        for style, labels in zip(self.styles, self.style_labels, strict=True):
            guide = RegionGuide(labels, styled)
            per_style.append(combine_statistics(self.over_windows(style, _with_guide(statistics, guide))))
        # A style's map holds a colour where it covers as much of it as the palette asks of a region.
        present = [{r for r in styled if float(labels[0, r].mean()) >= REGION_SHARE} for labels in self.style_labels]
        targets = {}
        for r in styled:
            chosen = [(normalized_region(stats, r, self.layers, names), weight)
                      for stats, weight, has in zip(per_style, self.blend, present) if r in has and weight > 0]
            found = [(stats, weight) for stats, weight in chosen if stats is not None]
            if found:
                targets[r] = blend_statistics([{key: Statistic(value, 1) for key, value in stats.items()}
                                               for stats, _ in found], [weight for _, weight in found])
        return targets


def guided_moment_term(targets: StyleTargets, names: Sequence[str],
                       make_term: Callable[[dict[str, torch.Tensor]], Term]) -> Term:
    """The guided variant of a loss on guided moments (Gram: ``names`` ("second",); W2: ("mean",
    "second")): each region's targets, ``make_term(its guided statistics {"<layer>/<name>": ...})``
    holding them, inside one GuidedStyleTerm on the output's masks."""
    layers, strides = targets.layers, targets.strides

    def statistics(features: Mapping[str, torch.Tensor], window: Window, guide: RegionGuide) -> dict[str, Statistic]:
        return guided_moments(features, window, layers, strides, guide, means="mean" in names)

    found = targets.cached(lambda: targets.per_region(statistics, names), list(targets.blend), layers, targets.styled)
    return GuidedStyleTerm({r: make_term(t) for r, t in found.items()}, targets.content_guide(), strides, names=names)


def _reaches_nothing(config: RenderConfig) -> dict[str, int]:
    return {}


def _holds_nothing(config: RenderConfig, layers: Mapping[str, FeatureInfo], height: int, width: int) -> int:
    return 0


@dataclass(frozen=True)
class StyleLoss:
    """A style loss's declaration (see the module docstring).

    ``build(targets) -> Term`` and ``guided(targets) -> Term`` (or None) return the term named
    "style" with its targets; ``extent(config)`` is {layer: positions}; ``memory(config, layers,
    height, width)`` the bytes its targets hold at a level of that size (``layers``: tap name ->
    FeatureInfo); ``method``: the config method whose ``style_loss`` names it ("mrf" is a method
    of its own); ``default_layers``: architecture -> the style layers it reads when the config's
    are the defaults.
    """

    name: str
    build: Callable[[StyleTargets], Term]
    guided: Callable[[StyleTargets], Term] | None
    extent: Callable[[RenderConfig], dict[str, int]] = _reaches_nothing
    memory: Callable[[RenderConfig, Mapping[str, FeatureInfo], int, int], int] = _holds_nothing
    method: str = "gram"
    default_layers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def register_style_loss(loss: StyleLoss) -> StyleLoss:
    """Declare ``loss`` (config, targets, regions and planner read it from then on)."""
    register_entry(loss)
    return loss


def style_loss_for(config: RenderConfig) -> StyleLoss:
    """The declaration a config asks for: its ``style_loss``, or the method's own (mrf)."""
    objective = config.objective
    name = objective.style_loss if objective.method == "gram" else objective.method
    entry = registered_entry(name, method=objective.method)
    if not isinstance(entry, StyleLoss):
        raise ConfigError(f"{name!r} is registered without a StyleLoss declaration", field="style_loss")
    return entry
