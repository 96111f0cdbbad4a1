"""Losses against hand-computed values, gradients in float64, and the objective's sum."""

from __future__ import annotations

import torch
from torch.autograd import gradcheck

from styleforge.engine.objectives import content_loss, gatys_objective, style_loss, total_variation
from styleforge.kernels import gram


def test_total_variation_of_a_checkerboard():
    y, x = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    checker = ((x + y) % 2).float().view(1, 1, 6, 8)
    assert total_variation(checker).item() == 2.0  # every neighbour differs by 1, both directions
    assert total_variation(torch.full((1, 3, 5, 5), 0.3)).item() == 0.0
    stripes = (x % 2).float().view(1, 1, 6, 8)
    assert total_variation(stripes).item() == 1.0  # only horizontal neighbours differ


def test_content_loss_is_relative_to_the_target():
    target = torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1)
    assert content_loss(target, target).item() == 0.0
    assert content_loss(2 * target, target).item() == 1.0
    assert content_loss(torch.zeros_like(target), target).item() == 1.0
    # Invariant to the scale of the layer's activations.
    assert torch.isclose(content_loss(200 * target, 100 * target), torch.tensor(1.0))


def test_style_loss_is_relative_to_the_target_gram():
    target = torch.tensor([[[2.0, 1.0], [1.0, 3.0]]])
    assert style_loss(target, target).item() == 0.0
    assert style_loss(3 * target, target).item() == 4.0
    assert torch.isclose(style_loss(1e4 * target, 1e4 * (target + 1)), style_loss(target, target + 1))


def test_losses_pass_gradcheck_in_float64(rng):
    image = torch.rand(1, 3, 5, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 3, 5, 6, generator=rng, dtype=torch.float64)
    target_gram = gram(torch.rand(1, 3, 5, 6, generator=rng, dtype=torch.float64))
    assert gradcheck(total_variation, (image,))
    assert gradcheck(lambda x: content_loss(x, target), (image,))
    assert gradcheck(lambda x: style_loss(gram(x), target_gram), (image,))


def test_objective_is_the_weighted_sum_of_the_references(rng):
    features = {name: torch.rand(1, 4, 6, 6, generator=rng, dtype=torch.float64) for name in ("a", "b", "c")}
    content_target = {"c": torch.rand(1, 4, 6, 6, generator=rng, dtype=torch.float64)}
    style_target = {name: gram(torch.rand(1, 4, 6, 6, generator=rng, dtype=torch.float64)) for name in ("a", "b")}
    image = torch.rand(1, 3, 8, 8, generator=rng, dtype=torch.float64)
    objective = gatys_objective(
        content_targets=content_target, style_targets=style_target,
        content_weight=2.0, style_weight=10.0, tv_weight=0.5, style_layer_weights={"a": 3.0, "b": 1.0},
    )
    terms = objective(features, image)
    expected_style = 0.75 * style_loss(gram(features["a"]), style_target["a"]) + 0.25 * style_loss(
        gram(features["b"]), style_target["b"])
    assert torch.isclose(terms["content"], content_loss(features["c"], content_target["c"]))
    assert torch.isclose(terms["style"], expected_style)
    assert torch.isclose(terms["tv"], total_variation(image))
    assert torch.isclose(terms["total"], 2.0 * terms["content"] + 10.0 * terms["style"] + 0.5 * terms["tv"])


def test_objective_gradient_passes_gradcheck(rng):
    weight = torch.randn(4, 3, 3, 3, generator=rng, dtype=torch.float64)

    def encoder(x):  # a tiny stand-in for the backbone
        y = torch.nn.functional.conv2d(x, weight, padding=1).relu()
        return {"s": y, "c": y}

    content = torch.rand(1, 3, 6, 6, generator=rng, dtype=torch.float64)
    style = torch.rand(1, 3, 6, 6, generator=rng, dtype=torch.float64)
    objective = gatys_objective(
        content_targets={"c": encoder(content)["c"]}, style_targets={"s": gram(encoder(style)["s"])},
        content_weight=1.0, style_weight=5.0, tv_weight=0.1, style_layer_weights={"s": 1.0},
    )
    image = torch.rand(1, 3, 6, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x: objective(encoder(x), x)["total"], (image,))
