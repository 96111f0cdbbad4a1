"""The VGG backward pass written out as ordinary ops, so that it exports to ONNX.

torch cannot export autograd itself (``torch.autograd.grad`` inside a module fails with both
exporters), so the vector-Jacobian product of the conv stack with respect to the image is spelt
out: convolutions with the same weights transposed and flipped, ReLU masks saved by the forward pass,
max-pool backward as a first-max one-hot scatter (torch's tie rule), avg-pool backward as a 2x
nearest expand times 1/4. In eager mode this equals autograd.

Two graphs rather than one, because the upstream gradients depend on the forward's features:

    VGGForwardWithMasks: image -> (taps..., masks...)
    VGGBackward:         (masks..., tap gradients...) -> image gradient
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._backbone import FeatureInfo, VGGFeatures

__all__ = ["VGGBackward", "VGGForwardWithMasks", "expand_windows", "max_pool_first_max_mask", "saved_mask_layers",
           "typed_copy"]


def _compute_dtype(backbone: VGGFeatures) -> torch.dtype:
    """The convolutions' dtype (float32, or a half type in a typed export)."""
    return next(backbone.convs.parameters()).dtype  # the first convolution's weight


def _edge(compute: torch.dtype) -> torch.dtype:
    """The graph's input and output type: float32 around half convolutions, else their own."""
    return torch.float32 if compute in (torch.float16, torch.bfloat16) else compute


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A cast only where the type changes: an fp32 export gets no Cast nodes."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def typed_copy(backbone: VGGFeatures, dtype: torch.dtype) -> VGGFeatures:
    """A copy whose convolution weights are ``dtype`` (preprocessing buffers stay float32)."""
    copy = VGGFeatures(backbone.arch, backbone.taps, pooling=backbone.pooling, preprocessing=backbone.preprocessing)
    copy.load_state_dict(backbone.state_dict())
    copy.convs.to(dtype)
    return copy.eval()


def saved_mask_layers(backbone: VGGFeatures) -> tuple[FeatureInfo, ...]:
    """Layers whose backward needs a mask from the forward: every ReLU, and max pools."""
    return tuple(info for info in backbone.layers
                 if info.kind == "relu" or (info.kind == "pool" and backbone.pooling == "max"))


