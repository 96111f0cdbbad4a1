"""The temporal consistency metric of Lai et al., "Learning Blind Video Temporal Consistency"
(ECCV 2018): the warp error between consecutive output frames, measured with the input's flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._flow import warp

__all__ = ["sequence_warp_error", "warp_error"]


def warp_error(current: torch.Tensor, previous: torch.Tensor, backward: torch.Tensor,
               mask: torch.Tensor) -> float:
    """E_warp = 1 / sum(M) * sum_x M(x) ||O_t(x) - O^_{t-1}(x)||^2, where O^_{t-1} is ``previous``
    warped into ``current``'s frame by ``backward`` (flow t -> t-1 of the *input* frames) and M the
    non-occluded pixels (1, 1, H, W) or (H, W).

    ``current``, ``previous``: (3, H, W) in [0, 1]. Lai et al. sum the squared RGB differences
    per pixel (not their mean over channels); so does this."""
    weights = mask.reshape(current.shape[-2:]).to(torch.float32)
    squared = (current.float() - warp(previous.float(), backward)).pow(2).sum(0)
    return float((weights * squared).sum() / weights.sum().clamp_min(1.0))


def sequence_warp_error(frames: Sequence[torch.Tensor], backward: Sequence[torch.Tensor],
                        masks: Sequence[torch.Tensor]) -> float:
    """The mean of ``warp_error`` over consecutive pairs: ``backward[i]``, ``masks[i]`` belong
    to the pair (frames[i + 1], frames[i])."""
    if len(frames) < 2 or len(backward) != len(frames) - 1 or len(masks) != len(frames) - 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} flows and masks, "
                         f"got {len(backward)} and {len(masks)}")
    errors = [warp_error(frames[i + 1], frames[i], backward[i], masks[i]) for i in range(len(frames) - 1)]
    return sum(errors) / len(errors)
