"""Ruder, Dosovitskiy and Brox's temporal consistency term ("Artistic style transfer for
videos", GCPR 2016): the squared difference to the previous stylised frame warped into this one,
weighted by where that warp can be trusted.

The term reads pixels, not features, so it is a pixel term of the contract: it is local in pixel
space (each pixel's share depends on that pixel alone), and both the untiled and the tiled
evaluation compute it once on the whole image, as they do total variation. Its memory is that of
the image, which the evaluation holds anyway; no tile halo is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import Term

__all__ = ["TemporalTerm", "temporal_loss"]


def temporal_loss(image: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s short-term loss (1 / D) sum_k c_k (x_k - w_k)^2, D = C * H * W.

    ``image``, ``reference`` (the warped previous output): (B, C, H, W); ``weights`` c in [0, 1]:
    (B, 1, H, W), shared by the channels (the paper's per-pixel mask). Returns a scalar.
    """
    if weights.shape[-2:] != image.shape[-2:] or reference.shape != image.shape:
        raise ValueError(f"image {tuple(image.shape)}, reference {tuple(reference.shape)} and weights "
                         f"{tuple(weights.shape)} must share their height and width")
    return (weights * (image - reference).pow(2)).sum() / image.numel()


class TemporalTerm(Term):
    """The sum of ``temporal_loss`` over ``references``: [(warped output (1, 3, H, W), weights
    (1, 1, H, W)), ...]. One pair is the paper's short-term loss; several are its long-term
    loss, each frame's weights already reduced where a nearer frame covers the pixel."""

    name = "temporal"

    def __init__(self, references: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        if not references:
            raise ValueError("a temporal term needs at least one reference frame")
        # Copies: a reference must not share memory with the image being optimised (a render's
        # start is often the very frame this term compares against).
        self.references = [(reference.detach().clone(), weights.detach().clone()) for reference, weights in references]

    def pixel_value(self, image: torch.Tensor) -> torch.Tensor:
        values = [temporal_loss(image, reference.to(image.dtype), weights.to(image.dtype))
                  for reference, weights in self.references]
        return values[0] if len(values) == 1 else torch.stack(values).sum()
