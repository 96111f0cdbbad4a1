"""Colour control: the content's colours after the render (luminance-only transfer), or the
style's colour distribution matched to the content's before it (Gatys et al., "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, section 5); and the other way round,
the content in the style's palette, which the render starts from with ``init = palette``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._config import RenderConfig
from .._errors import ConfigError

__all__ = ["match_color_histogram", "match_luminance_colors", "palette_content", "rgb_to_yiq", "transfer_style_colors"]

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


def _coloring(source_cov: torch.Tensor, target_cov: torch.Tensor) -> torch.Tensor:
    """A = target^1/2 source^-1/2 (symmetric roots): whitening in the source's decorrelated space,
    then colouring with the target's, so A source A^T = target."""
    return _symmetric_power(target_cov, 0.5) @ _symmetric_power(source_cov, -0.5)


def match_color_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The (3, H, W) style with its colours' mean and covariance made the content's (3, H', W').

    The affine map x' = A (x - mu_s) + mu_c (see ``_coloring``; Gatys et al. 2017, section 5.1, as
    Hertzmann et al.'s Image Analogies match colours). Not clamped to [0, 1]: clamping would move
    the statistics, and the network takes any values."""
    style_mean, style_cov = _color_moments(style)
    content_mean, content_cov = _color_moments(content)
    pixels = style.reshape(3, -1).double()
    matched = _coloring(style_cov, content_cov) @ (pixels - style_mean[:, None]) + content_mean[:, None]
    return matched.reshape(style.shape).to(style.dtype)


#: Luminance bands of the palette start: equal shares of the pixels, at least _BAND_PIXELS each.
_PALETTE_BANDS = 32
_BAND_PIXELS = 16
#: The palette map is fitted on at most this many pixels of each side (an even subsample) and
#: applied to the content in chunks of _CHUNK pixels, so a 4K or 8K level needs little memory.
_FIT_PIXELS = 2**18
_CHUNK = 2**20


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp along the last axis of ``fp`` (..., n) at ``x`` (N,): piecewise linear through
    (xp, fp) with xp (n,) non-decreasing, constant beyond its ends."""
    if xp.numel() == 1:
        return fp[..., :1].expand(*fp.shape[:-1], x.numel())
    right = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    left = right - 1
    share = ((x - xp[left]) / (xp[right] - xp[left]).clamp_min(1e-12)).clamp(0.0, 1.0)
    return fp[..., left] + (fp[..., right] - fp[..., left]) * share


