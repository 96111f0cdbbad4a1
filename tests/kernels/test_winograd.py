"""Winograd F(2x2, 3x3) against F.conv2d (the reference), value and image gradient, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from styleforge.kernels import WinogradConv3x3, winograd_conv3x3


@pytest.mark.parametrize("size", [(8, 10), (7, 5), (1, 1)])
def test_matches_the_direct_convolution_with_its_gradient(rng, size):
    x = torch.randn(2, 6, *size, generator=rng, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, generator=rng, dtype=torch.float64)
    bias = torch.randn(5, generator=rng, dtype=torch.float64)
    upstream = torch.randn(2, 5, *size, generator=rng, dtype=torch.float64)
    fast = winograd_conv3x3(x, weight, bias)
    slow = F.conv2d(x, weight, bias, padding=1)
    assert torch.allclose(fast, slow, rtol=1e-12, atol=1e-12)
    (fast_grad,) = torch.autograd.grad(fast, x, upstream)
    (slow_grad,) = torch.autograd.grad(slow, x, upstream)
    assert torch.allclose(fast_grad, slow_grad, rtol=1e-12, atol=1e-12)
    assert fast.is_contiguous(memory_format=torch.channels_last) or size == (1, 1)


def test_the_module_wraps_a_conv_in_float32_within_rounding(rng):
    conv = torch.nn.Conv2d(32, 16, 3, padding=1).requires_grad_(False)
    x = torch.rand(1, 32, 24, 20, generator=rng).contiguous(memory_format=torch.channels_last)
    wrapped = WinogradConv3x3(conv)
    assert wrapped.weight is conv.weight  # the same parameters: state_dict and exports see no change
    assert ((wrapped(x) - conv(x)).abs().max() / conv(x).abs().max()).item() < 1e-5


def test_other_convolutions_are_refused():
    with pytest.raises(ValueError, match="3x3 convolutions with stride 1"):
        WinogradConv3x3(torch.nn.Conv2d(4, 4, 3, stride=2))
