"""Colour control: the content's colours after the render (luminance-only transfer), or the
style's colour distribution matched to the content's before it (Gatys et al., "Controlling
Perceptual Factors in Neural Style Transfer", CVPR 2017, section 5); and the other way round,
the content in the style's palette, which the render starts from with ``init = palette``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._config import RenderConfig
from .._errors import ConfigError

__all__ = ["match_color_histogram", "match_luminance_colors", "palette_content", "rgb_to_yiq", "soften",
           "transfer_style_colors"]

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


def soften(masks: torch.Tensor) -> torch.Tensor:
    """(1, K, H, W) masks through two box blurs of about 1/100 of the long side each (a hard cut
    between regions would draw their outline); one-hot masks stay a partition of one."""
    radius = max(1, round(max(masks.shape[-2:]) / 200))
    for _ in range(2):
        masks = F.avg_pool2d(masks, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return masks


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
#: The most the palette start may stretch the photo's luminance (over steps of _SLOPE_STEP) and
#: its colour differences: a flat, noisy area (a grey sky, a JPEG's colour noise) would otherwise
#: be spread over the painting's whole range and come back as speckle (and, a level later, in
#: the detail band). On the quality benchmark's pairs the luminance curve's steepest step of 0.02
#: was 3.7 (6.7 for CNNMRF's portrait) and no colour direction was stretched by 8 (a cap of 4
#: did change them), so these limits leave those starts as they were.
_MAX_LUMINANCE_SLOPE = 8.0
_SLOPE_STEP = 0.02
_MAX_GAIN = 8.0
#: Colour differences (YIQ chrominance) below this spread count as noise, not as colour.
_CHROMA_NOISE = 0.01


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


def _limited_curve(x: torch.Tensor, y: torch.Tensor, slope: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The increasing curve through knots (x, y), sampled every ``step`` of x, with the slope
    between samples cut to ``slope`` and the curve pinned at its middle sample: a narrow, steep
    stretch (a flat, noisy area) no longer spreads its noise, and the rest keeps its place."""
    grid = torch.arange(float(x[0]), float(x[-1]) + step, step, dtype=x.dtype, device=x.device).clamp_max(x[-1])
    values = _interp(grid, x, y)
    limited = torch.cat([values[:1], values[:1] + torch.cumsum(torch.minimum(values.diff(), slope * grid.diff()), 0)])
    middle = grid.numel() // 2
    return grid, limited + (values[middle] - limited[middle])


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


