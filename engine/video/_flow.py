"""Optical flow, warping and the masks of where a warp can be trusted (Ruder et al., GCPR 2016).

Flow is OpenCV's DIS (Kroeger et al., ECCV 2016) on grey levels, computed on the CPU. Convention:
``flow = optical_flow(source, target)`` gives, for each pixel x of ``source``, the displacement
to the same point in ``target`` (source(x) ~ target(x + flow(x))); so ``warp(target, flow)`` is
``target`` brought into ``source``'s frame (backward warping, bilinear).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import check_choice
from .._video_config import FLOW_PRESETS
from ._deps import require

__all__ = ["FLOW_PRESETS", "consistency_mask", "motion_boundaries", "occlusions", "optical_flow", "warp"]


def _grey(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 luma (Rec. 601), what DIS reads."""
    weights = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    luma = (image.detach().float().cpu() * weights).sum(0).clamp(0, 1)
    return (luma * 255.0 + 0.5).to(torch.uint8).numpy()


def optical_flow(source: torch.Tensor, target: torch.Tensor, *, preset: str = "medium") -> torch.Tensor:
    """DIS flow from ``source`` to ``target`` (both (3, H, W) in [0, 1]) -> (2, H, W) float32
    (dx, dy) in pixels, on the CPU."""
    check_choice("flow_preset", preset, FLOW_PRESETS)
    if source.shape != target.shape:
        raise ValueError(f"frames of different shapes: {tuple(source.shape)} and {tuple(target.shape)}")
    cv2 = require("cv2")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    flow = dis.calc(_grey(source), _grey(target), None)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (C, H, W) or (B, C, H, W) sampled at x + flow(x): out(x) = image(x + flow(x)),
    bilinear, borders repeated outside. ``flow``: (2, H, W) in pixels."""
    batched = image if image.dim() == 4 else image[None]
    dtype = image.dtype if image.dtype == torch.float64 else torch.float32
    height, width = flow.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    flow = flow.to(dtype).cpu()
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid_x = 2.0 * (xs + flow[0]) / max(width - 1, 1) - 1.0
    grid_y = 2.0 * (ys + flow[1]) / max(height - 1, 1) - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1)[None].expand(batched.shape[0], -1, -1, -1)
    out = F.grid_sample(batched.to(dtype), grid.to(batched.device), mode="bilinear", padding_mode="border",
                        align_corners=True).to(image.dtype)
    return out if image.dim() == 4 else out[0]


def occlusions(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Disocclusions of the frame ``backward`` starts from (H, W) bool, by forward-backward
    consistency (Ruder et al. eq. 2, after Sundaram et al.): following ``backward`` (this frame ->
    the previous one) and then ``forward`` (previous -> this one) should come back; where it does
    not, |f~ + b|^2 > 0.01 (|f~|^2 + |b|^2) + 0.5, the pixel was not visible in the previous frame."""
    returned = warp(forward, backward)  # f~(x) = forward(x + backward(x))
    error = (returned + backward).pow(2).sum(0)
    return error > 0.01 * (returned.pow(2).sum(0) + backward.pow(2).sum(0)) + 0.5


def motion_boundaries(flow: torch.Tensor) -> torch.Tensor:
    """Motion boundaries of ``flow`` (H, W) bool (Ruder et al. eq. 3):
    |grad u|^2 + |grad v|^2 > 0.01 |flow|^2 + 0.002, with forward differences (0 at the far border)."""
    dx = F.pad(flow[:, :, 1:] - flow[:, :, :-1], (0, 1))
    dy = F.pad(flow[:, 1:, :] - flow[:, :-1, :], (0, 0, 0, 1))
    return (dx.pow(2) + dy.pow(2)).sum(0) > 0.01 * flow.pow(2).sum(0) + 0.002


def consistency_mask(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s per-pixel weights c (1, 1, H, W) float32: 0 where the previous frame's
    content cannot be brought here by ``backward`` (disoccluded, or on a motion boundary), 1 elsewhere.

    ``forward``: flow previous -> this frame; ``backward``: this frame -> previous (2, H, W)."""
    untrusted = occlusions(forward, backward) | motion_boundaries(backward)
    return (~untrusted).to(torch.float32)[None, None]
