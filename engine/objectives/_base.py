"""The objective contract: terms that tiling, the pyramid and masks serve without knowing them.

A render's loss is a weighted sum of named terms (content, style, tv, ...). Each term says how it
depends on the image, in one or more of three ways:

- **global statistics** (Gram matrices, means and covariances): ``statistics(features, window)``
  gives, per key, the mean of a per-position quantity over the positions the window owns and
  their count; means over several windows combine by count into the whole image's, and
  ``global_value(stats)`` computes the term from the complete statistics;
- **local values** (content, MRF patches): ``local_value(features, window, stats)`` is the share
  of the term that comes from the positions the window owns (already divided by the whole
  image's counts), so the shares of a partition of the image sum to the term;
- **pixel values** (total variation): ``pixel_value(image)`` on the whole image, once.

An ``Objective`` holds the terms and their weights and owns the one weighted total. The untiled
evaluation runs all of it on one ``Window.whole`` with autograd; the tiled one (rendering) sums
statistics over tiles, differentiates the global terms with respect to the statistics, and pulls
that gradient back through each tile's own statistics, which is exact (pystiche's split of
representation and score, with statistics as the representation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = ["Objective", "Window", "Statistic", "Term", "blend_statistics", "combine_statistics"]


@dataclass(frozen=True)
class Window:
    """The positions one evaluation owns: the interior [y0, y1) x [x0, x1) of an image of
    ``height`` x ``width`` pixels, computed from the crop [cy0, cy1) x [cx0, cx1) (interior
    plus halo). The whole image is one window with no halo."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int
    height: int
    width: int

    @classmethod
    def whole(cls, height: int, width: int) -> Window:
        return cls(0, height, 0, width, 0, height, 0, width, height, width)

    @property
    def is_whole(self) -> bool:
        return (self.y0, self.x0, self.y1, self.x1) == (0, 0, self.height, self.width)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.cy0:self.cy1, self.cx0:self.cx1]

    def interior(self, stride: int, features: torch.Tensor) -> tuple[slice, slice]:
        """The interior's rows and columns in the crop's feature map of the given stride."""
        top, left = (self.y0 - self.cy0) // stride, (self.x0 - self.cx0) // stride
        bottom = min(features.shape[2], top + -(-(self.y1 - self.y0) // stride))
        right = min(features.shape[3], left + -(-(self.x1 - self.x0) // stride))
        return slice(top, bottom), slice(left, right)

    def full_interior(self, stride: int, features: torch.Tensor) -> tuple[slice, slice]:
        """The same positions as ``interior``, in the whole image's feature map."""
        rows, cols = self.interior(stride, features)
        shift_r, shift_c = self.cy0 // stride, self.cx0 // stride
        return slice(rows.start + shift_r, rows.stop + shift_r), slice(cols.start + shift_c, cols.stop + shift_c)

    def owned(self, stride: int, features: torch.Tensor) -> torch.Tensor:
        """The crop's features at the interior positions (1, C, h, w)."""
        rows, cols = self.interior(stride, features)
        return features[:, :, rows, cols]


class Statistic(NamedTuple):
    """The mean of a per-position quantity over ``positions`` positions. (Not ``count``: that
    would shadow tuple.count, the method every tuple has.)"""

    mean: torch.Tensor
    positions: int


def combine_statistics(parts: Sequence[Mapping[str, Statistic]]) -> dict[str, Statistic]:
    """Means over disjoint windows -> the mean over their union (weighted by count)."""
    if len(parts) == 1:
        return dict(parts[0])
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for part in parts:
        for key, (mean, count) in part.items():
            if count == 0:
                continue
            contribution = mean * count
            sums[key] = sums[key] + contribution if key in sums else contribution
            counts[key] = counts.get(key, 0) + count
    return {key: Statistic(sums[key] / counts[key], counts[key]) for key in sums}


def blend_statistics(per_style: Sequence[Mapping[str, Statistic]], blend: Sequence[float]) -> dict[str, torch.Tensor]:
    """Target statistics {key: mean} of several styles, blended with weights normalised to 1."""
    total = float(sum(blend))
    targets: dict[str, torch.Tensor] = {}
    for stats, weight in zip(per_style, blend, strict=True):
        for key, (mean, _) in stats.items():
            contribution = mean * (weight / total)
            targets[key] = targets[key] + contribution if key in targets else contribution
    return targets


class Term:
    """One named term of an objective; override the parts it has (see the module docstring).

    ``layers``: the feature layers it reads. ``strides``: each layer's stride in pixels (set by
    the objective's builder from the backbone's metadata).
    """

    name: str = "term"
    layers: tuple[str, ...] = ()

    def __init__(self, strides: Mapping[str, int] | None = None) -> None:
        self.strides = dict(strides or {})

    def stride(self, layer: str) -> int:
        """A layer's stride in pixels (1 where none is known: whole-image evaluation only)."""
        return self.strides.get(layer, 1)

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return {}

    def global_value(self, stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        return None

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        return None

    def pixel_value(self, image: torch.Tensor) -> torch.Tensor | None:
        return None

    def extent(self) -> dict[str, int]:
        """Feature positions to the right and below an owned position that its value also reads
        (an MRF patch's k - 1), per layer: tiles widen their halo by this."""
        return {}


class Objective:
    """Weighted terms with the one weighted total.

    ``__call__(features, image)`` evaluates every term on the whole image (differentiable in
    both) and returns {term: value, ..., "total": weighted sum}. A term of weight 0 is not
    evaluated and reports 0.
    """

    def __init__(self, terms: Sequence[Term], weights: Mapping[str, float]) -> None:
        self.terms = {term.name: term for term in terms}
        if len(self.terms) != len(terms):
            raise ValueError(f"term names repeat: {[term.name for term in terms]}")
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.terms}
        self._active = [term for term in terms if self.weights[term.name] != 0]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for term in self._active for layer in term.layers))

    def extent(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for term in self._active:
            for layer, extra in term.extent().items():
                merged[layer] = max(merged.get(layer, 0), extra)
        return merged

    def statistics(self, features: Mapping[str, torch.Tensor], window: Window) -> dict[str, Statistic]:
        return {f"{term.name}/{key}": value for term in self._active
                for key, value in term.statistics(features, window).items()}

    def _own(self, term: Term, stats: Mapping[str, Statistic]) -> dict[str, Statistic]:
        prefix = f"{term.name}/"
        return {key[len(prefix):]: value for key, value in stats.items() if key.startswith(prefix)}

    def global_terms(self, stats: Mapping[str, Statistic]) -> dict[str, torch.Tensor]:
        values = {term.name: term.global_value(self._own(term, stats)) for term in self._active}
        return {name: value for name, value in values.items() if value is not None}

    def local_terms(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> dict[str, torch.Tensor]:
        values = {term.name: term.local_value(features, window, self._own(term, stats)) for term in self._active}
        return {name: value for name, value in values.items() if value is not None}

    def pixel_terms(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {term.name: term.pixel_value(image) for term in self._active}
        return {name: value for name, value in values.items() if value is not None}

    def total(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of ``values`` (any subset of the terms), in the terms' order."""
        total: torch.Tensor | None = None
        for name in self.terms:
            if name in values:
                weighted = self.weights[name] * values[name]
                total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError("no term to add up")
        return total

    def report(self, parts: Mapping[str, torch.Tensor], zero: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term's value in order (0 for inactive ones) and the total."""
        values = {name: parts.get(name, zero) for name in self.terms}
        return {**values, "total": self.total(parts) if parts else zero}

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        window = Window.whole(*image.shape[-2:])
        stats = self.statistics(features, window)
        constant = {key: Statistic(value.mean.detach(), value.positions) for key, value in stats.items()}
        parts = {**self.global_terms(stats), **self.local_terms(features, window, constant),
                 **self.pixel_terms(image)}
        return self.report(parts, image.new_zeros(()))