def _centred_moments(rest: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean (C,) and covariance (C, C) of residuals (C, N) with weights (N,) summing to 1."""
    mean = rest @ weights
    centred = rest - mean[:, None]
    return mean, (centred * weights) @ centred.T


class _PaletteMap:
    """Pixels (3, N) in YIQ, float64, taken into the palette of a target's.

    Luminance by quantile: a source pixel at quantile q takes the target's luminance at q (the
    target's luminance histogram, the source's order), the curve's slope held to _MAX_LUMINANCE_SLOPE.
    Chrominance: the target's mean chrominance at q (in bands of luminance, interpolated between
    them), plus the pixel's own difference from the source's mean chrominance at q, mapped so that
    these differences take the covariance of the target's (``_coloring``; spreads below
    _CHROMA_NOISE are noise and not stretched, and no direction by more than _MAX_GAIN). So the
    colour that fills a luminance band of the photo (a blue sky) becomes the painting's colour at
    that luminance (The Scream's orange), and what stands out from it there (a red roof as bright)
    stays apart, in the painting's own spread of colours.

    Fitted on weighted pixel sets (a mixture of images is one, each image's pixels weighing its
    share), ``source`` and ``target`` (3, N) with weights (N,) > 0 summing to 1.
    """

    def __init__(self, source: torch.Tensor, source_weights: torch.Tensor, target: torch.Tensor,
                 target_weights: torch.Tensor) -> None:
        self.source_levels, self.source_knots = _quantile_knots(source[0], source_weights)
        target_levels, target_knots = _quantile_knots(target[0], target_weights)
        # The luminance curve: the target's luminance at each source level's quantile.
        self.curve = _limited_curve(self.source_levels, _interp(self.source_knots, target_knots, target_levels),
                                    _MAX_LUMINANCE_SLOPE, _SLOPE_STEP)
        source_q = self._quantile(source[0])
        target_q = _interp(target[0], target_levels, target_knots)
        bands = max(1, min(_PALETTE_BANDS, source.shape[1] // _BAND_PIXELS, target.shape[1] // _BAND_PIXELS))
        self.source_means, self.source_centres = _band_means(source_q, source[1:], source_weights, bands)
        self.target_means, self.target_centres = _band_means(target_q, target[1:], target_weights, bands)
        self.source_offset, source_cov = _centred_moments(
            source[1:] - _interp(source_q, self.source_centres, self.source_means), source_weights)
        self.target_offset, target_cov = _centred_moments(
            target[1:] - _interp(target_q, self.target_centres, self.target_means), target_weights)
        # Floor the source's spread: at the noise level, and so that no direction is stretched
        # by more than _MAX_GAIN to reach the target's widest.
        floor = max(_CHROMA_NOISE**2, float(torch.linalg.eigvalsh(target_cov)[-1]) / _MAX_GAIN**2)
        values, vectors = torch.linalg.eigh(source_cov)
        self.coloring = _coloring((vectors * values.clamp_min(floor)) @ vectors.T, target_cov)

    def _quantile(self, luminance: torch.Tensor) -> torch.Tensor:
        return _interp(luminance, self.source_levels, self.source_knots)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        q = self._quantile(pixels[0])
        luminance = _interp(pixels[0], *self.curve)
        rest = pixels[1:] - _interp(q, self.source_centres, self.source_means) - self.source_offset[:, None]
        chroma = (_interp(q, self.target_centres, self.target_means) + self.target_offset[:, None]
                  + self.coloring @ rest)
        return torch.cat([luminance[None], chroma])


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
    (each the size of its style), each region has its own map, fitted to the style pixels of the
    same label; region ``keep`` (the unstyled colour) and regions no style paints keep the photo's
    colours. The maps meet through the regions' softened masks (``soften``), so a border the photo
    does not have is not drawn into the start.
    """
    blend = [float(weight) for weight in blend] if blend is not None else [1.0] * len(styles)
    regions: list[tuple[torch.Tensor | None, list[torch.Tensor | None]]]
    if content_labels is None:
        regions = [(None, [None] * len(styles))]
    else:
        assert style_labels is not None
        regions = [(content_labels[0, label], [labels[0, label] for labels in style_labels])
                   for label in range(content_labels.shape[1])]
    maps: list[_PaletteMap | None] = []  # None: the photo's own colours
    for label, (inside, style_masks) in enumerate(regions):
        source, source_weights = _fit_pixels(content, inside)
        painted = [(pixels, weights * weight) for style, mask, weight in zip(styles, style_masks, blend, strict=True)
                   if weight > 0 for pixels, weights in [_fit_pixels(style, mask)] if weights.numel()]
        if label == keep or source.shape[1] < 2 or not painted:
            maps.append(None)
            continue
        maps.append(_PaletteMap(source, source_weights, torch.cat([p for p, _ in painted], dim=1),
                                torch.cat([w for _, w in painted]) / sum(float(w.sum()) for _, w in painted)))
    to_rgb = torch.linalg.inv(content.new_tensor(_YIQ, dtype=torch.float64))
    pixels = content.reshape(3, -1)
    shares = soften(content_labels.to(content)).reshape(len(maps), -1) if content_labels is not None else None
    result = torch.empty_like(pixels)
    for chunk in torch.arange(pixels.shape[1], device=pixels.device).split(_CHUNK):
        photo = pixels[:, chunk].double()
        yiq = rgb_to_yiq(photo[..., None])[..., 0]
        mapped = [photo if palette_map is None else (to_rgb @ palette_map(yiq)).clamp(0.0, 1.0) for palette_map in maps]
        if shares is None:
            result[:, chunk] = mapped[0].to(result.dtype)
        else:
            blended = sum(share[chunk].double() * image for share, image in zip(shares, mapped))
            result[:, chunk] = blended.to(result.dtype)
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
