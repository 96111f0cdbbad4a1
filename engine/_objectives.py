"""Gatys et al. objectives: content, Gram style and total-variation losses.

Normalisation (departs from the paper on purpose): the paper sums squared errors, so each
layer's term scales with its channel count, its activation magnitude and the image size, and
the weights that work for one backbone at one size fail elsewhere (neural-style's defaults with
the vgg16-hed weights end in blue noise: relu1_1's Gram loss outweighs relu5_1's by ~1e5). Here
every term is a *relative* squared error, divided by the squared magnitude of its own target:

    content_l = mean((F_l - C_l)^2) / mean(C_l^2)
    style_l   = sum((G_l - S_l)^2) / sum(S_l^2),   G = F F^T / (H W)
    tv        = mean(dx^2) + mean(dy^2)            on the [0, 1] image

so each layer counts the same at any size and for any backbone, and the weights mean "how much
of a 100% error in this term is worth a 100% error in that one". Layer weights are normalised to
sum to 1 within the content and the style term, so adding a layer does not change the balance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from styleforge.kernels import gram

__all__ = [
    "ContentTerm",
    "GatysObjective",
    "content_loss",
    "style_grams",
    "style_loss",
    "total_variation",
]

_EPS = 1e-12


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error of (B, C, H, W) features against the target: a scalar."""
    return (features - target).pow(2).mean() / target.pow(2).mean().clamp_min(_EPS)


def style_loss(gram_matrix: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Relative squared error of a (B, C, C) Gram matrix against the target: a scalar."""
    return (gram_matrix - target_gram).pow(2).sum() / target_gram.pow(2).sum().clamp_min(_EPS)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of horizontally and vertically adjacent pixels of (B, C, H, W)."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dx.pow(2).mean() + dy.pow(2).mean()


@torch.no_grad()
def style_grams(
    backbone: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    layers: Sequence[str],
    grams_of: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Blended target Grams {layer: (1, C, C)} of several (1, 3, H, W) style images.

    ``backbone`` is anything mapping an image to its features (a VGGFeatures, Backend.features).
    The blend weights are normalised to sum to 1; each style may have its own size.
    ``grams_of`` computes an image's Grams some other way (tile by tile, for large styles).
    """
    total = float(sum(blend))
    targets: dict[str, torch.Tensor] = {}
    for style, weight in zip(styles, blend, strict=True):
        if grams_of is not None:
            grams = grams_of(style)
        else:
            features = backbone(style)
            grams = {layer: gram(features[layer]) for layer in layers}
        for layer in layers:
            contribution = grams[layer] * (weight / total)
            targets[layer] = targets[layer] + contribution if layer in targets else contribution
    return targets


class ContentTerm:
    """The content loss against targets fixed once: mean over layers of content_loss.

    ``__call__(features)`` -> scalar tensor (zero when there are no targets).
    """

    def __init__(self, targets: Mapping[str, torch.Tensor] | None) -> None:
        self.targets = dict(targets) if targets is not None else {}
        # Reciprocal target magnitudes, computed once rather than per iteration.
        self._scale = {layer: 1.0 / t.pow(2).mean().clamp_min(_EPS) for layer, t in self.targets.items()}

    def __bool__(self) -> bool:
        return bool(self.targets)

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms = [(features[layer] - target).pow(2).mean() * self._scale[layer] for layer, target in self.targets.items()]
        if not terms:
            return next(iter(features.values())).new_zeros(())
        return torch.stack(terms).mean()


class GatysObjective:
    """Weighted sum of the content, style and TV terms against targets computed once.

    ``__call__(features, image)`` returns the terms {"content", "style", "tv", "total"} as scalar
    tensors (no host sync), given the backbone's features of ``image`` (1, 3, H, W).
    """

    def __init__(
        self,
        *,
        content_targets: Mapping[str, torch.Tensor] | None,
        style_targets: Mapping[str, torch.Tensor],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        style_layer_weights: Mapping[str, float],
    ) -> None:
        self.content = ContentTerm(content_targets)
        self.style_targets = dict(style_targets)
        self.content_weight = content_weight if self.content else 0.0
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        total = sum(style_layer_weights.values())
        self.style_layer_weights = {layer: w / total for layer, w in style_layer_weights.items()}
        # Reciprocal target magnitudes, computed once rather than per iteration.
        self._style_scale = {
            layer: self.style_layer_weights[layer] / target.pow(2).sum().clamp_min(_EPS)
            for layer, target in self.style_targets.items()
        }

    def __call__(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = image.new_zeros(())
        content = self.content(features)
        style = zero
        for layer, target in self.style_targets.items():
            style = style + (gram(features[layer]) - target).pow(2).sum() * self._style_scale[layer]
        tv = total_variation(image) if self.tv_weight > 0 else zero
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        return {"content": content, "style": style, "tv": tv, "total": total}