def _quantile_knots(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values, increasing, and each one's weighted mid-rank in (0, 1): the share of
    the weight below it plus half that of its equals (equal values share one quantile, so a flat
    area stays flat)."""
    distinct, group = torch.unique(values, sorted=True, return_inverse=True)
    group_weights = torch.zeros(distinct.numel(), dtype=weights.dtype, device=weights.device).index_add_(
        0, group, weights)
    return distinct, (torch.cumsum(group_weights, 0) - group_weights / 2) / group_weights.sum()


def _band_means(quantiles: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, bands: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted means (C, bands) of ``values`` (C, N) in equal-share bands of ``quantiles``, and
    the bands' centres; a band without weight is left out."""
    band = (quantiles * bands).long().clamp(0, bands - 1)
    total = torch.zeros(bands, dtype=values.dtype, device=values.device).index_add_(0, band, weights)
    sums = torch.zeros(values.shape[0], bands, dtype=values.dtype, device=values.device).index_add_(
        1, band, values * weights)
    kept = total > 0
    centres = (torch.arange(bands, dtype=values.dtype, device=values.device) + 0.5) / bands
    return sums[:, kept] / total[kept], centres[kept]


class _PaletteMap:
    """Pixels (3, N) in YIQ, float64, taken into the palette of a target's.

    Luminance by quantile: a source pixel at quantile q takes the target's luminance at q (the
    target's luminance histogram, the source's order). Chrominance: the target's mean chrominance
    at q (in bands of luminance, interpolated between them), plus the pixel's own difference from
    the source's mean chrominance at q, mapped so that these differences take the covariance of the
    target's (``_coloring``). So the colour that fills a luminance band of the photo (a blue sky)
    becomes the painting's colour at that luminance (The Scream's orange), and what stands out from
    it there (a red roof as bright) stays apart, in the painting's own spread of colours.

    Fitted on weighted pixel sets (a mixture of images is one, each image's pixels weighing its
    share), ``source`` and ``target`` (3, N) with weights (N,) > 0.
    """

    def __init__(self, source: torch.Tensor, source_weights: torch.Tensor, target: torch.Tensor,
                 target_weights: torch.Tensor) -> None:
        self.source_levels, self.source_knots = _quantile_knots(source[0], source_weights)
        self.target_levels, self.target_knots = _quantile_knots(target[0], target_weights)
        source_q = self._quantile(source[0])
        target_q = _interp(target[0], self.target_levels, self.target_knots)
        bands = max(1, min(_PALETTE_BANDS, source.shape[1] // _BAND_PIXELS, target.shape[1] // _BAND_PIXELS))
        self.source_means, self.source_centres = _band_means(source_q, source[1:], source_weights, bands)
        self.target_means, self.target_centres = _band_means(target_q, target[1:], target_weights, bands)
        source_rest = source[1:] - _interp(source_q, self.source_centres, self.source_means)
        target_rest = target[1:] - _interp(target_q, self.target_centres, self.target_means)
        self.coloring = _coloring(_weighted_covariance(source_rest, source_weights),
                                  _weighted_covariance(target_rest, target_weights))

    def _quantile(self, luminance: torch.Tensor) -> torch.Tensor:
        return _interp(luminance, self.source_levels, self.source_knots)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        q = self._quantile(pixels[0])
        luminance = _interp(q, self.target_knots, self.target_levels)
        rest = pixels[1:] - _interp(q, self.source_centres, self.source_means)
        chroma = _interp(q, self.target_centres, self.target_means) + self.coloring @ rest
        return torch.cat([luminance[None], chroma])


def _weighted_covariance(rest: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Covariance (C, C) of zero-mean-by-construction residuals (C, N) with weights (N,)."""
    return (rest * weights) @ rest.T / weights.sum()


def _fit_pixels(image: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An even subsample of at most _FIT_PIXELS YIQ pixels (3, n) of a (3, H, W) image in float64
    and their weights: the mask's (H, W) where it is positive, else ones; the weights sum to 1."""
    pixels = image.reshape(3, -1)
    weights = torch.ones_like(pixels[0]) if mask is None else mask.reshape(-1).to(pixels)
    inside = torch.nonzero(weights > 0).squeeze(1)
    inside = inside[:: max(1, -(-inside.numel() // _FIT_PIXELS))]
    chosen = weights[inside].double()
    return rgb_to_yiq(pixels[:, inside].double()[..., None])[..., 0], chosen / chosen.sum()


def palette_content(content: torch.Tensor, styles: Sequence[torch.Tensor], blend: Sequence[float] | None = None, *,
                    content_labels: torch.Tensor | None = None,
                    style_labels: Sequence[torch.Tensor] | None = None,
                    keep: int | None = None) -> torch.Tensor:
    """The content (3, H, W) in the styles' palette (``_PaletteMap``), clamped to [0, 1]; several
    styles are one mixture of their pixels, each style weighing its ``blend`` weight.

    Where the optimiser starts decides which colour of the painting lands where: from the photo, a
    blue sky stays the painting's nearest blue; from this, the sky takes the painting's colours at
    the sky's luminance, as neural-style's references (from noise, with ImageNet VGG19) have it.

    With semantic maps, one-hot ``content_labels`` (1, K, H, W) and ``style_labels`` [(1, K, h, w)]
    (each the size of its style), each region is mapped on its own to the style pixels of the same
    label; region ``keep`` (the unstyled colour) and regions no style paints keep their colours.
    """
    blend = [float(weight) for weight in blend] if blend is not None else [1.0] * len(styles)
    if content_labels is None:
        regions = [(None, [None] * len(styles))]
    else:
        assert style_labels is not None
        regions = [(content_labels[0, label], [labels[0, label] for labels in style_labels])
                   for label in range(content_labels.shape[1]) if label != keep]
    yiq = torch.linalg.inv(content.new_tensor(_YIQ, dtype=torch.float64))
    result = content.reshape(3, -1).clone()
    for inside, style_masks in regions:
        source, source_weights = _fit_pixels(content, inside)
        painted = [(pixels, weights * weight) for style, mask, weight in zip(styles, style_masks, blend, strict=True)
                   if weight > 0 for pixels, weights in [_fit_pixels(style, mask)] if weights.numel()]
        if source.shape[1] < 2 or not painted:
            continue
        palette_map = _PaletteMap(source, source_weights, torch.cat([p for p, _ in painted], dim=1),
                                  torch.cat([w for _, w in painted]))
        where = torch.arange(result.shape[1], device=result.device)
        if inside is not None:
            where = where[inside.reshape(-1) > 0]
        for chunk in where.split(_CHUNK):
            pixels = rgb_to_yiq(content.reshape(3, -1)[:, chunk].double()[..., None])[..., 0]
            result[:, chunk] = (yiq @ palette_map(pixels)).clamp(0.0, 1.0).to(result.dtype)
    return result.reshape(content.shape)


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
