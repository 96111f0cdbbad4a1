"""Sliced Wasserstein style (Heitz et al., CVPR 2021; histogram matching as Risser et al., 2017):
a local term on global histogram statistics.

Each layer's features are projected on K fixed random unit directions (K = C by default: an
orthonormal basis) and each projection's 1-D distribution is matched to the style's: the
projection p of each position is pulled toward T(p) = Q_s(F_x(p)), where it lands under the
monotone map carrying the image's distribution onto the style's (F_x the image's CDF, Q_s the
style's quantile function); T is held constant (stop-gradient), as in both papers:

    sliced_l = sum_k mean_i (p_ik - T_k(p_ik))^2 / sum_k Var_s(p_k)

Normalisation (as for the other terms, see ``_functional``): relative to the style projections'
total variance, the exact sliced W2^2 of an image whose projections all sit at the style's mean,
so the term reads in units of the style's spread at every layer; layer weights are normalised to
sum to 1.

Departures from the papers, for tiling and reproducibility. Heitz et al. sort the image's
projections (the exact 1-D optimal transport), which is not a sum over positions. Here F_x comes
from a histogram on B fixed bins per direction spanning the style's projection range (widened by
half a bin on each side; projections outside count in the edge bins): the bin occupancy is a mean
of one-hot indicators over positions, a global statistic that tiles combine exactly by count, and
each position's pull is then local. F_x and Q_s are the piecewise-linear CDFs of the image's and
the style's histograms on the same bins (uniform within a bin), so T is the identity when the two
histograms agree (the term is 0 for image == style); against exact sorting (the reference
``sliced_wasserstein``) a pull differs by about a bin width, and equal projections share one
target where sorting would spread them over the style's quantiles. Heitz et al. draw new
directions every step; fixed, seeded ones keep the objective deterministic, so a render
reproduces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._base import Window, Statistic, Term, blend_statistics, combine_statistics
from ._functional import EPS
from ._regions import RegionGuide, guided_shares, owned_masks
from ._registry import StyleLoss, StyleTargets, register_style_loss

__all__ = ["BINS", "GuidedSlicedTerm", "SlicedStyleTerm", "SlicedTarget", "build_sliced_target",
           "guided_projection_statistics", "projection_histograms", "random_directions", "sliced_wasserstein"]

#: Histogram bins per direction.
BINS = 256
#: Directions x positions handled at once when binning and matching (bounds the temporaries).
_CHUNK = 1 << 22


def random_directions(channels: int, count: int | None = None, *, seed: int) -> torch.Tensor:
    """(count, channels) random unit rows, float64 on the CPU: blocks of orthonormal rows (QR of
    a seeded Gaussian matrix, signs fixed so the basis is uniformly distributed); count defaults
    to ``channels`` (one orthonormal basis)."""
    count = channels if count is None else count
    generator = torch.Generator().manual_seed(seed)
    blocks, left = [], count
    while left > 0:
        q, r = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        blocks.append(q.T[:min(left, channels)])
        left -= channels
    return torch.cat(blocks)


def sliced_wasserstein(features: torch.Tensor, style_features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Exact sliced Wasserstein by sorting (the reference): (B, C, H, W) features, (B, C, H', W')
    style features, (K, C) directions -> (B,) sum over directions of the mean over the image's
    positions of (p_(i) - q((i + 1/2) / N))^2, p_(i) the sorted projections and q the style's
    quantile function, interpolated linearly between its sorted projections at (j + 1/2) / N'
    (the sorted projections themselves when N == N')."""
    image = torch.einsum("kc,bcn->bkn", directions, features.flatten(2)).sort(dim=-1).values
    style = torch.einsum("kc,bcn->bkn", directions, style_features.flatten(2)).sort(dim=-1).values
    count, style_count = image.shape[-1], style.shape[-1]
    if count != style_count:
        at = ((torch.arange(count, dtype=image.dtype, device=image.device) + 0.5) * style_count / count - 0.5)
        at = at.clamp(0, style_count - 1)
        below = at.floor().long()
        above = (below + 1).clamp(max=style_count - 1)
        fraction = at - below
        style = style[..., below] * (1 - fraction) + style[..., above] * fraction
    return (image - style).pow(2).mean(dim=-1).sum(dim=-1)


