"""Ruder et al.'s temporal term: its value and gradient by hand, and its place in an objective."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine.objectives import Objective, TemporalTerm, TotalVariationTerm, temporal_loss


def test_temporal_loss_and_its_gradient_by_hand():
    # Two pixels, three channels: D = 6. Pixel 0 is trusted (c = 1), pixel 1 is not (c = 0).
    image = torch.tensor([[[[0.5, 0.9]], [[0.2, 0.1]], [[0.0, 1.0]]]], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([[[[0.3, 0.0]], [[0.2, 0.0]], [[0.4, 0.0]]]], dtype=torch.float64)
    weights = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    value = temporal_loss(image, reference, weights)
    # (0.5-0.3)^2 + (0.2-0.2)^2 + (0.0-0.4)^2 = 0.04 + 0 + 0.16, over D = 6.
    assert value.item() == pytest.approx(0.2 / 6, rel=1e-12)
    (gradient,) = torch.autograd.grad(value, image)
    # d/dx = 2 c (x - w) / D: (0.4, 0, -0.8) / 6 at pixel 0, nothing at the untrusted pixel 1.
    expected = torch.tensor([[[[0.4, 0.0]], [[0.0, 0.0]], [[-0.8, 0.0]]]], dtype=torch.float64) / 6
    assert torch.allclose(gradient, expected, rtol=0, atol=1e-15)


def test_temporal_loss_passes_gradcheck_with_soft_weights():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    reference = torch.rand(1, 3, 5, 4, generator=generator, dtype=torch.float64)
    weights = torch.rand(1, 1, 5, 4, generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: temporal_loss(x, reference, weights), (image,))


def test_the_term_sums_its_references_and_weighs_in_the_objective_total():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 6, 7, generator=generator)
    near, far = torch.rand(2, 1, 3, 6, 7, generator=generator)
    ones, halves = torch.ones(1, 1, 6, 7), torch.full((1, 1, 6, 7), 0.5)
    term = TemporalTerm([(near, ones), (far, halves)])
    expected = temporal_loss(image, near, ones) + temporal_loss(image, far, halves)
    assert term.pixel_value(image).item() == pytest.approx(expected.item(), rel=1e-6)

    objective = Objective([TotalVariationTerm(), term], {"tv": 0.0, "temporal": 30.0})
    values = objective({}, image)
    assert values["temporal"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert values["total"].item() == pytest.approx(30.0 * expected.item(), rel=1e-6)


def test_a_term_without_references_or_with_mismatched_shapes_is_refused():
    with pytest.raises(ValueError, match="at least one reference"):
        TemporalTerm([])
    with pytest.raises(ValueError, match="height and width"):
        temporal_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 5))
