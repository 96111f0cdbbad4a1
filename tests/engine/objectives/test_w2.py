"""Wasserstein-2 style: closed forms, the term's normalisation, gradients through eigh, a render."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from styleforge.engine.objectives import (
    Window,
    W2StyleTerm,
    content_style_objective,
    gaussian_fit,
    gaussian_statistics,
    sqrtm_psd,
    wasserstein2_gaussian,
)

D = torch.float64


def _w2(mean, covariance, target_mean, target_covariance):
    as_tensor = lambda value: torch.tensor(value, dtype=D)[None]  # noqa: E731
    return wasserstein2_gaussian(as_tensor(mean), as_tensor(covariance), as_tensor(target_mean),
                                 as_tensor(target_covariance)).item()


def _targets(style, layer="a"):
    stats = gaussian_statistics({layer: style}, Window.whole(*style.shape[-2:]), [layer], {})
    return {key: value.mean for key, value in stats.items()}


def _term_value(term, features):
    layer = term.layers[0]
    return term.global_value(term.statistics({layer: features}, Window.whole(*features.shape[-2:])))


def test_w2_of_1d_and_axis_aligned_gaussians_is_the_closed_form():
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2.
    assert _w2([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2, rel=1e-12)
    # Commuting (diagonal) covariances: the 1-D formula per axis.
    assert _w2([0.0, 1.0], [[1.0, 0.0], [0.0, 16.0]], [2.0, 1.0], [[4.0, 0.0], [0.0, 1.0]]) == pytest.approx(
        4 + (1 - 2) ** 2 + (4 - 1) ** 2, rel=1e-12)
    assert _w2([0.5, -1.0], [[2.0, 0.3], [0.3, 1.0]], [0.5, -1.0], [[2.0, 0.3], [0.3, 1.0]]) == pytest.approx(
        0.0, abs=1e-12)


def test_w2_of_non_commuting_2d_gaussians_is_the_closed_form():
    # For 2x2 PSD M, tr(M^1/2) = sqrt(tr M + 2 sqrt(det M)); det(S^1/2 A S^1/2) = det A det S.
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=D)
    s = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=D)
    cross = math.sqrt((a @ s).trace().item() + 2 * math.sqrt(a.det().item() * s.det().item()))
    expected = 1.0 + a.trace().item() + s.trace().item() - 2 * cross
    assert _w2([1.0, 0.0], a.tolist(), [0.0, 0.0], s.tolist()) == pytest.approx(expected, rel=1e-12)
    root = sqrtm_psd(s)
    assert torch.allclose(root @ root, s, atol=1e-14) and torch.allclose(root, root.T)


def test_term_is_the_relative_w2_of_the_gaussian_fits(rng):
    style = torch.randn(1, 4, 5, 5, generator=rng, dtype=D) * 2 + 1
    image = torch.randn(1, 4, 6, 7, generator=rng, dtype=D)
    exact = W2StyleTerm(_targets(style), {"a": 1.0}, jitter=0.0)
    mean, covariance = gaussian_fit(image)
    style_mean, style_covariance = gaussian_fit(style)
    magnitude = style_covariance.diagonal(dim1=-2, dim2=-1).sum() + style_mean.pow(2).sum()
    expected = wasserstein2_gaussian(mean, covariance, style_mean, style_covariance) / magnitude
    assert _term_value(exact, image).item() == pytest.approx(expected.item(), rel=1e-12)
    # An image with no features at all scores 1 (tr(Sigma_s) + |mu_s|^2 relative to itself).
    assert _term_value(exact, torch.zeros_like(image)).item() == pytest.approx(1.0, rel=1e-12)
    # The default jitter moves the value a little, and keeps the style itself at 0.
    jittered = W2StyleTerm(_targets(style), {"a": 1.0})
    assert _term_value(jittered, image).item() == pytest.approx(expected.item(), rel=1e-3)
    assert abs(_term_value(jittered, style).item()) < 1e-12


def test_layer_weights_are_normalised(rng):
    style = {name: torch.randn(1, 3, 4, 4, generator=rng, dtype=D) for name in ("a", "b")}
    image = {name: torch.randn(1, 3, 4, 4, generator=rng, dtype=D) for name in ("a", "b")}
    targets = {**_targets(style["a"], "a"), **_targets(style["b"], "b")}
    both = W2StyleTerm(targets, {"a": 3.0, "b": 1.0})
    alone = {name: W2StyleTerm(targets, {name: 1.0}) for name in ("a", "b")}
    whole = Window.whole(4, 4)
    value = both.global_value(both.statistics(image, whole))
    parts = {name: term.global_value(term.statistics(image, whole)) for name, term in alone.items()}
    assert value.item() == pytest.approx(0.75 * parts["a"].item() + 0.25 * parts["b"].item(), rel=1e-12)


def test_w2_gradient_through_eigh_passes_gradcheck(rng):
    """Through the term and a tiny encoder (distinct eigenvalues), and through the reference."""
    weight = torch.randn(3, 3, 3, 3, generator=rng, dtype=D)

    def encoder(x):
        return {"a": torch.nn.functional.conv2d(x, weight, padding=1)}

    style = torch.rand(1, 3, 5, 5, generator=rng, dtype=D)
    objective = content_style_objective(W2StyleTerm(_targets(encoder(style)["a"]), {"a": 1.0}),
                                        content_targets=None, content_weight=0.0, style_weight=1.0, tv_weight=0.0)
    image = torch.rand(1, 3, 4, 5, generator=rng, dtype=D, requires_grad=True)
    covariance = gaussian_fit(encoder(image)["a"])[1][0]
    gaps = torch.linalg.eigvalsh(covariance.detach()).diff()
    assert gaps.min() > 1e-3 * gaps.max()  # distinct eigenvalues
    assert gradcheck(lambda x: objective(encoder(x), x)["total"], (image,))

    style_mean, style_covariance = gaussian_fit(encoder(style)["a"])
    assert gradcheck(lambda f: wasserstein2_gaussian(*gaussian_fit(f), style_mean, style_covariance),
                     (encoder(image)["a"].detach().requires_grad_(True),))


def test_rank_deficient_covariances_keep_a_finite_gradient(rng):
    """Fewer positions than channels (deep layers of small images): repeated zero eigenvalues,
    where sqrt's derivative is infinite without the jitter."""
    style = torch.randn(1, 6, 1, 3, generator=rng, dtype=D)
    image = torch.randn(1, 6, 2, 1, generator=rng, dtype=D, requires_grad=True)
    term = W2StyleTerm(_targets(style), {"a": 1.0})
    value = _term_value(term, image)
    (gradient,) = torch.autograd.grad(value, image)
    assert torch.isfinite(value) and torch.isfinite(gradient).all() and gradient.abs().max() > 0
