"""The content term (Gatys et al.: feature reconstruction) and total variation."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._base import Window, Statistic, Term
from ._functional import EPS, total_variation

__all__ = ["ContentTerm", "TotalVariationTerm"]


class ContentTerm(Term):
    """Mean over layers of mean((F - C)^2) / mean(C^2) against targets fixed once (1, C, h, w).

    Local: a window contributes the squared errors at the positions it owns, divided by the
    whole map's size, so the windows of a partition add up to the term.
    """

    name = "content"

    def __init__(self, targets: Mapping[str, torch.Tensor] | None, strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.targets = dict(targets) if targets is not None else {}
        self.layers = tuple(self.targets)
        # Reciprocal target magnitudes, computed once rather than per iteration.
        self._scale = {layer: 1.0 / t.pow(2).mean().clamp_min(EPS) for layer, t in self.targets.items()}

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        if not self.targets:
            return None
        shares = []
        for layer, target in self.targets.items():
            stride = self.stride(layer)
            rows, cols = window.full_interior(stride, features[layer])
            error = window.owned(stride, features[layer]) - target[:, :, rows, cols]
            shares.append(error.pow(2).sum() / target.numel() * self._scale[layer])
        return shares[0] if len(shares) == 1 else torch.stack(shares).mean()


class TotalVariationTerm(Term):
    """mean(dx^2) + mean(dy^2) of the whole [0, 1] image (cheap and local in pixel space)."""

    name = "tv"

    def pixel_value(self, image: torch.Tensor) -> torch.Tensor:
        return total_variation(image)
