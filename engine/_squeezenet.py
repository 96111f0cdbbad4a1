"""SqueezeNet 1.1 (Iandola et al., 2016; torchvision's ``squeezenet1_1``) with named taps: the
light backbone (CS231n's style transfer uses it), about 1/85 of VGG16's convolution work
(2.65 against 226 GFLOP per forward + image gradient at 512x384, benchmarks/RESULTS.md); an
evaluation is only 13-20x faster, as the Grams, TV and L-BFGS do not shrink with the network.

Taps: conv1, relu1, pool1, fire2 ... fire9 (each fire module's output: the ReLUs of its 1x1 and
3x3 expand branches, concatenated), pool3, pool5; channels and strides in ``layer_infos``.

Departs from torchvision on purpose: conv1 and the three max pools pad one pixel at the top and
left (torchvision pads nothing and rounds its pools up), so every tap is exactly
floor(H / stride) x floor(W / stride), as VGG's are, and a tile's features line up with the whole
image's (what the planner and exact tiling rely on). The weights are the same; the features
differ by that one-pixel shift and along the bottom and right borders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._backbone import SQUEEZENET_FIRES, VGGFeatures

__all__ = ["SqueezeNetFeatures", "squeezenet_torchvision_to_named"]

#: torchvision's ``features`` index of each module with weights.
_TORCHVISION_INDEX = {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10,
                      "fire8": 11, "fire9": 12}
_BRANCHES = ("squeeze", "expand1x1", "expand3x3")


def _top_left_pad(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 1, 0))  # zeros: after a ReLU (max pools) or the mean colour (conv1)


class SqueezeNetFeatures(VGGFeatures):
    """SqueezeNet 1.1's feature stack returning the named taps (the VGGFeatures contract:
    ``taps``, ``layers``, ``feature_info``, preprocessing, weights by name).

    forward(image (B, 3, H, W) in [0, 1]) -> {tap: (B, C_tap, H // stride, W // stride)}.
    """

    def _make_convs(self) -> dict[str, nn.Conv2d]:
        convs, in_channels = {}, 3
        for info in self.layers:
            if info.kind == "conv":
                convs[info.name] = nn.Conv2d(in_channels, info.channels, 3, stride=2)
            elif info.kind == "fire":
                squeeze, expand = SQUEEZENET_FIRES[info.name]
                convs[f"{info.name}_squeeze"] = nn.Conv2d(in_channels, squeeze, 1)
                convs[f"{info.name}_expand1x1"] = nn.Conv2d(squeeze, expand, 1)
                convs[f"{info.name}_expand3x3"] = nn.Conv2d(squeeze, expand, 3, padding=1)
            in_channels = info.channels
        return convs

    def _fire(self, name: str, x: torch.Tensor) -> torch.Tensor:
        squeezed = F.relu(self.convs[f"{name}_squeeze"](x))
        return torch.cat([F.relu(self.convs[f"{name}_expand1x1"](squeezed)),
                          F.relu(self.convs[f"{name}_expand3x3"](squeezed))], dim=1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(image)
        features: dict[str, torch.Tensor] = {}
        for info in self.layers:
            if info.kind == "conv":
                x = self.convs[info.name](_top_left_pad(x))
            elif info.kind == "relu":
                x = F.relu(x)
            elif info.kind == "fire":
                x = self._fire(info.name, x)
            elif self.pooling == "max":
                x = F.max_pool2d(_top_left_pad(x), 3, 2)
            else:
                x = F.avg_pool2d(_top_left_pad(x), 3, 2)
            if info.name in self.feature_info:
                features[info.name] = x
        return features


def squeezenet_torchvision_to_named(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``features.3.squeeze.weight`` keys -> ``fire2_squeeze.weight`` (and
    ``features.0.weight`` -> ``conv1.weight``); the classifier is dropped."""
    named: dict[str, torch.Tensor] = {}
    for name, index in _TORCHVISION_INDEX.items():
        for field in ("weight", "bias"):
            if name == "conv1":
                pairs = [(f"features.{index}.{field}", f"conv1.{field}")]
            else:
                pairs = [(f"features.{index}.{branch}.{field}", f"{name}_{branch}.{field}") for branch in _BRANCHES]
            named.update({target: state[key] for key, target in pairs if key in state})
    return named

