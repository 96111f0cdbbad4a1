"""MRF term (Li & Wand, CVPR 2016), with neural-doodle's semantic maps.

Every k x k patch of the output's features (synthesis stride) is matched to the style patch with
the highest normalised cross-correlation (the bank: every style patch at the style stride, from
the style image and optionally its rotated and scaled copies), and pulled toward it:

    mrf_l = mean_i |p_i - s_NN(i)|^2 / mean_j |s_j|^2

Normalisation (departs from CNNMRF's plain sum on purpose): a mean over patches, relative to the
bank's mean squared patch norm, so a layer's term is ~1 when patches are as far from their match
as a patch is long, at any size, stride or backbone.

Semantic maps: each map's one-hot label channels, downsampled to each layer, have their k x k
patches appended to the *normalised* feature patches with weight sqrt(map_weight) for matching
only, so the match maximises cos(features) + map_weight * cos(labels): patches match within the
same region.

A local term: each synthesis patch belongs to the window that owns its top-left position; the
patch's other positions lie within the term's extent (k - 1 positions), which tiles add to their
halo, so a window's patches are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from styleforge.kernels import extract_patches, mrf_nearest, normalize_patches

from .._backbone import FeatureInfo
from .._config import RenderConfig
from ._base import Objective, Window, Statistic, Term
from ._content import ContentTerm, TotalVariationTerm
from ._functional import EPS
from ._registry import StyleLoss, StyleTargets, register_style_loss

__all__ = ["MRFTerm", "PatchBank", "build_patch_bank", "mrf_objective", "style_variants"]


def _transform(image: torch.Tensor, degrees: float, scale: float) -> torch.Tensor:
    """Rotate (1, C, H, W) about its centre and scale it, reflecting at the borders."""
    if degrees == 0 and scale == 1:
        return image
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = image.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])[None]
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def style_variants(rotations: int, rotation_step: float, scales: int, scale_step: float) -> list[tuple[float, float]]:
    """(degrees, scale) of every style copy: (2 rotations + 1) x (2 scales + 1), original first."""
    pairs = [(k * rotation_step, 1.0 + j * scale_step)
             for k in range(-rotations, rotations + 1) for j in range(-scales, scales + 1)]
    pairs.sort(key=lambda pair: pair != (0.0, 1.0))
    return pairs


@dataclass(frozen=True)
class PatchBank:
    """The style's patches per layer: ``raw`` (N, C k k), the pull targets, and ``match``, the
    same rows normalised (with weighted label patches appended when maps are in use)."""

    raw: dict[str, torch.Tensor]
    match: dict[str, torch.Tensor]


def _label_patches(labels: torch.Tensor, shape: Sequence[int], patch_size: int, stride: int) -> torch.Tensor:
    """Normalised k x k patches of one-hot labels (1, K, H, W) downsampled to a layer's (H, W)."""
    height, width = shape[-2:]
    small = F.adaptive_avg_pool2d(labels, (height, width))
    return normalize_patches(extract_patches(small, patch_size, stride))


@torch.no_grad()
def build_patch_bank(
    features_of: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    styles: Sequence[torch.Tensor],
    layers: Sequence[str],
    *,
    patch_size: int,
    style_stride: int,
    variants: Sequence[tuple[float, float]] = ((0.0, 1.0),),
    style_labels: Sequence[torch.Tensor] | None = None,
    map_scale: float = 0.0,
) -> PatchBank:
    """Every style patch of every (1, 3, H, W) style and each of its (degrees, scale) copies."""
    raw: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    match: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for index, style in enumerate(styles):
        labels = style_labels[index] if style_labels is not None else None
        for degrees, scale in variants:
            features = features_of(_transform(style, degrees, scale))
            turned = _transform(labels, degrees, scale) if labels is not None else None
            for layer in layers:
                patches = extract_patches(features[layer], patch_size, style_stride)
                raw[layer].append(patches)
                normalized = normalize_patches(patches.float())
                if turned is not None and map_scale != 0:
                    label_patches = _label_patches(turned, features[layer].shape, patch_size, style_stride)
                    normalized = torch.cat([normalized, map_scale * label_patches], dim=1)
                match[layer].append(normalized)
    return PatchBank({layer: torch.cat(raw[layer]) for layer in layers},
                     {layer: torch.cat(match[layer]) for layer in layers})


