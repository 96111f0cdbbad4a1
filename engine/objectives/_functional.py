"""Stateless functional references of the loss terms (tensor in, scalar tensor out).

Normalisation (departs from the papers on purpose): the papers sum squared errors, so each
layer's term scales with its channel count, its activation magnitude and the image size, and
the weights that work for one backbone at one size fail elsewhere (neural-style's defaults with
the vgg16-hed weights end in blue noise: relu1_1's Gram loss outweighs relu5_1's by ~1e5). Here
every term is a *relative* squared error, divided by the squared magnitude of its own target:

    content_l = mean((F_l - C_l)^2) / mean(C_l^2)
    style_l   = sum((G_l - S_l)^2) / sum(S_l^2),   G = F F^T / (H W)
    tv        = mean(dx^2) + mean(dy^2)            on the [0, 1] image

so each layer counts the same at any size and for any backbone, and the weights mean "how much
of a 100% error in this term is worth a 100% error in that one". Layer weights are normalised to
sum to 1 within a term, so adding a layer does not change the balance.
"""

from __future__ import annotations

import torch

from styleforge.kernels import gram

__all__ = ["EPS", "content_loss", "gram", "style_loss", "total_variation"]

EPS = 1e-12


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error of (B, C, H, W) features against the target: a scalar."""
    return (features - target).pow(2).mean() / target.pow(2).mean().clamp_min(EPS)


def style_loss(gram_matrix: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Relative squared error of a (B, C, C) Gram matrix against the target: a scalar."""
    return (gram_matrix - target_gram).pow(2).sum() / target_gram.pow(2).sum().clamp_min(EPS)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of horizontally and vertically adjacent pixels of (B, C, H, W)."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dx.pow(2).mean() + dy.pow(2).mean()
