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

Contract (``_base``): every statistic is a mean over the positions a window of evaluation owns,
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

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from ._base import Window, Statistic, Term
from ._functional import EPS, gram

__all__ = ["GuidedStyleTerm", "RegionGuide", "guided_moments", "guided_shares", "normalized_region", "owned_masks"]


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

    def owned(self, stride: int, features: torch.Tensor, window: Window) -> torch.Tensor:
        """(K', h, w) masks at the positions of ``features`` (a crop's map) that ``region`` owns."""
        masks = self.full((window.height // stride, window.width // stride))
        rows, cols = window.full_interior(stride, features)
        return masks[:, rows, cols].to(features.device, features.dtype)


def owned_masks(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
           strides: Mapping[str, int], guide: RegionGuide) -> Iterator[tuple[str, torch.Tensor, int, torch.Tensor]]:
    """(layer, owned features (1, C, h, w), their count, the guided masks there (K', h, w)) for
    each layer where the window owns positions."""
    for layer in layers:
        stride = strides.get(layer, 1)
        inside = window.owned(stride, features[layer])
        positions = inside.shape[2] * inside.shape[3]
        if positions:
            yield layer, inside, positions, guide.owned(stride, features[layer], window)


def guided_moments(features: Mapping[str, torch.Tensor], window: Window, layers: Sequence[str],
                   strides: Mapping[str, int], guide: RegionGuide, *, means: bool) -> dict[str, Statistic]:
    """Per layer and guided region r: "<layer>/<r>/weight" (mean m^2, a scalar),
    "<layer>/<r>/second" (mean m^2 F F^T, (1, C, C)) and, with ``means``, "<layer>/<r>/mean"
    (mean m^2 F, (1, C)), over the window's owned positions (see the module docstring)."""
    stats = {}
    for layer, inside, positions, masks in owned_masks(features, window, layers, strides, guide):
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


def guided_shares(stats: Mapping[str, Statistic], regions: Sequence[int], layer: str) -> dict[int, torch.Tensor]:
    """Each region's share of the output's guidance weight at ``layer`` (constants: the masks do
    not depend on the image; tensors, so a GPU render does not wait for them)."""
    weights = {r: stats[f"{layer}/{r}/weight"].mean.detach() for r in regions}
    total = torch.stack(list(weights.values())).sum().clamp_min(EPS)
    return {r: weight / total for r, weight in weights.items()}


class GuidedStyleTerm(Term):
    """A term on guided moments per region: sum_r share_r * style_r(guided statistics of region r)
    (Gram: ``names`` ("second",); W2: ("mean", "second")).

    Args:
        per_region: region (label channel) -> the unguided term holding that region's targets,
            whose ``global_value`` reads {inner_key("<layer>/<name>"): Statistic}; regions absent
            here get no style term.
        guide: the output's soft masks.
        names: the guided moments the inner terms read.
        inner_key: how the inner term names a guided statistic (default: by layer alone for
            ("second",), Gram's; else "<layer>/<name>" as it is).
    """

    name = "style"

    def __init__(self, per_region: Mapping[int, Term], guide: RegionGuide, strides: Mapping[str, int] | None = None,
                 *, names: Sequence[str] = ("second",), inner_key: Callable[[str], str] | None = None) -> None:
        super().__init__(strides)
        self.per_region = dict(per_region)
        self.guide = RegionGuide(guide.labels, tuple(self.per_region))
        self.layers = next(iter(self.per_region.values())).layers
        self.names = tuple(names)
        # Gram's targets are keyed by layer alone; terms on several moments by "<layer>/<name>".
        self.inner_key = inner_key or ((lambda key: key.rsplit("/", 1)[0]) if self.names == ("second",) else str)

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return guided_moments(features, window, self.layers, self.strides, self.guide, means="mean" in self.names)

    def global_value(self, stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        total: torch.Tensor | None = None
        for r, share in guided_shares(stats, tuple(self.per_region), self.layers[0]).items():
            guided = normalized_region(stats, r, self.layers, self.names, check=False)
            assert guided is not None
            inner = {self.inner_key(key): Statistic(value, 1) for key, value in guided.items()}
            value = self.per_region[r].global_value(inner)
            assert value is not None
            total = value * share if total is None else total + value * share
        return total
