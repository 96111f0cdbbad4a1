"""VGG feature extractors with named taps.

The network takes an sRGB image in [0, 1] (B, 3, H, W) and owns its input preprocessing (channel
order, scale, mean, std), so every weight set is fed the way it was trained. Layers are named as
in the papers (conv1_1, relu1_1, pool1, ..., relu5_4); `forward` returns a plain dict of the
requested taps, with no hooks, and the network is truncated after the deepest tap so nothing
past it is ever computed. Per-tap metadata (channels, stride) follows timm's FeatureInfo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import ConfigError, WeightsError, check_choice
from ._layers import (
    ARCHITECTURES,
    CAFFE_PREPROCESSING,
    POOLINGS,
    SQUEEZENET,
    SQUEEZENET_FIRES,
    TORCHVISION_PREPROCESSING,
    FeatureInfo,
    Preprocessing,
    layer_infos,
)

# The layer tables live in _layers (no torch, so the config and the CLI's help can read them);
# they are re-exported here, beside the network built from them.
__all__ = [
    "ARCHITECTURES",
    "CAFFE_PREPROCESSING",
    "POOLINGS",
    "SQUEEZENET",
    "SQUEEZENET_FIRES",
    "TORCHVISION_PREPROCESSING",
    "FeatureInfo",
    "Preprocessing",
    "VGGFeatures",
    "layer_infos",
]

class VGGFeatures(nn.Module):
    """VGG conv stack returning the named taps.

    Args:
        arch: "vgg16" or "vgg19".
        taps: layer names to return, e.g. ("relu1_1", "relu4_2").
        pooling: "max" (the paper's default) or "avg" (Gatys et al. found it gives smoother
            results).
        preprocessing: how the weights expect their input.

    forward(image (B, 3, H, W) in [0, 1]) -> {tap: (B, C_tap, H / stride, W / stride)}.
    """

    # Buffers (register_buffer), declared so that they read as tensors rather than Module.__getattr__'s union.
    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        arch: str,
        taps: Sequence[str],
        *,
        pooling: str = "max",
        preprocessing: Preprocessing = TORCHVISION_PREPROCESSING,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        all_layers = layer_infos(arch)
        by_name = {info.name: index for index, info in enumerate(all_layers)}
        if not taps:
            raise ConfigError("no layers requested from the backbone")
        for tap in taps:
            check_choice(f"layer of {arch}", tap, by_name)
        self.taps = tuple(dict.fromkeys(taps))  # ordered, unique
        deepest = max(by_name[tap] for tap in self.taps)
        self.layers = tuple(all_layers[: deepest + 1])
        self.feature_info = {info.name: info for info in self.layers if info.name in self.taps}

        self.convs = nn.ModuleDict(self._make_convs())
        self.preprocessing = preprocessing
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def _make_convs(self) -> dict[str, nn.Conv2d]:
        convs, in_channels = {}, 3
        for info in self.layers:
            if info.kind == "conv":
                convs[info.name] = nn.Conv2d(in_channels, info.channels, 3, padding=1)
                in_channels = info.channels
        return convs

    @property
    def min_size(self) -> int:
        """The smallest height/width that keeps the deepest tap at least one pixel."""
        return max(info.stride for info in self.feature_info.values())

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        if self.preprocessing.channel_order == "BGR":
            image = image.flip(1)
        return (image * self.preprocessing.scale - self.mean) * self.inv_std

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(image)
        features: dict[str, torch.Tensor] = {}
        previous = ""
        for info in self.layers:
            if info.kind == "conv":
                x = self.convs[info.name](x)
            elif info.kind == "relu":
                # In place on a convolution's output unless it is a tap: one activation less to
                # allocate and keep (the convolution's backward needs its input, not its output).
                x = F.relu(x, inplace=previous not in self.feature_info)
            elif self.pooling == "max":
                x = F.max_pool2d(x, 2)
            else:
                x = F.avg_pool2d(x, 2)
            if info.name in self.feature_info:
                features[info.name] = x
            previous = info.name
        return features

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random weights for tests: He-normal kernels, zero biases, so activations keep their
        scale through the stack (PyTorch's default init shrinks them ~3x per layer)."""
        for module in self.convs.values():
            conv = cast(nn.Conv2d, module)  # _make_convs puts only convolutions in the ModuleDict
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if conv.bias is not None:
                    conv.bias.zero_()

    def load_conv_weights(self, state: dict[str, torch.Tensor], *, source: str) -> None:
        """Copy `{conv1_1.weight, conv1_1.bias, ...}` into the stack, checking every shape."""
        for name, conv in self.convs.items():
            for field in ("weight", "bias"):
                key = f"{name}.{field}"
                if key not in state:
                    raise WeightsError(f"{source}: no tensor {key!r} for {self.arch}")
                tensor = state[key]
                target = getattr(conv, field)
                if tuple(tensor.shape) != tuple(target.shape):
                    raise WeightsError(
                        f"{source}: {key} has shape {tuple(tensor.shape)}, {self.arch} needs {tuple(target.shape)}"
                    )
                with torch.no_grad():
                    target.copy_(tensor.to(target.dtype))