class MRFTerm(Term):
    """sum_l w_l mean_i |p_i - s_NN(i)|^2 / mean_j |s_j|^2 against a bank built once per level.

    Args:
        bank: the style patches (see build_patch_bank).
        layer_weights: MRF layer -> weight (normalised to sum 1).
        content_labels: (1, K, H, W) one-hot label map of the output, or None (no doodle).
        map_scale: sqrt(map_weight) when maps are in use.
        confidence: pull only patches whose best match scores at least this NCC.
        unstyled: the label channel of the unstyled colour: a patch is pulled in proportion to
            the share of it outside that region (0 inside it: no style term there).
    """

    name = "style"

    def __init__(self, bank: PatchBank, layer_weights: Mapping[str, float], strides: Mapping[str, int] | None = None, *,
                 patch_size: int, synthesis_stride: int, content_labels: torch.Tensor | None = None,
                 map_scale: float = 0.0, confidence: float | None = None, unstyled: int | None = None) -> None:
        super().__init__(strides)
        self.layers = tuple(layer_weights)
        total = sum(layer_weights.values())
        self.layer_weights = {layer: weight / total for layer, weight in layer_weights.items()}
        self.bank = bank
        self.patch_size, self.synthesis_stride = patch_size, synthesis_stride
        self.confidence = confidence
        self.content_labels = content_labels
        self.map_scale = map_scale if content_labels is not None else 0.0
        self._bank_scale = {layer: 1.0 / bank.raw[layer].pow(2).sum(1).mean().clamp_min(EPS) for layer in self.layers}
        self._content_label_patches: dict[tuple, torch.Tensor] = {}
        self.unstyled = unstyled if content_labels is not None else None
        self._styled_shares: dict[tuple, torch.Tensor] = {}

    def extent(self) -> dict[str, int]:
        return dict.fromkeys(self.layers, self.patch_size - 1)

    def label_grid(self, layer: str, shape: Sequence[int]) -> torch.Tensor | None:
        """The output's weighted label patches for a layer's full (H, W), row-major like
        extract_patches (None without maps). Cut once per level: they do not change."""
        if self.content_labels is None or self.map_scale == 0:
            return None
        key = (layer, tuple(shape[-2:]))
        if key not in self._content_label_patches:
            self._content_label_patches[key] = self.map_scale * _label_patches(
                self.content_labels, shape, self.patch_size, self.synthesis_stride)
        return self._content_label_patches[key]

    def styled_share(self, layer: str, shape: Sequence[int]) -> torch.Tensor | None:
        """Each synthesis patch's share outside the unstyled region (N,) for a layer's full
        (H, W), row-major like extract_patches (None without an unstyled colour)."""
        if self.unstyled is None:
            return None
        key = (layer, tuple(shape[-2:]))
        if key not in self._styled_shares:
            assert self.content_labels is not None
            unstyled = self.content_labels[:, self.unstyled:self.unstyled + 1].float()
            height, width = shape[-2:]
            small = F.adaptive_avg_pool2d(unstyled, (height, width))
            self._styled_shares[key] = 1 - extract_patches(small, self.patch_size, self.synthesis_stride).mean(dim=1)
        return self._styled_shares[key]

    def matches(self, layer: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices into the bank, NCC scores) of every synthesis patch of whole ``features``."""
        patches = extract_patches(features, self.patch_size, self.synthesis_stride)
        return self._nearest(layer, patches, self.label_grid(layer, features.shape))

    def _nearest(self, layer: str, patches: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        matching = normalize_patches(patches.detach().float())
        if labels is not None:
            matching = torch.cat([matching, labels], dim=1)
        return mrf_nearest(matching, self.bank.match[layer], normalized=True)

    def patch_distances(self, layer: str, patches: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """|p - s_NN(p)|^2 of each patch (N, D), zero below ``confidence``; ``labels``: the
        patches' rows of label_grid (or None). Differentiable in ``patches``."""
        index, score = self._nearest(layer, patches, labels)
        distance = (patches - self.bank.raw[layer][index]).pow(2).sum(dim=1)
        if self.confidence is not None:
            distance = distance * (score >= self.confidence)
        return distance

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        """The share of the patches whose top-left position the window owns."""
        term: torch.Tensor | None = None
        k, step = self.patch_size, self.synthesis_stride
        for layer in self.layers:
            stride = self.stride(layer)
            full_h, full_w = window.height // stride, window.width // stride
            rows_all, cols_all = (full_h - k) // step + 1, (full_w - k) // step + 1
            rows = _patch_corners(window.y0 // stride, -(-window.y1 // stride), full_h, k, step)
            cols = _patch_corners(window.x0 // stride, -(-window.x1 // stride), full_w, k, step)
            if not rows or not cols:
                continue
            top, left = rows[0] - window.cy0 // stride, cols[0] - window.cx0 // stride
            block = features[layer][:, :, top:top + rows[-1] - rows[0] + k, left:left + cols[-1] - cols[0] + k]
            patches = extract_patches(block, k, step)
            labels, styled = (_rows_of(grid, window, rows_all, cols_all, rows, cols, step) for grid in (
                self.label_grid(layer, (full_h, full_w)), self.styled_share(layer, (full_h, full_w))))
            distance = self.patch_distances(layer, patches, labels)
            if styled is not None:
                distance = distance * styled.to(distance)
            share = distance.sum() / (rows_all * cols_all) * self.layer_scale(layer)
            term = share if term is None else term + share
        return term

    def layer_scale(self, layer: str) -> torch.Tensor:
        """A layer's weight over the bank's mean squared patch norm (multiplies the mean distance)."""
        return self._bank_scale[layer] * self.layer_weights[layer]


def _rows_of(grid: torch.Tensor | None, window: Window, rows_all: int, cols_all: int, rows: range, cols: range,
             step: int) -> torch.Tensor | None:
    """The rows of a whole map's per-patch ``grid`` (N, ...) for the patches ``rows`` x ``cols``."""
    if grid is None or window.is_whole:
        return grid
    block = grid.reshape(rows_all, cols_all, -1)
    block = block[rows[0] // step:rows[-1] // step + 1, cols[0] // step:cols[-1] // step + 1]
    return block.reshape(-1, *grid.shape[1:])


def _patch_corners(start: int, stop: int, size: int, patch: int, step: int) -> range:
    """Full-map patch corners (multiples of ``step``) in [start, stop) whose patch fits in ``size``."""
    first = -(-start // step) * step
    return range(first, min(stop, size - patch + 1), step)


def mrf_objective(bank: PatchBank, layer_weights: Mapping[str, float], *,
                  content_targets: Mapping[str, torch.Tensor] | None, content_weight: float,
                  mrf_weight: float, tv_weight: float, patch_size: int, synthesis_stride: int,
                  strides: Mapping[str, int] | None = None, content_labels: torch.Tensor | None = None,
                  map_scale: float = 0.0, confidence: float | None = None,
                  unstyled: int | None = None) -> Objective:
    """Li & Wand's objective: content + MRF + total variation (content weight 0 without targets)."""
    terms = [ContentTerm(content_targets, strides),
             MRFTerm(bank, layer_weights, strides, patch_size=patch_size, synthesis_stride=synthesis_stride,
                     content_labels=content_labels, map_scale=map_scale, confidence=confidence, unstyled=unstyled),
             TotalVariationTerm()]
    weights = {"content": content_weight if content_targets else 0.0, "style": mrf_weight, "tv": tv_weight}
    return Objective(terms, weights)


# --- the declaration (method "mrf": its options are config.mrf's) --------------------------------


def _build(targets: StyleTargets) -> Term:
    """The MRF term against the level's bank (maps, when given, steer the matching)."""
    mrf = targets.config.mrf
    map_scale = math.sqrt(mrf.map_weight) if targets.content_labels is not None else 0.0
    variants = style_variants(mrf.style_rotations, mrf.rotation_step, mrf.style_scales, mrf.scale_step)
    bank = targets.cached(
        lambda: build_patch_bank(targets.features, targets.styles, targets.layers, patch_size=mrf.patch_size,
                                 style_stride=mrf.style_stride, variants=variants, style_labels=targets.style_labels,
                                 map_scale=map_scale),
        targets.layers, mrf.patch_size, mrf.style_stride, mrf.style_rotations, mrf.rotation_step, mrf.style_scales,
        mrf.scale_step, mrf.map_weight)
    return MRFTerm(bank, targets.layer_weights, targets.strides, patch_size=mrf.patch_size,
                   synthesis_stride=mrf.synthesis_stride, content_labels=targets.content_labels, map_scale=map_scale,
                   confidence=mrf.confidence, unstyled=targets.unstyled)


def _extent(config: RenderConfig) -> dict[str, int]:
    return dict.fromkeys(config.mrf.mrf_layers, config.mrf.patch_size - 1)


def _memory(config: RenderConfig, layers: Mapping[str, FeatureInfo], height: int, width: int) -> int:
    """The style patch bank, raw and normalised: the style is at most a square of style_scale x
    the long side, in every rotated and scaled copy."""
    mrf = config.mrf
    side = config.objective.style_scale * max(height, width)
    copies = (2 * mrf.style_rotations + 1) * (2 * mrf.style_scales + 1)
    bank = 0
    for name in mrf.mrf_layers:
        per_side = max(0, (side / layers[name].stride - mrf.patch_size) // mrf.style_stride + 1)
        bank += int(2 * copies * per_side**2 * layers[name].channels * mrf.patch_size**2 * 4)
    return bank


MRF = register_style_loss(StyleLoss("mrf", _build, _build, extent=_extent, memory=_memory, method="mrf"))