def _projections(inside: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) features -> (K, h w) projections."""
    return directions.to(inside.dtype) @ inside.reshape(inside.shape[1], -1)


def _rows(projections: torch.Tensor) -> list[slice]:
    """Row chunks of (K, n) so that each holds about _CHUNK values."""
    step = max(1, _CHUNK // max(1, projections.shape[1]))
    return [slice(start, start + step) for start in range(0, projections.shape[0], step)]


def _histogram(projections: torch.Tensor, low: torch.Tensor, width: torch.Tensor, bins: int, *,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Share of each row's values per bin (K, bins); values outside the bins count in the edge ones.
    ``weights`` (n,): each position counts with its weight (guided regions), still divided by n."""
    rows = []
    for part in _rows(projections):
        index = ((projections[part] - low[part, None]) / width[part, None]).floor().clamp(0, bins - 1).long()
        index = index + torch.arange(index.shape[0], device=index.device)[:, None] * bins
        counted = None if weights is None else weights.expand(index.shape).flatten()
        rows.append(torch.bincount(index.flatten(), weights=counted, minlength=index.shape[0] * bins).reshape(-1, bins))
    return torch.cat(rows).to(projections.dtype) / projections.shape[1]


def _cdf(histogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CDF of a (K, B) bin occupancy at each bin's left and right edge (K, B) each, from one
    cumulative sum (so a bin's mass is exactly right - left, and the right edges are sorted)."""
    right = histogram.cumsum(dim=1)
    return torch.cat([torch.zeros_like(right[:, :1]), right[:, :-1]], dim=1), right


def projection_histograms(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
                          strides: Mapping[str, int], directions: Mapping[str, torch.Tensor],
                          low: Mapping[str, torch.Tensor], width: Mapping[str, torch.Tensor], *,
                          bins: int = BINS, moments: bool = False) -> dict[str, Statistic]:
    """{"<layer>/histogram": (bin occupancy (K, bins), count)} over the window's owned positions,
    with no gradient (a constant); ``moments`` adds "<layer>/mean" and "<layer>/square", the
    projections' mean and mean square (K,) (the style's variance)."""
    stats = {}
    with torch.no_grad():
        for layer in layers:
            inside = window.owned(strides.get(layer, 1), features[layer])
            positions = inside.shape[2] * inside.shape[3]
            if not positions:
                continue
            projected = _projections(inside, directions[layer])
            stats[f"{layer}/histogram"] = Statistic(_histogram(projected, low[layer], width[layer], bins), positions)
            if moments:
                stats[f"{layer}/mean"] = Statistic(projected.mean(dim=1), positions)
                stats[f"{layer}/square"] = Statistic(projected.pow(2).mean(dim=1), positions)
    return stats


@dataclass(frozen=True)
class SlicedTarget:
    """The style's side of the sliced term, per layer: ``directions`` (K, C) unit rows, the bins
    (``low`` (K,) and ``width`` (K,): bin b of row k is [low_k + b width_k, low_k + (b+1) width_k)),
    the style's bin occupancy ``histogram`` (K, B) and its projections' total variance
    ``variance`` (a scalar tensor)."""

    directions: dict[str, torch.Tensor]
    low: dict[str, torch.Tensor]
    width: dict[str, torch.Tensor]
    histogram: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]


#: over_windows(image, compute) -> [compute(features of a window's crop, window) for each window]
OverWindows = Callable[[torch.Tensor, Callable[[Mapping[str, torch.Tensor], Window], Any]], list[Any]]


@torch.no_grad()
def build_sliced_target(over_windows: OverWindows, styles: Sequence[torch.Tensor], blend: Sequence[float],
                        layers: Sequence[str], strides: Mapping[str, int], channels: Mapping[str, int], *,
                        seed: int, bins: int = BINS, directions_per_layer: int | None = None) -> SlicedTarget:
    """The blended styles' target in two passes over each style's windows (tile by tile where
    ``over_windows`` tiles): the projections' range (min and max over the styles of positive
    weight), then their histograms and moments, blended with weights normalised to 1.
    Directions: ``random_directions`` per layer, seeded with ``seed`` + the layer's index."""
    directions: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(layers):
        directions[layer] = random_directions(channels[layer], directions_per_layer, seed=seed + index)

    def extremes(features: Mapping[str, torch.Tensor], window: Window) -> dict[str, torch.Tensor]:
        found = {}
        for layer in layers:
            inside = window.owned(strides.get(layer, 1), features[layer])
            if inside.shape[2] * inside.shape[3]:
                projected = _projections(inside, directions[layer].to(inside.device))
                found[layer] = torch.stack([projected.amin(dim=1), projected.amax(dim=1)])
        return found

    weighted = [(style, weight) for style, weight in zip(styles, blend, strict=True) if weight > 0]
    smallest: dict[str, torch.Tensor] = {}
    largest: dict[str, torch.Tensor] = {}
    for style, _ in weighted:
        for part in over_windows(style, extremes):
            for layer, (least, most) in part.items():
                smallest[layer] = torch.minimum(smallest[layer], least) if layer in smallest else least
                largest[layer] = torch.maximum(largest[layer], most) if layer in largest else most
    low, width = {}, {}
    for layer in smallest:
        directions[layer] = directions[layer].to(smallest[layer])
        # B bins of equal width, the extreme values at the centres of the edge bins.
        scale = torch.maximum(smallest[layer].abs(), largest[layer].abs())
        width[layer] = torch.maximum((largest[layer] - smallest[layer]) / (bins - 1), 1e-6 * scale + EPS)
        low[layer] = smallest[layer] - width[layer] / 2

    def statistics(features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return projection_histograms(features, window, layers, strides, directions, low, width, bins=bins,
                                     moments=True)

    per_style = [combine_statistics(over_windows(style, statistics)) for style, _ in weighted]
    blended = blend_statistics(per_style, [weight for _, weight in weighted])
    return SlicedTarget(
        directions={layer: directions[layer] for layer in layers}, low=low, width=width,
        histogram={layer: blended[f"{layer}/histogram"] for layer in layers},
        variance={layer: (blended[f"{layer}/square"] - blended[f"{layer}/mean"].pow(2)).sum() for layer in layers})


class SlicedStyleTerm(Term):
    """sum_l w_l sum_k mean_i (p_ik - T_k(p_ik))^2 / sum_k Var_s(p_k) (see the module docstring).

    Global statistics: the image's bin occupancy per layer (constant: no gradient flows through
    the matching, as in the papers). Local values: a window's share of the pulls, summed over the
    positions it owns and divided by the whole image's count.
    """

    name = "style"

    def __init__(self, target: SlicedTarget, layer_weights: Mapping[str, float],
                 strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.target = target
        self.layers = tuple(layer_weights)
        total = sum(layer_weights.values())
        self.bins = next(iter(target.histogram.values())).shape[1]
        # Precomputed once: the style's CDF at the bins' edges, and the layer scales.
        self._cdf = {layer: _cdf(target.histogram[layer]) for layer in self.layers}
        self._scale = {layer: layer_weights[layer] / total / target.variance[layer].clamp_min(EPS)
                       for layer in self.layers}

    def layer_scale(self, layer: str) -> torch.Tensor:
        """A layer's weight over the style projections' total variance (multiplies its pulls)."""
        return self._scale[layer]

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        target = self.target
        return projection_histograms(features, window, self.layers, self.strides, target.directions, target.low,
                                     target.width, bins=self.bins)

    @torch.no_grad()
    def transport_targets(self, layer: str, projections: torch.Tensor, histogram: torch.Tensor) -> torch.Tensor:
        """T(p) of (K, n) projections given the image's bin occupancy (K, B): through the image's
        piecewise-linear CDF to the style's quantile (see the module docstring)."""
        target, bins, dtype = self.target, self.bins, projections.dtype
        image_left, image_right = (edge.to(dtype) for edge in _cdf(histogram))
        style_left, style_right = (edge.to(dtype) for edge in self._cdf[layer])
        matched = torch.empty_like(projections)
        for part in _rows(projections):
            low, width = target.low[layer][part, None].to(dtype), target.width[layer][part, None].to(dtype)
            position = ((projections[part] - low) / width).clamp(0, bins)
            index = position.floor().clamp(max=bins - 1)
            image_bin = index.long()
            left = image_left[part].gather(1, image_bin)
            level = left + (image_right[part].gather(1, image_bin) - left) * (position - index)
            # The style's bin where its CDF reaches ``level``: left[b] < level <= right[b].
            style_bin = torch.searchsorted(style_right[part].contiguous(), level.contiguous()).clamp(max=bins - 1)
            left, right = style_left[part].gather(1, style_bin), style_right[part].gather(1, style_bin)
            inside = ((level - left) / (right - left).clamp_min(EPS)).clamp(0, 1)
            matched[part] = low + width * (style_bin + inside)
        return matched

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        term: torch.Tensor | None = None
        for layer in self.layers:
            inside = window.owned(self.stride(layer), features[layer])
            if not inside.shape[2] * inside.shape[3]:
                continue
            histogram = stats[f"{layer}/histogram"]
            projected = _projections(inside, self.target.directions[layer])
            matched = self.transport_targets(layer, projected.detach(), histogram.mean)
            share = (projected - matched).pow(2).sum() / histogram.positions * self._scale[layer]
            term = share if term is None else term + share
        return term


# --- regions (Gatys et al. 2017's guided statistics, see objectives._regions) ------------------


def guided_projection_statistics(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
                                 strides: Mapping[str, int], guide: RegionGuide,
                                 directions: Mapping[str, torch.Tensor], low: Mapping[str, torch.Tensor],
                                 width: Mapping[str, torch.Tensor], bins: int, *,
                                 moments: bool = False) -> dict[str, Statistic]:
    """Per layer and guided region r: "<layer>/<r>/weight" and "<layer>/<r>/histogram" (mean
    m^2 one-hot(bin), (K, bins)); ``moments`` adds "<layer>/<r>/mean" and "<layer>/<r>/square"
    (mean m^2 p and m^2 p^2, (K,)). No gradient (constants, as the unguided histograms)."""
    stats = {}
    with torch.no_grad():
        for layer, inside, positions, masks in owned_masks(features, window, layers, strides, guide):
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

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        target = self.target
        return guided_projection_statistics(features, window, self.layers, self.strides, self.guide,
                                            target.directions, target.low, target.width, self.bins)

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        term: torch.Tensor | None = None
        shares = guided_shares(stats, tuple(self.per_region), self.layers[0])
        for layer, inside, _, masks in owned_masks(features, window, self.layers, self.strides, self.guide):
            projected = _projections(inside, self.target.directions[layer])
            for r, mask in zip(self.guide.regions, masks):
                weight = stats[f"{layer}/{r}/weight"]
                histogram = stats[f"{layer}/{r}/histogram"].mean / weight.mean.clamp_min(EPS)
                inner = self.per_region[r]
                matched = inner.transport_targets(layer, projected.detach(), histogram)
                pulls = ((projected - matched).pow(2) * mask.pow(2).reshape(1, -1)).sum()
                share = pulls / (weight.positions * weight.mean.clamp_min(EPS)) * inner.layer_scale(layer) * shares[r]
                term = share if term is None else term + share
        return term


# --- the declaration -----------------------------------------------------------------------------


def _build(targets: StyleTargets) -> Term:
    target = targets.cached(lambda: build_sliced_target(
        targets.over_windows, targets.styles, targets.blend, targets.layers, targets.strides, targets.channels,
        seed=targets.seed), list(targets.blend), targets.layers)
    return SlicedStyleTerm(target, targets.layer_weights, targets.strides)


def _guided_targets(targets: StyleTargets) -> dict[int, SlicedTarget]:
    """Each region's sliced target: the directions and bins of the unguided target (which span
    every style's projections), with the region's guided histograms and variances."""
    layers, strides = targets.layers, targets.strides
    base = build_sliced_target(targets.over_windows, targets.styles, targets.blend, layers, strides, targets.channels,
                               seed=targets.seed)
    bins = next(iter(base.histogram.values())).shape[1]

    def statistics(features: Mapping[str, torch.Tensor], window: Window, guide: RegionGuide) -> dict[str, Statistic]:
        return guided_projection_statistics(features, window, layers, strides, guide, base.directions, base.low,
                                            base.width, bins, moments=True)

    found = targets.per_region(statistics, ("histogram", "mean", "square"))
    return {r: SlicedTarget(
        directions=base.directions, low=base.low, width=base.width,
        histogram={layer: stats[f"{layer}/histogram"] for layer in layers},
        variance={layer: (stats[f"{layer}/square"] - stats[f"{layer}/mean"].pow(2)).sum() for layer in layers})
        for r, stats in found.items()}


def _build_guided(targets: StyleTargets) -> Term:
    found = targets.cached(lambda: _guided_targets(targets), list(targets.blend), targets.layers, targets.styled)
    return GuidedSlicedTerm({r: SlicedStyleTerm(target, targets.layer_weights, targets.strides)
                             for r, target in found.items()}, targets.content_guide(), targets.strides)


SLICED = register_style_loss(StyleLoss("sliced", _build, _build_guided))
