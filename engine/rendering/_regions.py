"""Regions of one level: the unstyled region's content blended back into the result.

Each region's style targets are built by the loss's own guided variant (objectives.StyleLoss.guided,
through StyleTargets.per_region).
"""

from __future__ import annotations

import torch

from ._color import soften

__all__ = ["blend_unstyled"]


def blend_unstyled(image: torch.Tensor, content: torch.Tensor, labels: torch.Tensor, unstyled: int) -> torch.Tensor:
    """The content blended back into (1, 3, H, W) ``image`` where the map is the unstyled
    colour, through its softened mask."""
    mask = soften(labels[:, unstyled:unstyled + 1].to(image.dtype))
    return image * (1 - mask) + content.to(image) * mask
