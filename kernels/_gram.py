"""Gram matrix: the functional reference (the test oracle and the CPU path)."""

from __future__ import annotations

import torch

__all__ = ["gram_reference"]


def gram_reference(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of feature maps, averaged over positions (the torch reference).

    features (B, C, H, W) -> (B, C, C) with G[b, i, j] = sum_p F[b, i, p] F[b, j, p] / (H * W).

    Dividing by H * W (not by C * H * W, nor the paper's plain sum) makes the Gram independent of
    image size, so one style target serves every scale; the per-layer normalisation of the style
    loss (see styleforge.engine.style_loss) takes care of the channel count and the layer's scale.
    Accumulates in float32 at least, whatever the input dtype.
    """
    if features.dim() != 4:
        raise ValueError(f"gram expects (B, C, H, W) features, got shape {tuple(features.shape)}")
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return torch.bmm(flat, flat.transpose(1, 2)) / (height * width)
