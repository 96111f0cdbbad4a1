"""Colour handling after the render."""

from __future__ import annotations

import torch

__all__ = ["match_luminance_colors", "rgb_to_yiq"]

_YIQ = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> YIQ (NTSC)."""
    return torch.einsum("ij,...jhw->...ihw", image.new_tensor(_YIQ), image)


def match_luminance_colors(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the stylised image's luminance (Y of YIQ) and the content's chrominance (I, Q).

    neural-style's ``-original_colors 1``: the style transfers brush strokes and contrast only.
    Both images (..., 3, H, W) of the same size; returns the same shape clamped to [0, 1].
    """
    yiq = torch.cat([rgb_to_yiq(stylised)[..., :1, :, :], rgb_to_yiq(content)[..., 1:, :, :]], dim=-3)
    inverse = torch.linalg.inv(stylised.new_tensor(_YIQ))
    return torch.einsum("ij,...jhw->...ihw", inverse, yiq).clamp(0.0, 1.0)
