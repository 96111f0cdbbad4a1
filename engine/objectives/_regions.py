"""Regions for the global style losses: guided statistics (Gatys et al., "Controlling Perceptual
Factors in Neural Style Transfer", CVPR 2017, section 4).

A semantic map (see ``_semantic``) gives one channel per palette colour. Each channel, averaged
down to a layer's resolution, is a soft guidance mask m_r (area averages, not nearest samples:
a position straddling a border belongs partly to both regions, so borders do not show). Region
r's statistics are those of the features weighted by m_r^2, as the paper's guided Gram

    G_r = sum_p m_r(p)^2 F_p F_p^T / sum_p m_r(p)^2

and the same weighting gives guided means and second moments (W2) and guided projection
histograms (sliced). Each region's output statistics are compared with the same region's
statistics of the style(s), by the unguided term's own formula.

Contract (``_base``): every statistic is a mean over the positions a region of evaluation owns,
with their count: "<layer>/<r>/weight" is mean m_r^2, "<layer>/<r>/second" mean m_r^2 F F^T,
"<layer>/<r>/mean" mean m_r^2 F, "<layer>/<r>/histogram" mean m_r^2 one-hot(bin). They combine
across tiles by count exactly, and the guided value is formed afterwards as the ratio, so tiled
evaluation stays exact.

Departure from the paper (which sums the regions' losses): each region's term is weighted by its
share of the output's guidance weight, so a one-region map is exactly the unguided loss, and a
small region does not get a whole image's pull per pixel. Regions left out of ``regions`` (the
unstyled colour) get no style term at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ._base import Region, Statistic, Term
from ._functional import EPS, gram
from ._gram import GramStyleTerm
from ._sliced import SlicedStyleTerm, _histogram, _projections
from ._w2 import W2StyleTerm

__all__ = ["GuidedStyleTerm", "GuidedSlicedTerm", "RegionGuide", "guided_moments", "guided_projection_statistics",
           "normalized_region"]


class RegionGuide:
    """Soft masks of one image's regions at each layer's resolution.

    Args:
        labels: (1, K, H, W) one-hot label channels of the image (``semantic_labels``).
        regions: the label channels that carry a style term (all but the unstyled one).
    """

    def __init__(self, labels: torch.Tensor, regions: Sequence[int]) -> None:
        self.labels = labels
        self.regions = tuple(regions)
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def full(self, shape: tuple[int, int]) -> torch.Tensor:
        """(K', h, w) masks of ``regions`` averaged down to a whole feature map of ``shape``."""
        if shape not in self._masks:
            averaged = F.adaptive_avg_pool2d(self.labels.float(), shape)[0]
            self._masks[shape] = averaged[list(self.regions)]
        return self._masks[shape]

    def owned(self, stride: int, features: torch.Tensor, region: Region) -> torch.Tensor:
        """(K', h, w) masks at the positions of ``features`` (a crop's map) that ``region`` owns."""
        masks = self.full((region.height // stride, region.width // stride))
        rows, cols = region.full_interior(stride, features)
        return masks[:, rows, cols].to(features.device, features.dtype)


def _owned(features: Mapping[str, torch.Tensor], region: Region, layers: Sequence[str],
           strides: Mapping[str, int], guide: RegionGuide) -> Iterator[tuple[str, torch.Tensor, int, torch.Tensor]]:
    """(layer, owned features (1, C, h, w), their count, the guided masks there (K', h, w)) for
    each layer where the region owns positions."""
    for layer in layers:
        stride = strides.get(layer, 1)
        inside = region.owned(stride, features[layer])
        positions = inside.shape[2] * inside.shape[3]
        if positions:
            yield layer, inside, positions, guide.owned(stride, features[layer], region)


def guided_moments(features: Mapping[str, torch.Tensor], region: Region, layers: Sequence[str],
                   strides: Mapping[str, int], guide: RegionGuide, *, means: bool) -> dict[str, Statistic]:
    """Per layer and guided region r: "<layer>/<r>/weight" (mean m^2, a scalar),
    "<layer>/<r>/second" (mean m^2 F F^T, (1, C, C)) and, with ``means``, "<layer>/<r>/mean"
    (mean m^2 F, (1, C)), over the region's owned positions (see the module docstring)."""
    stats = {}
    for layer, inside, positions, masks in _owned(features, region, layers, strides, guide):
        for r, mask in zip(guide.regions, masks):
            weighted = inside * mask  # m F: its Gram is mean m^2 F F^T
            second = gram(weighted)
            stats[f"{layer}/{r}/weight"] = Statistic(mask.pow(2).mean().to(second.dtype), positions)
            stats[f"{layer}/{r}/second"] = Statistic(second, positions)
            if means:
                stats[f"{layer}/{r}/mean"] = Statistic((weighted * mask).mean(dim=(2, 3), dtype=second.dtype),
                                                       positions)
    return stats


def normalized_region(stats: Mapping[str, Statistic], r: int, layers: Sequence[str], names: Sequence[str], *,
                      check: bool = True) -> dict[str, torch.Tensor] | None:
    """Region r's guided statistics {"<layer>/<name>": mean m^2 q / mean m^2}; with ``check``,
    None where the region has no weight at some layer (absent from this image at this size).
    Without, no host sync: an absent region's statistics come out 0."""
    found = {}
    for layer in layers:
        weight = stats[f"{layer}/{r}/weight"].mean.detach()
        if check and float(weight) <= 0:
            return None
        for name in names:
            found[f"{layer}/{name}"] = stats[f"{layer}/{r}/{name}"].mean / weight.clamp_min(EPS)
    return found


def _shares(stats: Mapping[str, Statistic], regions: Sequence[int], layer: str) -> dict[int, torch.Tensor]:
    """Each region's share of the output's guidance weight at ``layer`` (constants: the masks do
    not depend on the image; tensors, so a GPU render does not wait for them)."""
    weights = {r: stats[f"{layer}/{r}/weight"].mean.detach() for r in regions}
    total = torch.stack(list(weights.values())).sum().clamp_min(EPS)
    return {r: weight / total for r, weight in weights.items()}


class GuidedStyleTerm(Term):
    """Gram or W2 style per region: sum_r share_r * style_r(guided statistics of region r).

    Args:
        per_region: region (label channel) -> the unguided term holding that region's targets
            (GramStyleTerm or W2StyleTerm); regions absent here get no style term.
        guide: the output's soft masks.
    """

    name = "style"

    def __init__(self, per_region: Mapping[int, GramStyleTerm | W2StyleTerm], guide: RegionGuide,
                 strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.per_region = dict(per_region)
        self.guide = RegionGuide(guide.labels, tuple(self.per_region))
        first = next(iter(self.per_region.values()))
        self.layers = first.layers
        self._w2 = isinstance(first, W2StyleTerm)

    def statistics(self, features: Mapping[str, torch.Tensor], region: Region) -> dict[str, Statistic]:
        return guided_moments(features, region, self.layers, self.strides, self.guide, means=self._w2)

    def global_value(self, stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        total: torch.Tensor | None = None
        for r, share in _shares(stats, tuple(self.per_region), self.layers[0]).items():
            guided = normalized_region(stats, r, self.layers, ("mean", "second") if self._w2 else ("second",),
                                       check=False)
            assert guided is not None
            if self._w2:
                inner = {key: Statistic(value, 1) for key, value in guided.items()}
            else:
                inner = {key.rsplit("/", 1)[0]: Statistic(value, 1) for key, value in guided.items()}
            value = self.per_region[r].global_value(inner) * share
            total = value if total is None else total + value
        return total


def guided_projection_statistics(features: Mapping[str, torch.Tensor], region: Region, layers: Sequence[str],
                                 strides: Mapping[str, int], guide: RegionGuide,
                                 directions: Mapping[str, torch.Tensor], low: Mapping[str, torch.Tensor],
                                 width: Mapping[str, torch.Tensor], bins: int, *,
                                 moments: bool = False) -> dict[str, Statistic]:
    """Per layer and guided region r: "<layer>/<r>/weight" and "<layer>/<r>/histogram" (mean
    m^2 one-hot(bin), (K, bins)); ``moments`` adds "<layer>/<r>/mean" and "<layer>/<r>/square"
    (mean m^2 p and m^2 p^2, (K,)). No gradient (constants, as the unguided histograms)."""
    stats = {}
    with torch.no_grad():
        for layer, inside, positions, masks in _owned(features, region, layers, strides, guide):
            projected = _projections(inside, directions[layer])
            for r, mask in zip(guide.regions, masks):
                weight = mask.pow(2).reshape(-1).to(projected.dtype)
                stats[f"{layer}/{r}/weight"] = Statistic(weight.mean(), positions)
                stats[f"{layer}/{r}/histogram"] = Statistic(
                    _histogram(projected, low[layer], width[layer], bins, weights=weight), positions)
                if moments:
                    stats[f"{layer}/{r}/mean"] = Statistic((projected * weight).mean(dim=1), positions)
                    stats[f"{layer}/{r}/square"] = Statistic((projected.pow(2) * weight).mean(dim=1), positions)
    return stats


class GuidedSlicedTerm(Term):
    """Sliced Wasserstein per region: each position's projections are pulled toward the
    transport map of every region it belongs to, weighted by m_r^2 and the region's share:

        sum_r share_r * sum_l w_l sum_k sum_i m_r(i)^2 (p_ik - T_rk(p_ik))^2 / (N mean m_r^2) / sum_k Var_s,r

    with T_r from region r's guided histograms (the image's and the style's).

    Args:
        per_region: region -> SlicedStyleTerm holding that region's target (all with the same
            directions and bins).
        guide: the output's soft masks.
    """

    name = "style"

    def __init__(self, per_region: Mapping[int, SlicedStyleTerm], guide: RegionGuide,
                 strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.per_region = dict(per_region)
        self.guide = RegionGuide(guide.labels, tuple(self.per_region))
        first = next(iter(self.per_region.values()))
        self.layers, self.target, self.bins = first.layers, first.target, first.bins

    def statistics(self, features: Mapping[str, torch.Tensor], region: Region) -> dict[str, Statistic]:
        target = self.target
        return guided_projection_statistics(features, region, self.layers, self.strides, self.guide,
                                            target.directions, target.low, target.width, self.bins)

    def local_value(self, features: Mapping[str, torch.Tensor], region: Region,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        term: torch.Tensor | None = None
        shares = _shares(stats, tuple(self.per_region), self.layers[0])
        for layer, inside, _, masks in _owned(features, region, self.layers, self.strides, self.guide):
            projected = _projections(inside, self.target.directions[layer])
            for r, mask in zip(self.guide.regions, masks):
                weight = stats[f"{layer}/{r}/weight"]
                histogram = stats[f"{layer}/{r}/histogram"].mean / weight.mean.clamp_min(EPS)
                inner = self.per_region[r]
                matched = inner.transport_targets(layer, projected.detach(), histogram)
                pulls = ((projected - matched).pow(2) * mask.pow(2).reshape(1, -1)).sum()
                share = pulls / (weight.count * weight.mean.clamp_min(EPS)) * inner.layer_scale(layer) * shares[r]
                term = share if term is None else term + share
        return term
