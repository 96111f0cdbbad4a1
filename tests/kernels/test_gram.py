"""The Gram reference against hand-computed values and float64 einsum."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from styleforge.kernels import gram, gram_cpu, gram_reference


def test_gram_of_one_hot_maps_is_diagonal():
    features = torch.zeros(1, 3, 2, 2)
    features[0, 0, 0, 0] = 1.0
    features[0, 1, 0, 1] = 1.0
    features[0, 2, 0, 1] = 2.0  # overlaps channel 1 at one position
    expected = torch.tensor([[1.0, 0, 0], [0, 1, 2], [0, 2, 4]]) / 4
    assert torch.equal(gram(features)[0], expected)


def test_gram_matches_einsum_in_float64(rng):
    features = torch.randn(2, 5, 7, 3, generator=rng, dtype=torch.float64)
    expected = torch.einsum("bchw,bdhw->bcd", features, features) / 21
    assert torch.allclose(gram(features), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_accumulate_in_float32(rng, dtype):
    features = torch.randn(1, 4, 16, 16, generator=rng)
    result = gram(features.to(dtype))
    assert result.dtype == torch.float32
    assert torch.allclose(result, gram(features.to(dtype).float()))


def test_gram_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram(torch.zeros(3, 4, 4))


@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_fast_path_matches_the_reference_with_its_gradient_in_float64(rng, channels_last):
    """gram_cpu (one product each way) against gram_reference, value and gradient, in float64;
    a channels-last input gives a channels-last gradient (what keeps the backward fast)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    features = torch.randn(2, 5, 4, 3, generator=rng, dtype=torch.float64).contiguous(memory_format=layout)
    assert torch.allclose(gram_cpu(features), gram_reference(features), rtol=1e-12, atol=1e-12)
    assert gradcheck(gram_cpu, (features.requires_grad_(True),))
    upstream = torch.randn(2, 5, 5, generator=rng, dtype=torch.float64)
    (fast,) = torch.autograd.grad(gram_cpu(features), features, upstream)
    (slow,) = torch.autograd.grad(gram_reference(features), features, upstream)
    assert torch.allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast.is_contiguous(memory_format=layout)