def max_pool_first_max_mask(x: torch.Tensor) -> torch.Tensor:
    """Which element of each 2x2 window is its first maximum (row-major), window-major.

    x (B, C, H, W) -> bool (B, 4C, H // 2, W // 2), channel 4c + k flagging window position
    k = 2 * row + column of channel c, the layout pixel_shuffle (ONNX DepthToSpace) expands.
    Built from four strided slices and comparisons, with no transposes: cheap in every runtime.
    Rows/columns that floor pooling drops (odd H or W) have no flag. Works on dynamic shapes.
    """
    height, width = x.shape[2], x.shape[3]
    even = x[:, :, : 2 * (height // 2), : 2 * (width // 2)]
    a, b = even[:, :, 0::2, 0::2], even[:, :, 0::2, 1::2]
    c, d = even[:, :, 1::2, 0::2], even[:, :, 1::2, 1::2]
    top = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
    first_a = a == top
    first_b = (b == top) & ~first_a
    first_c = (c == top) & ~(first_a | first_b)
    first_d = ~(first_a | first_b | first_c)
    batch, channels = x.shape[0], x.shape[1]
    stacked = torch.stack([first_a, first_b, first_c, first_d], dim=2)  # (B, C, 4, H/2, W/2)
    return stacked.reshape(batch, 4 * channels, height // 2, width // 2)


def expand_windows(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4C, h, w) window-major values -> (B, C, height, width): pixel_shuffle(2), then the
    row/column that floor pooling dropped (odd sizes) padded with zeros."""
    full = F.pixel_shuffle(values, 2)
    return F.pad(full, (0, width - full.shape[3], 0, height - full.shape[2]))


class VGGForwardWithMasks(nn.Module):
    """image (B, 3, H, W) -> (tap_1, ..., tap_n, mask_1, ..., mask_m), masks bool.

    With convolutions in a half type (``typed_copy``), the preprocessed image is cast to it and
    the taps back to float32: the graph's types say where half precision runs (what a strongly
    typed TensorRT network reads), and its inputs and outputs stay float32."""

    def __init__(self, backbone: VGGFeatures) -> None:
        super().__init__()
        self.backbone = backbone
        self.mask_layers = saved_mask_layers(backbone)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        backbone = self.backbone
        compute = _compute_dtype(backbone)
        x = backbone.preprocess(image)
        x = _as(x, compute)
        taps: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for info in backbone.layers:
            if info.kind == "conv":
                x = backbone.convs[info.name](x)
            elif info.kind == "relu":
                x = F.relu(x)
                masks[info.name] = x > 0
            elif backbone.pooling == "max":
                masks[info.name] = max_pool_first_max_mask(x)
                x = F.max_pool2d(x, 2)
            else:
                x = F.avg_pool2d(x, 2)
            if info.name in backbone.feature_info:
                taps[info.name] = x
        floats = tuple(_as(taps[name], _edge(compute)) for name in backbone.taps)
        return floats + tuple(masks[i.name] for i in self.mask_layers)


class VGGBackward(nn.Module):
    """(mask_1, ..., mask_m, grad_tap_1, ..., grad_tap_n) -> d loss / d image (B, 3, H, W)."""

    def __init__(self, backbone: VGGFeatures) -> None:
        super().__init__()
        self.backbone = backbone
        self.mask_layers = saved_mask_layers(backbone)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        count = len(self.mask_layers)
        masks = {info.name: mask for info, mask in zip(self.mask_layers, inputs[:count])}
        compute = _compute_dtype(backbone)
        upstream = {name: _as(value, compute) for name, value in zip(backbone.taps, inputs[count:])}
        grad: torch.Tensor | None = None
        for index in range(len(backbone.layers) - 1, -1, -1):
            info = backbone.layers[index]
            if info.name in upstream:
                grad = upstream[info.name] if grad is None else grad + upstream[info.name]
            if grad is None:
                continue
            if info.kind == "conv":
                # The input gradient of a stride-1 3x3 convolution is a convolution with the
                # kernels transposed (in <-> out) and flipped: written as Conv, not ConvTranspose,
                # because onnxruntime's CPU ConvTranspose took 1.4x Conv's time for the same FLOPs.
                weight = backbone.convs[info.name].get_parameter("weight")
                grad = F.conv2d(grad, weight.transpose(0, 1).flip([2, 3]), padding=1)
            elif info.kind == "relu":
                grad = grad * masks[info.name]  # Cast + Mul: onnxruntime's Where took twice as long
            else:
                # The layer before a pool is a ReLU, whose saved mask has the pool input's size.
                below = masks[backbone.layers[index - 1].name]
                grad = _pool_backward(grad, below.shape[2], below.shape[3], masks.get(info.name))
        assert grad is not None
        pre = backbone.preprocessing
        grad = _as(grad, _edge(_compute_dtype(backbone))) * (backbone.inv_std * pre.scale)
        return grad.flip(1) if pre.channel_order == "BGR" else grad


def _pool_backward(grad: torch.Tensor, height: int, width: int, max_mask: torch.Tensor | None) -> torch.Tensor:
    """2x2/stride-2 pool backward: each output gradient goes to its window's first maximum (max)
    or a quarter to each element (avg); the dropped row/column of odd sizes gets zero."""
    batch, channels = grad.shape[0], grad.shape[1]
    four = grad.unsqueeze(2).expand(batch, channels, 4, grad.shape[2], grad.shape[3])
    four = four.reshape(batch, 4 * channels, grad.shape[2], grad.shape[3])
    routed = four * max_mask if max_mask is not None else four * 0.25
    return expand_windows(routed, height, width)
