"""Photorealism: the matting-Laplacian regulariser of Luan, Paris, Shechtman and Bala ("Deep
Photo Style Transfer", CVPR 2017), built from the content photo.

Levin, Lischinski and Weiss's closed-form matting Laplacian L (CVPR 2006) is small exactly when
each 3x3 window of a channel v of the output is an affine function of the content's colours in
that window: Luan et al. add sum_c v_c^T L v_c to the loss, so the output may change colours but
not draw edges or texture the photo does not have. With a window w of n = 9 pixels, its content
colours I_i (3-vectors), their mean mu_w and (biased) covariance S_w,

    L_ij = sum_{w containing i and j} (delta_ij - (1 + (I_i - mu_w)^T A_w (I_j - mu_w)) / n),
    A_w  = (S_w + eps / n * Id_3)^-1,

and for one channel v, with v_w the window's mean of v,

    v^T L v = sum_w [ sum_{i in w} (v_i - v_w)^2 - || sum_{i in w} u_{w,i} (v_i - v_w) ||^2 ],
    u_{w,i} = C_w^-1 (I_i - mu_w) / sqrt(n),   C_w C_w^T = S_w + eps / n * Id_3 (Cholesky),

(expand the square: the first part is delta_ij - 1/n, the second the affine part). So the term is
computed matrix-free with 3x3 window operations, and nothing of L is ever stored: per window the
9 whitened offsets u_{w,i} (27 numbers per pixel), computed once per level from the content in
float64 and kept in the content's dtype. Whitening first is why: with the paper's eps = 1e-7,
A_w reaches 9e7 in flat windows, so the textbook box-sum form (sum I v - mu sum v, then A)
amplifies float32 rounding there (it lost 1.3e-4 of the energy on a 96x128 photo, this form
1.3e-7), while the offsets u are bounded (||U_w|| <= 1). The cost: 27 numbers per pixel rather
than the box-sum form's 12 (means and inverse covariances).

Windows are the 3x3 windows wholly inside the image, as in Levin et al.'s code. The term reads
pixels, not features, so it is a pixel term of the contract: both the untiled and the tiled
evaluation run it once on the whole image (as total variation), which is exact by construction.
Its memory is whole-image state like the optimiser's, and small beside it: the offsets (27
numbers per pixel) and L v (3), against L-BFGS's 300 (history 50); the planner counts it there
(``matting_bytes``). The offsets are built (in float64) and the term evaluated in bands of window
rows, each with its 2-row window halo, with the gradient 2 L v computed in the same pass
(``matting_energy_in_bands``), so no autograd graph is kept: autograd through the reference
``matting_energy`` peaked at 107 numbers per pixel more at 2048 x 2048, the bands at 8.
"""

from __future__ import annotations

from typing import Any

import torch

from ._base import Term

__all__ = ["MATTING_EPSILON", "PhotorealismTerm", "matting_bytes", "matting_energy", "matting_energy_in_bands",
           "matting_offsets"]

#: Levin et al.'s regulariser, as in Luan et al.'s code (getLaplacian, eps = 1e-7): colour
#: changes must follow the content's own edges almost exactly.
MATTING_EPSILON = 1e-7
_WINDOW = 3
_N = _WINDOW * _WINDOW
#: Windows per band, building the offsets (float64) and evaluating the term alike.
_BAND_WINDOWS = 1 << 18
#: Numbers per pixel the term holds: its offsets (27), and while evaluating L v and the gradient
#: (6); bytes per window of a band at its peak (the float64 build; measured at 2048 x 2048 on the
#: CPU: 41 numbers per pixel while building, 8 more than the offsets while evaluating).
_NUMBERS_PER_PIXEL, _BAND_BYTES_PER_WINDOW = 33, 1024


def matting_bytes(height: int, width: int, element_size: int = 4) -> int:
    """Peak memory of the term at (height, width), for the planner."""
    pixels = height * width
    return _NUMBERS_PER_PIXEL * pixels * element_size + min(pixels, _BAND_WINDOWS) * _BAND_BYTES_PER_WINDOW


