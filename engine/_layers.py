"""The backbones' layer tables, without torch: names, kinds, channels and strides of every layer
(timm's FeatureInfo), the poolings, and each weight set's input preprocessing.

RenderConfig checks layer names against these, and the command line's help reads them, without
loading the network (engine/_backbone.py builds the network from the same tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import check_choice

__all__ = [
    "ARCHITECTURES",
    "CAFFE_PREPROCESSING",
    "OXFORD_VGG_PREPROCESSING",
    "POOLINGS",
    "SQUEEZENET",
    "SQUEEZENET_FIRES",
    "TORCHVISION_PREPROCESSING",
    "FeatureInfo",
    "Preprocessing",
    "layer_infos",
]

#: Convolutions per block.
ARCHITECTURES: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
#: SqueezeNet 1.1 (Iandola et al. 2016, torchvision's ``squeezenet1_1``): fire module -> (squeeze
#: channels, channels of each expand branch); a 3x3 stride-2 max pool follows conv1, fire3, fire5.
SQUEEZENET_FIRES: dict[str, tuple[int, int]] = {
    "fire2": (16, 64), "fire3": (16, 64), "fire4": (32, 128), "fire5": (32, 128),
    "fire6": (48, 192), "fire7": (48, 192), "fire8": (64, 256), "fire9": (64, 256)}
SQUEEZENET = "squeezenet1_1"
POOLINGS = ("max", "avg")


@dataclass(frozen=True)
class FeatureInfo:
    """One named layer output: its kind, channel count and stride relative to the input, and
    the kernel and step of the layer that makes it (what its receptive field grows by)."""

    name: str
    kind: str  # "conv", "relu", "pool" or "fire" (SqueezeNet: squeeze, expand 1x1 + 3x3, ReLUs)
    channels: int
    stride: int
    kernel: int = 1
    step: int = 1


@dataclass(frozen=True)
class Preprocessing:
    """How an sRGB [0, 1] image becomes the network's input: ((x[order] * scale) - mean) / std."""

    channel_order: str = "RGB"  # "RGB" or "BGR"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # in channel_order
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def mean_pixel(self) -> tuple[float, float, float]:
        """The sRGB [0, 1] pixel, in RGB order, that the network sees as zero: its mean pixel."""
        first, second, third = (value / self.scale for value in self.mean)
        return (first, second, third) if self.channel_order == "RGB" else (third, second, first)


#: torchvision's ImageNet preprocessing.
TORCHVISION_PREPROCESSING = Preprocessing()
#: Caffe-style BGR, 0-255, mean subtraction (HED and the original VGG release).
CAFFE_PREPROCESSING = Preprocessing("BGR", 255.0, (104.00699, 116.66877, 122.67892), (1.0, 1.0, 1.0))
#: The Oxford VGG release's own input: BGR, 0-255, minus its mean pixel (not HED's BSDS mean, which
#: CAFFE_PREPROCESSING carries). The same path through VGGFeatures.preprocess as vgg16-hed's.
OXFORD_VGG_PREPROCESSING = Preprocessing("BGR", 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))


def layer_infos(arch: str) -> list[FeatureInfo]:
    """Every layer of the architecture's conv stack, in order, with channels and stride."""
    if arch == SQUEEZENET:
        return _squeezenet_infos()
    check_choice("model architecture", arch, (*ARCHITECTURES, SQUEEZENET))
    infos: list[FeatureInfo] = []
    stride = 1
    for block, (convs, channels) in enumerate(zip(ARCHITECTURES[arch], _BLOCK_CHANNELS), start=1):
        for index in range(1, convs + 1):
            infos.append(FeatureInfo(f"conv{block}_{index}", "conv", channels, stride, kernel=3))
            infos.append(FeatureInfo(f"relu{block}_{index}", "relu", channels, stride))
        stride *= 2
        infos.append(FeatureInfo(f"pool{block}", "pool", channels, stride, kernel=2, step=2))
    return infos


def _squeezenet_infos() -> list[FeatureInfo]:
    infos = [FeatureInfo("conv1", "conv", 64, 2, kernel=3, step=2), FeatureInfo("relu1", "relu", 64, 2),
             FeatureInfo("pool1", "pool", 64, 4, kernel=3, step=2)]
    stride = 4
    for name, (_, expand) in SQUEEZENET_FIRES.items():
        infos.append(FeatureInfo(name, "fire", 2 * expand, stride, kernel=3))
        if name in ("fire3", "fire5"):
            stride *= 2
            infos.append(FeatureInfo(f"pool{name[-1]}", "pool", 2 * expand, stride, kernel=3, step=2))
    return infos
