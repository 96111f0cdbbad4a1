"""The Gram reference against hand-computed values and float64 einsum."""

from __future__ import annotations

import pytest
import torch

from styleforge.kernels import gram


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