def _window_views(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 9, C, H - 2, W - 2): each 3x3 window's pixels, window by window
    (the window at (y, x) covers rows y..y+2, columns x..x+2)."""
    height, width = image.shape[-2] - _WINDOW + 1, image.shape[-1] - _WINDOW + 1
    return torch.stack([image[..., dy:dy + height, dx:dx + width]
                        for dy in range(_WINDOW) for dx in range(_WINDOW)], dim=1)


def matting_offsets(content: torch.Tensor, epsilon: float = MATTING_EPSILON) -> torch.Tensor:
    """The whitened offsets u_{w,i} of a (B, 3, H, W) content image in [0, 1]: (B, 9, 3, H - 2,
    W - 2), computed in float64, returned in the content's dtype (see the module docstring).
    Computed in bands of window rows, so the float64 work (under 1 KB per window) stays a few
    hundred MB at any size, once per level."""
    if content.shape[1] != 3 or min(content.shape[-2:]) < _WINDOW:
        raise ValueError(f"content must be (B, 3, H >= 3, W >= 3), got {tuple(content.shape)}")
    height, width = content.shape[-2] - _WINDOW + 1, content.shape[-1] - _WINDOW + 1
    offsets = content.new_empty(content.shape[0], _N, 3, height, width)
    band = max(1, _BAND_WINDOWS // width)
    for top in range(0, height, band):
        bottom = min(height, top + band)
        offsets[..., top:bottom, :] = _band_offsets(content[..., top:bottom + _WINDOW - 1, :], epsilon)
    return offsets


def _band_offsets(content: torch.Tensor, epsilon: float) -> torch.Tensor:
    pixels = _window_views(content.double())                                    # (B, 9, 3, h, w)
    centred = pixels - pixels.mean(dim=1, keepdim=True)
    columns = centred.permute(0, 3, 4, 2, 1)                                    # (B, h, w, 3, 9)
    covariance = columns @ columns.transpose(-1, -2) / _N
    covariance = covariance + epsilon / _N * torch.eye(3, dtype=covariance.dtype, device=covariance.device)
    cholesky = torch.linalg.cholesky(covariance)
    whitened = torch.linalg.solve_triangular(cholesky, columns, upper=False) / _N ** 0.5
    return whitened.permute(0, 4, 3, 1, 2).to(content.dtype)


def matting_energy(image: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """sum_c v_c^T L v_c over the channels v_c of a (B, C, H, W) image, L the matting Laplacian
    whose ``offsets`` (from ``matting_offsets`` of the content, same H and W) are given: a
    scalar, differentiable in ``image`` (its gradient is 2 L v)."""
    if offsets.shape[-2:] != (image.shape[-2] - _WINDOW + 1, image.shape[-1] - _WINDOW + 1):
        raise ValueError(f"offsets {tuple(offsets.shape)} do not fit an image of {tuple(image.shape)}")
    pixels = _window_views(image)                                               # (B, 9, C, h, w)
    centred = pixels - pixels.mean(dim=1, keepdim=True)
    affine = torch.einsum("bncyx,bnjyx->bcjyx", centred, offsets.to(image.dtype))
    return centred.pow(2).sum() - affine.pow(2).sum()


def matting_energy_in_bands(image: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``matting_energy``, computed in bands of window rows with its gradient 2 L v at once, so
    no autograd graph is kept: the fast path the term runs, tested against the reference above.
    Each band's windows read its rows and the two below (the window halo), and scatter their
    share of L v back onto those rows."""
    if offsets.shape[-2:] != (image.shape[-2] - _WINDOW + 1, image.shape[-1] - _WINDOW + 1):
        raise ValueError(f"offsets {tuple(offsets.shape)} do not fit an image of {tuple(image.shape)}")
    return _MattingEnergy.apply(image, offsets)


class _MattingEnergy(torch.autograd.Function):
    """v -> sum_c v_c^T L v_c, whose gradient 2 L v the forward pass computes band by band."""

    @staticmethod
    def forward(ctx: Any, image: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        height, width = offsets.shape[-2:]
        laplacian = torch.zeros_like(image)
        energy = image.new_zeros(())
        band = max(1, _BAND_WINDOWS // width)
        for top in range(0, height, band):
            bottom = min(height, top + band)
            rows = slice(top, bottom + _WINDOW - 1)
            energy = energy + _add_band(image[..., rows, :], offsets[..., top:bottom, :], laplacian[..., rows, :])
        ctx.save_for_backward(laplacian)
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (laplacian,) = ctx.saved_tensors
        return 2 * grad * laplacian, None


def _add_band(image: torch.Tensor, offsets: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """One band: adds its windows' share of L v into ``laplacian`` (a view of the band's rows) and
    returns their energy. With c the window's centred values and a = sum_i u_i c_i, a window adds
    c_i - u_i . a to (L v)_i (the centring drops out since sum_i u_i = 0 and sum_i c_i = 0)."""
    pixels = _window_views(image)                                               # (B, 9, C, h, w)
    centred = pixels - pixels.mean(dim=1, keepdim=True)
    offsets = offsets.to(image.dtype)
    affine = torch.einsum("bncyx,bnjyx->bcjyx", centred, offsets)
    residual = centred - torch.einsum("bcjyx,bnjyx->bncyx", affine, offsets)
    height, width = residual.shape[-2:]
    for index in range(_N):
        dy, dx = divmod(index, _WINDOW)
        laplacian[..., dy:dy + height, dx:dx + width] += residual[:, index]
    return centred.pow(2).sum() - affine.pow(2).sum()


class PhotorealismTerm(Term):
    """Luan et al.'s photorealism regulariser of the [0, 1] output against one level's content
    (1, 3, H, W): sum_c v_c^T L v_c / (H W), a mean per pixel as total variation is, so one
    weight serves every level of a pyramid."""

    name = "photo"

    def __init__(self, content: torch.Tensor, epsilon: float = MATTING_EPSILON) -> None:
        super().__init__()
        self.offsets = matting_offsets(content.detach(), epsilon)

    def pixel_value(self, image: torch.Tensor) -> torch.Tensor:
        return matting_energy_in_bands(image, self.offsets) / (image.shape[-2] * image.shape[-1])
