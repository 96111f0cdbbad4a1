"""Sliced Wasserstein style: exact sorting by hand, the histogram term against it, its gradient
with the matching held constant, targets, a render."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from styleforge.engine.objectives import (
    Window,
    SlicedStyleTerm,
    build_sliced_target,
    random_directions,
    sliced_wasserstein,
)

D = torch.float64


def _map(*channels):
    """(1, C, 1, N) features from C lists of N values."""
    return torch.tensor(channels, dtype=D)[None, :, None, :]


def _whole(image, compute):
    """over_windows without tiles: the whole image is one window."""
    return [compute({"a": image}, Window.whole(*image.shape[-2:]))]


def _target(styles, blend=None, seed=0):
    channels = styles[0].shape[1]
    return build_sliced_target(_whole, styles, blend or [1.0] * len(styles), ["a"], {}, {"a": channels}, seed=seed)


def _value(term, features):
    window = Window.whole(*features.shape[-2:])
    return term.local_value({"a": features}, window, term.statistics({"a": features}, window))


def test_sliced_wasserstein_matches_sorted_values_by_hand():
    axes = torch.eye(2, dtype=D)
    image, style = _map([3.0, 1.0, 2.0], [0.0, 0.0, 0.0]), _map([10.0, 30.0, 20.0], [2.0, 3.0, 1.0])
    # Sorted: 1, 2, 3 -> 10, 20, 30 and 0, 0, 0 -> 1, 2, 3; a mean over positions per direction.
    expected = (9**2 + 18**2 + 27**2) / 3 + (1 + 4 + 9) / 3
    assert sliced_wasserstein(image, style, axes).item() == pytest.approx(expected, rel=1e-12)
    # A diagonal direction: projections (x + y) / sqrt(2).
    diagonal = torch.tensor([[1.0, 1.0]], dtype=D) / math.sqrt(2)
    expected = ((1 - 12) ** 2 + (2 - 21) ** 2 + (3 - 33) ** 2) / 2 / 3  # style: 12, 33, 21
    assert sliced_wasserstein(image, style, diagonal).item() == pytest.approx(expected, rel=1e-12)
    assert sliced_wasserstein(style, style, axes).item() == 0.0


def test_sliced_wasserstein_interpolates_quantiles_when_counts_differ():
    # Image quantiles 1/4 and 3/4 fall at sorted style positions 0.5 and 2.5 of 0, 1, 2, 3.
    image, style = _map([4.0, 0.0]), _map([3.0, 0.0, 2.0, 1.0])
    expected = ((0 - 0.5) ** 2 + (4 - 2.5) ** 2) / 2
    assert sliced_wasserstein(image, style, torch.ones(1, 1, dtype=D)).item() == pytest.approx(expected, rel=1e-12)


def test_directions_are_seeded_unit_rows():
    directions = random_directions(5, seed=3)
    assert torch.allclose(directions @ directions.T, torch.eye(5, dtype=D), atol=1e-14)  # K = C: a basis
    assert torch.equal(directions, random_directions(5, seed=3))
    assert not torch.equal(directions, random_directions(5, seed=4))
    more = random_directions(4, 10, seed=0)
    assert more.shape == (10, 4) and torch.allclose(more.norm(dim=1), torch.ones(10, dtype=D))


def test_histogram_term_is_zero_on_the_style_and_close_to_exact_sorting(rng):
    style = torch.randn(1, 6, 30, 30, generator=rng, dtype=D) * 1.5 + 0.7
    style[:, 0] = style[:, 0].abs()  # a skewed channel
    target = _target([style])
    term = SlicedStyleTerm(target, {"a": 1.0})
    directions = target.directions["a"]
    projections = directions @ style.reshape(6, -1)
    assert target.variance["a"].item() == pytest.approx(projections.var(dim=1, unbiased=False).sum().item(), rel=1e-10)
    assert _value(term, style).item() < 1e-20
    # Within the style's range (beyond it, projections clamp to the edge bins and are pulled to the
    # style's extremes rather than to its outer quantiles), about a bin width from exact sorting.
    for scale, shift, size in ((1.0, 0.0, (20, 25)), (0.7, 1.0, (30, 30)), (1.2, 0.5, (17, 19))):
        image = torch.randn(1, 6, *size, generator=rng, dtype=D) * scale + shift
        exact = sliced_wasserstein(image, style, directions) / target.variance["a"]
        assert exact.item() > 0.05
        assert _value(term, image).item() == pytest.approx(exact.item(), rel=0.03)


def test_sliced_gradient_with_the_matching_held_constant_passes_gradcheck(rng):
    style = torch.randn(1, 3, 6, 6, generator=rng, dtype=D)
    term = SlicedStyleTerm(_target([style]), {"a": 1.0})
    image = torch.randn(1, 3, 4, 5, generator=rng, dtype=D)
    window = Window.whole(4, 5)
    stats = term.statistics({"a": image}, window)
    # T(p) of the unperturbed image, then frozen: the term's gradient is 2 (p - T(p)) by design.
    frozen = term.transport_targets("a", term.target.directions["a"] @ image.reshape(3, -1), stats["a/histogram"].mean)
    term.transport_targets = lambda layer, projections, histogram: frozen
    features = image.clone().requires_grad_(True)
    assert gradcheck(lambda f: term.local_value({"a": f}, window, stats), (features,))


def test_untiled_local_shares_of_a_partition_add_up(rng):
    """Regions' shares (divided by the whole count) sum to the whole image's value."""
    style = torch.randn(1, 4, 8, 8, generator=rng, dtype=D)
    term = SlicedStyleTerm(_target([style]), {"a": 1.0})
    image = torch.randn(1, 4, 6, 8, generator=rng, dtype=D)
    whole = Window.whole(6, 8)
    stats = term.statistics({"a": image}, whole)
    halves = [Window(0, 3, 0, 8, 0, 6, 0, 8, 6, 8), Window(3, 6, 0, 8, 0, 6, 0, 8, 6, 8)]
    parts = sum(term.local_value({"a": image}, half, stats) for half in halves)
    assert parts.item() == pytest.approx(term.local_value({"a": image}, whole, stats).item(), rel=1e-12)


def test_blended_targets_are_the_mixture(rng):
    style = torch.randn(1, 3, 7, 7, generator=rng, dtype=D)
    alone, twice = _target([style]), _target([style, style], [0.3, 0.7])
    for field in ("low", "width", "histogram", "variance"):
        assert torch.allclose(getattr(alone, field)["a"], getattr(twice, field)["a"], rtol=1e-12, atol=1e-15)
    other = torch.randn(1, 3, 7, 7, generator=rng, dtype=D) + 3
    mixed, ignored = _target([style, other], [1.0, 1.0]), _target([style, other], [1.0, 0.0])
    assert mixed.histogram["a"].sum(dim=1).allclose(torch.ones(3, dtype=D))
    both = torch.cat([style, other], dim=3)
    projections = mixed.directions["a"] @ both.reshape(3, -1)
    assert mixed.variance["a"].item() == pytest.approx(projections.var(dim=1, unbiased=False).sum().item(), rel=1e-10)
    assert torch.allclose(ignored.histogram["a"], alone.histogram["a"])  # weight 0: not even in the range
