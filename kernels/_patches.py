"""Patch extraction and nearest-patch matching: the functional references.

These run anywhere, are the test oracle for the CUDA kernels, and are the path used wherever
CuPy or a GPU is absent. Matching is chunked over both the image and the style patches, so the
(image patches x style patches) score matrix is never materialised whole: memory stays bounded
by ``chunk`` x ``chunk`` scores at any image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["extract_patches", "mrf_nearest_reference", "normalize_patches"]

_EPS = 1e-8


def extract_patches(features: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Every ``size`` x ``size`` patch of (1, C, H, W) features at ``stride``, row-major.

    Returns (N, C * size * size) with N = ((H - size) // stride + 1) * ((W - size) // stride + 1);
    each row is the patch's channels, then rows, then columns (F.unfold's order).
    """
    if features.dim() != 4 or features.shape[0] != 1:
        raise ValueError(f"extract_patches expects (1, C, H, W) features, got {tuple(features.shape)}")
    height, width = features.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"features of {width}x{height} are smaller than a {size}x{size} patch")
    return F.unfold(features, kernel_size=size, stride=stride)[0].transpose(0, 1)


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (no NaN)."""
    return patches / patches.norm(dim=1, keepdim=True).clamp_min(_EPS)


@torch.no_grad()
def mrf_nearest_reference(
    patches: torch.Tensor, style_patches: torch.Tensor, *, chunk: int = 4096, normalized: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest style patch of each image patch by normalised cross-correlation.

    patches (N, D), style_patches (M, D) -> (indices (N,) int64, scores (N,) float32): argmax
    over j of <p_i, s_j> / (|p_i| |s_j|) (cosine similarity; argmax, not argmin). Ties go to the
    lowest j; a zero-norm patch scores 0 against everything and matches j = 0. Pass
    ``normalized=True`` when both inputs already have unit rows.
    """
    if patches.dim() != 2 or style_patches.dim() != 2 or patches.shape[1] != style_patches.shape[1]:
        raise ValueError(f"patch shapes do not match: {tuple(patches.shape)} vs {tuple(style_patches.shape)}")
    if not normalized:
        patches, style_patches = normalize_patches(patches.float()), normalize_patches(style_patches.float())
    count = patches.shape[0]
    best = torch.full((count,), -float("inf"), device=patches.device)
    index = torch.zeros(count, dtype=torch.int64, device=patches.device)
    for row in range(0, count, chunk):
        block = patches[row : row + chunk]
        block_best = best[row : row + chunk]
        block_index = index[row : row + chunk]
        for column in range(0, style_patches.shape[0], chunk):
            scores = block @ style_patches[column : column + chunk].T
            value, where = scores.max(dim=1)  # first maximum within the chunk
            better = value > block_best  # strict: an earlier chunk keeps a tie
            # torch.where rather than boolean indexing: no host sync on a GPU.
            block_best.copy_(torch.where(better, value, block_best))
            block_index.copy_(torch.where(better, where + column, block_index))
    return index, best
