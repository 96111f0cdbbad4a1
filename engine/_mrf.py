"""MRF objective (Li & Wand, CVPR 2016) and neural-doodle semantic maps.

Every k x k patch of the output's features (synthesis stride) is matched to the style patch with
the highest normalised cross-correlation (the bank: every style patch at the style stride, from
the style image and optionally its rotated and scaled copies), and pulled toward it:

    mrf_l = mean_i |p_i - s_NN(i)|^2 / mean_j |s_j|^2

Normalisation (departs from CNNMRF's plain sum on purpose): a mean over patches, relative to the
bank's mean squared patch norm, so a layer's term is ~1 when patches are as far from their match
as a patch is long, at any size, stride or backbone; content and TV are the Gatys terms.

Semantic maps: a map is an image of flat colours. Each map becomes one channel per colour (one-hot
by nearest palette colour), downsampled to each layer, and its k x k patches are appended to the
*normalised* feature patches with weight sqrt(map_weight) for matching only, so the match
maximises cos(features) + map_weight * cos(labels): patches match within the same region.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from styleforge.kernels import extract_patches, mrf_nearest, normalize_patches

from ._errors import ConfigError
from ._objectives import ContentTerm, total_variation

__all__ = ["MRFObjective", "semantic_labels", "semantic_palette", "shared_palette", "style_variants"]

_EPS = 1e-12
#: A colour counts as a region when it covers this share of a map (edges are antialiased blends).
_REGION_SHARE = 0.005


def semantic_palette(semantic_map: torch.Tensor, *, what: str) -> torch.Tensor:
    """The region colours of a (3, H, W) map in [0, 1]: (K, 3), colours covering >= 0.5%."""
    pixels = (semantic_map.reshape(3, -1).T * 255).round().to(torch.int64)
    colours, counts = torch.unique(pixels, dim=0, return_counts=True)
    regions = colours[counts >= _REGION_SHARE * pixels.shape[0]]
    if regions.shape[0] == 0:
        raise ConfigError(f"{what}: no flat colour regions found")
    return regions.float() / 255


def semantic_labels(semantic_map: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(3, H, W) map -> (1, K, H, W) one-hot channels by nearest palette colour."""
    distance = torch.cdist(semantic_map.reshape(3, -1).T, palette)  # (H*W, K)
    nearest = distance.argmin(dim=1)
    one_hot = F.one_hot(nearest, palette.shape[0]).T.float()
    return one_hot.reshape(1, palette.shape[0], *semantic_map.shape[-2:])


def shared_palette(content_map: torch.Tensor, style_map: torch.Tensor) -> torch.Tensor:
    """The palette both maps use; a colour present on one side only is an error."""
    content_colours = semantic_palette(content_map, what="--content-map")
    style_colours = semantic_palette(style_map, what="--style-map")
    distance = torch.cdist(content_colours, style_colours)
    tolerance = 12 / 255

    def hexes(colours: torch.Tensor) -> str:
        return ", ".join("#" + "".join(f"{round(c * 255):02x}" for c in colour.tolist()) for colour in colours)

    missing_in_style = content_colours[distance.min(dim=1).values > tolerance]
    if missing_in_style.shape[0]:
        raise ConfigError(f"--content-map: colour(s) {hexes(missing_in_style)} have no region in --style-map")
    missing_in_content = style_colours[distance.min(dim=0).values > tolerance]
    if missing_in_content.shape[0]:
        raise ConfigError(f"--style-map: colour(s) {hexes(missing_in_content)} have no region in --content-map")
    return style_colours


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


