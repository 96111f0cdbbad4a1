"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3) on the CPU.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): each 2x2 block of
outputs takes 16 products per channel pair instead of 36, so the matrix products, where a VGG's
time goes, do 2.25x fewer FLOPs; the input and output transforms are a few additions over
tensors in channels-last layout. The reference is ``F.conv2d`` (tested against it in float64).

The image gradient of such a convolution is the same convolution of the output gradient with the
kernels flipped and transposed, so the backward runs the same algorithm and saves nothing but the
transformed kernels (a direct convolution keeps its input for the backward).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["WinogradConv3x3", "winograd_conv3x3", "winograd_kernels"]

#: Kernel transform G (4x3) of F(2x2, 3x3).
_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def winograd_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) kernels -> (16, C, K): G g G^T for each channel pair, one matrix per tile element."""
    g = _G.to(weight.device)
    transformed = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)
    return transformed.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _input_tiles(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, H, W, C) channels-last rows -> V (16, B * rows * cols, C) = B^T d B of every 4x4 tile."""
    batch, height, width, channels = x.shape
    padded = F.pad(x, (0, 0, 1, 2 * cols + 1 - width, 1, 2 * rows + 1 - height))
    r = [padded[:, k:k + 2 * rows:2] for k in range(4)]
    row_terms = (r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3])
    out = x.new_empty(4, 4, batch, rows, cols, channels)
    for a, t in enumerate(row_terms):
        c = [t[:, :, k:k + 2 * cols:2] for k in range(4)]
        torch.sub(c[0], c[2], out=out[a, 0])
        torch.add(c[1], c[2], out=out[a, 1])
        torch.sub(c[2], c[1], out=out[a, 2])
        torch.sub(c[1], c[3], out=out[a, 3])
    return out.view(16, batch * rows * cols, channels)


def _output_tiles(m: torch.Tensor, batch: int, rows: int, cols: int, height: int, width: int) -> torch.Tensor:
    """M (16, B * rows * cols, K) -> A^T M A assembled as (B, H, W, K)."""
    kernels = m.shape[-1]
    m = m.view(4, 4, batch, rows, cols, kernels)
    s0 = m[0] + m[1] + m[2]
    s1 = m[1] - m[2] - m[3]
    y = m.new_empty(batch, rows, 2, cols, 2, kernels)
    for dy, s in enumerate((s0, s1)):
        torch.add(s[0] + s[1], s[2], out=y[:, :, dy, :, 0])
        torch.sub(s[1] - s[2], s[3], out=y[:, :, dy, :, 1])
    return y.view(batch, 2 * rows, 2 * cols, kernels)[:, :height, :width]


def _winograd(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, K, H, W), both channels-last, without bias."""
    batch, _, height, width = x.shape
    rows, cols = -(-height // 2), -(-width // 2)
    tiles = _input_tiles(x.permute(0, 2, 3, 1), rows, cols)
    y = _output_tiles(torch.bmm(tiles, kernels), batch, rows, cols, height, width)
    return y.permute(0, 3, 1, 2)


class _WinogradFunction(torch.autograd.Function):
    @staticmethod
    # ctx is Any, as in torch.autograd.Function: FunctionCtx declares neither the attributes a
    # forward sets on it nor saved_tensors.
    def forward(ctx: Any, x: torch.Tensor, forward_kernels: torch.Tensor, backward_kernels: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.backward_kernels = backward_kernels
        y = _winograd(x, forward_kernels)
        return y if bias is None else y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        grad = grad.contiguous(memory_format=torch.channels_last)
        return _winograd(grad, ctx.backward_kernels), None, None, None


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """As ``F.conv2d(x, weight, bias, padding=1)`` for (K, C, 3, 3) kernels, differentiable in
    ``x`` only (the kernels are constants here: a backbone's frozen weights)."""
    flipped = weight.flip(2, 3).transpose(0, 1)
    return _WinogradFunction.apply(x.contiguous(memory_format=torch.channels_last), winograd_kernels(weight),
                                   winograd_kernels(flipped), bias)


class WinogradConv3x3(torch.nn.Module):
    """A frozen 3x3, stride-1, padding-1 ``nn.Conv2d`` run by Winograd F(2x2, 3x3): its kernels
    are transformed once, here (load the weights before wrapping)."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1:
            raise ValueError("WinogradConv3x3 takes 3x3 convolutions with stride 1 and padding 1")
        self.weight, self.bias = conv.weight, conv.bias
        weight = conv.weight.detach()
        self.register_buffer("forward_kernels", winograd_kernels(weight), persistent=False)
        self.register_buffer("backward_kernels", winograd_kernels(weight.flip(2, 3).transpose(0, 1)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        return _WinogradFunction.apply(x.contiguous(memory_format=torch.channels_last), self.forward_kernels,
                                       self.backward_kernels, bias)
