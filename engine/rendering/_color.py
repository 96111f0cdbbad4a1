"""Colour control: the content's colours after the render (luminance-only transfer), or the
style's colour distribution matched to the content's before it (Gatys et al., "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._config import RenderConfig
from .._errors import ConfigError

__all__ = ["match_color_histogram", "match_luminance_colors", "rgb_to_yiq", "transfer_style_colors"]

#: Floor of the style covariance's eigenvalues (relative to their mean) before its inverse root:
#: a flat-coloured style has none to invert.
_FLOOR = 1e-6

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


def _color_moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3,) and covariance (3, 3) of a (3, H, W) image's pixels, in float64."""
    pixels = image.reshape(3, -1).double()
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def _symmetric_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(_FLOOR * values.mean().clamp_min(1e-12))
    return (vectors * values.pow(power)) @ vectors.T


def match_color_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The (3, H, W) style with its colours' mean and covariance made the content's (3, H', W').

    The affine map x' = A (x - mu_s) + mu_c with A = Sigma_c^1/2 Sigma_s^-1/2 (symmetric roots):
    in the style's decorrelated colour space (its covariance's eigenvectors) each axis is
    whitened, then coloured by the content's (Gatys et al. 2017, section 5.1, as Hertzmann et
    al.'s Image Analogies match colours). Not clamped to [0, 1]: clamping would move the
    statistics, and the network takes any values."""
    style_mean, style_cov = _color_moments(style)
    content_mean, content_cov = _color_moments(content)
    transform = _symmetric_power(content_cov, 0.5) @ _symmetric_power(style_cov, -0.5)
    pixels = style.reshape(3, -1).double()
    matched = transform @ (pixels - style_mean[:, None]) + content_mean[:, None]
    return matched.reshape(style.shape).to(style.dtype)


def transfer_style_colors(config: RenderConfig, content: torch.Tensor | None,
                          styles: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The style images the render uses: with ``color_transfer = histogram``, each matched to
    the content's colours (once, at full resolution); otherwise as given."""
    if config.objective.colors != "histogram":
        return list(styles)
    if content is None:
        raise ConfigError("histogram matches the styles to the content's colours: give a content image",
                          field="color_transfer")
    return [match_color_histogram(style, content) for style in styles]