class MRFObjective:
    """Content + MRF + TV against a style patch bank built once per resolution.

    Args:
        features_of: image (1, 3, H, W) -> {layer: features}, no gradient (targets only).
        styles: (1, 3, H, W) style images at this resolution.
        style_maps / content_labels: (1, K, H, W) one-hot label maps, or None (no doodle).
        bank_cache: given the bank's builder, returns the bank (a TargetCache lookup in batches).
    """

    def __init__(
        self,
        *,
        features_of: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
        styles: Sequence[torch.Tensor],
        content_targets: Mapping[str, torch.Tensor] | None,
        layer_weights: Mapping[str, float],
        content_weight: float,
        mrf_weight: float,
        tv_weight: float,
        patch_size: int,
        style_stride: int,
        synthesis_stride: int,
        variants: Sequence[tuple[float, float]] = ((0.0, 1.0),),
        style_labels: Sequence[torch.Tensor] | None = None,
        content_labels: torch.Tensor | None = None,
        map_weight: float = 0.0,
        confidence: float | None = None,
        bank_cache: Callable[[Callable[[], tuple[dict, dict]]], tuple[dict, dict]] | None = None,
    ) -> None:
        self.layers = tuple(layer_weights)
        total = sum(layer_weights.values())
        self.layer_weights = {layer: weight / total for layer, weight in layer_weights.items()}
        self.content = ContentTerm(content_targets)
        self.content_weight = content_weight if self.content else 0.0
        self.mrf_weight, self.tv_weight = mrf_weight, tv_weight
        self.patch_size, self.synthesis_stride = patch_size, synthesis_stride
        self.confidence = confidence
        self.map_scale = math.sqrt(map_weight) if content_labels is not None else 0.0


        def build() -> tuple[dict, dict]:
            # Raw patches (the pull targets) and normalised, label-augmented ones (for matching).
            raw: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
            match: dict[str, list[torch.Tensor]] = {layer: [] for layer in self.layers}
            with torch.no_grad():
                for index, style in enumerate(styles):
                    labels = style_labels[index] if style_labels is not None else None
                    for degrees, scale in variants:
                        features = features_of(_transform(style, degrees, scale))
                        turned = _transform(labels, degrees, scale) if labels is not None else None
                        for layer in self.layers:
                            patches = extract_patches(features[layer], patch_size, style_stride)
                            raw[layer].append(patches)
                            match[layer].append(self._augment(patches, turned, features[layer], style_stride))
            return ({layer: torch.cat(raw[layer]) for layer in self.layers},
                    {layer: torch.cat(match[layer]) for layer in self.layers})

        self.bank, self.bank_match = bank_cache(build) if bank_cache is not None else build()
        self._bank_scale = {layer: 1.0 / self.bank[layer].pow(2).sum(1).mean().clamp_min(_EPS) for layer in self.layers}
        self.content_labels = content_labels
        self._content_label_patches: dict[tuple, torch.Tensor] = {}

    def _label_patches(self, labels: torch.Tensor, shape: Sequence[int], stride: int) -> torch.Tensor:
        """Normalised k x k patches of one-hot labels downsampled to a layer's (H, W)."""
        small = F.adaptive_avg_pool2d(labels, tuple(shape[-2:]))
        return normalize_patches(extract_patches(small, self.patch_size, stride))

    def _augment(self, patches: torch.Tensor, labels: torch.Tensor | None, features: torch.Tensor,
                 stride: int) -> torch.Tensor:
        """Normalised feature patches, with the label patches appended when maps are in use."""
        normalized = normalize_patches(patches.float())
        if labels is None or self.map_scale == 0:
            return normalized
        label_patches = self._label_patches(labels, features.shape, stride)
        return torch.cat([normalized, self.map_scale * label_patches], dim=1)

    def label_grid(self, layer: str, shape: Sequence[int]) -> torch.Tensor | None:
        """The output's weighted label patches for a layer's full (H, W), row-major like
        extract_patches (None without maps). Cut once per level: they do not change."""
        if self.content_labels is None or self.map_scale == 0:
            return None
        key = (layer, tuple(shape[-2:]))
        if key not in self._content_label_patches:
            self._content_label_patches[key] = self.map_scale * self._label_patches(
                self.content_labels, shape, self.synthesis_stride)
        return self._content_label_patches[key]

    def matches(self, layer: str, features: torch.Tensor,
                patches: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices into the bank, NCC scores) of every synthesis patch of ``features``."""
        if patches is None:
            patches = extract_patches(features, self.patch_size, self.synthesis_stride)
        return self._nearest(layer, patches, self.label_grid(layer, features.shape))

    def _nearest(self, layer: str, patches: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        matching = normalize_patches(patches.detach().float())
        if labels is not None:
            matching = torch.cat([matching, labels], dim=1)
        return mrf_nearest(matching, self.bank_match[layer], normalized=True)

    def patch_distances(self, layer: str, patches: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """|p - s_NN(p)|^2 of each patch (N, D), zero below --confidence; ``labels``: the
        patches' rows of label_grid (or None). Differentiable in ``patches``."""
        index, score = self._nearest(layer, patches, labels)
        distance = (patches - self.bank[layer][index]).pow(2).sum(dim=1)
        if self.confidence is not None:
            distance = distance * (score >= self.confidence)
        return distance

    def layer_scale(self, layer: str) -> float:
        """A layer's weight over the bank's mean squared patch norm (multiplies the mean distance)."""
        return self._bank_scale[layer] * self.layer_weights[layer]

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = image.new_zeros(())
        content = self.content(features)
        mrf = zero
        for layer in self.layers:
            patches = extract_patches(features[layer], self.patch_size, self.synthesis_stride)
            distance = self.patch_distances(layer, patches, self.label_grid(layer, features[layer].shape))
            mrf = mrf + distance.mean() * self.layer_scale(layer)
        tv = total_variation(image) if self.tv_weight > 0 else zero
        total = self.content_weight * content + self.mrf_weight * mrf + self.tv_weight * tv
        return {"content": content, "style": mrf, "tv": tv, "total": total}
