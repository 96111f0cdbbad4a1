"""Patch extraction and NCC matching references against hand-built and brute-force answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from styleforge.kernels import extract_patches, mrf_nearest, mrf_nearest_reference, normalize_patches


def test_extract_patches_matches_a_hand_built_example():
    features = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    patches = extract_patches(features, size=2, stride=2)
    # Positions (0,0), (0,2), (2,0), (2,2); each row: channel 0's 2x2 then channel 1's 2x2.
    assert patches.shape == (4, 8)
    assert patches[0].tolist() == [0, 1, 5, 6, 20, 21, 25, 26]
    assert patches[1].tolist() == [2, 3, 7, 8, 22, 23, 27, 28]
    assert patches[3].tolist() == [12, 13, 17, 18, 32, 33, 37, 38]
    assert extract_patches(features, size=3, stride=1).shape == (2 * 3, 18)


def test_extract_patches_rejects_too_small_features():
    with pytest.raises(ValueError, match="smaller than a 3x3 patch"):
        extract_patches(torch.zeros(1, 4, 2, 8), 3, 1)


def _brute_force(patches: np.ndarray, style: np.ndarray) -> np.ndarray:
    def unit(x):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-8)

    scores = unit(patches.astype(np.float64)) @ unit(style.astype(np.float64)).T
    return scores.argmax(axis=1)  # numpy also takes the first maximum


def test_nearest_matches_brute_force_numpy(rng):
    patches = torch.randn(300, 27, generator=rng)
    style = torch.randn(500, 27, generator=rng)
    index, score = mrf_nearest_reference(patches, style)
    assert np.array_equal(index.numpy(), _brute_force(patches.numpy(), style.numpy()))
    expected = (normalize_patches(patches) * normalize_patches(style)[index]).sum(1)
    assert torch.allclose(score, expected, atol=1e-6)


def test_nearest_is_argmax_not_argmin():
    style = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    index, score = mrf_nearest_reference(torch.tensor([[2.0, 0.1]]), style)
    assert index.item() == 0 and score.item() > 0.99


def test_ties_go_to_the_first_style_patch_and_zero_norm_gives_no_nan():
    style = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 3.0]])  # 1 and 2 tie (same direction)
    patches = torch.tensor([[5.0, 5.0], [0.0, 0.0]])
    for chunk in (1, 2, 4096):  # a tie across chunk borders keeps the earlier patch too
        index, score = mrf_nearest_reference(patches, style, chunk=chunk)
        assert index.tolist() == [1, 0]
        assert torch.isfinite(score).all() and score[1].item() == 0.0


def test_chunked_and_unchunked_agree(rng):
    patches = torch.randn(257, 18, generator=rng)
    style = torch.randn(131, 18, generator=rng)
    whole = mrf_nearest_reference(patches, style, chunk=10**6)
    for chunk in (1, 7, 64):
        pieces = mrf_nearest_reference(patches, style, chunk=chunk)
        assert torch.equal(pieces[0], whole[0])
        assert torch.allclose(pieces[1], whole[1])


def test_dispatcher_uses_the_reference_on_cpu(rng):
    patches, style = torch.randn(20, 9, generator=rng), torch.randn(30, 9, generator=rng)
    assert torch.equal(mrf_nearest(patches, style)[0], mrf_nearest_reference(patches, style)[0])
