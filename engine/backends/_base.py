"""The backend contract: where the VGG forward pass and its image gradient run.

The loss terms and the optimiser stay in torch: a backend returns features for an image, then,
given the loss gradients at those features, the gradient with respect to the image.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping

import torch

from .._backbone import VGGFeatures
from .._device import Precision

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Features of an image at the backbone's taps, and the image gradient of a loss on them.

    ``forward(image)`` returns {tap: (1, C, H/s, W/s)} (fp32) and keeps what ``backward`` needs;
    ``backward({tap: dL/dtap})`` returns dL/dimage (1, 3, H, W) for the last ``forward``; it
    needs a gradient for every tap (zeros for a tap the loss does not use).
    ``features(image)`` is a forward that keeps nothing (for targets).
    """

    name: str

    def __init__(self, backbone: VGGFeatures, device: torch.device, precision: Precision) -> None:
        self.backbone = backbone
        self.device = device
        self.precision = precision
        self.taps = tuple(backbone.taps)

    @classmethod
    def unsupported(cls, precision: Precision, device: torch.device) -> str | None:
        """None when this backend can run ``precision`` on ``device``, else why not."""
        return None

    @abc.abstractmethod
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]: ...

    @abc.abstractmethod
    def backward(self, tap_grads: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward(image)

    def use_graphs(self, shapes: Collection[tuple[int, int]]) -> None:
        """Replay CUDA graphs only for these (height, width) input shapes (the memory plan's
        choice for a level; empty: none), freeing captures of any other shape. A no-op for
        backends without CUDA graphs."""

    @property
    def strides(self) -> dict[str, int]:
        """Tap -> stride in pixels (the backbone's metadata)."""
        return {name: info.stride for name, info in self.backbone.feature_info.items()}
