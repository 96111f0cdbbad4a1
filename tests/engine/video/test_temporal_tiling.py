"""The temporal term in a render: tiled evaluation equals untiled with it, and render() adds it
per level through extra_terms (the video renderer's only hook into the loop)."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import RenderConfig, load_backbone, render
from styleforge.engine.backends import TorchBackend
from styleforge.engine.objectives import (
    GramStyleTerm,
    Window,
    TemporalTerm,
    blend_statistics,
    content_style_objective,
    gram_statistics,
)
from styleforge.engine.rendering import evaluate, plan_tiles, receptive_radius, with_terms

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TAPS = STYLE_LAYERS + ("relu4_2",)


def test_tiled_evaluation_equals_untiled_with_the_temporal_term_in_float64():
    generator = torch.Generator().manual_seed(0)
    backbone = load_backbone("vgg16-random", TAPS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    size = (96, 112)
    content, image, reference = torch.rand(3, 1, 3, *size, generator=generator, dtype=torch.float64)
    style = torch.rand(1, 3, 64, 64, generator=generator, dtype=torch.float64)
    weights = (torch.rand(1, 1, *size, generator=generator) > 0.3).double()  # an occlusion-like mask
    grams = blend_statistics([gram_statistics(backend.features(style), Window.whole(64, 64), STYLE_LAYERS,
                                              backend.strides)], [1.0])
    base = content_style_objective(
        GramStyleTerm(grams, dict.fromkeys(STYLE_LAYERS, 1.0), backend.strides),
        content_targets={"relu4_2": backend.features(content)["relu4_2"]}, content_weight=1.0,
        style_weight=100.0, tv_weight=2.0, strides=backend.strides)
    objective = with_terms(base, [(TemporalTerm([(reference, weights)]), 50.0)])
    tiles = plan_tiles(*size, 32, receptive_radius(backbone.layers))
    assert len(tiles) >= 9

    expected_losses, expected = evaluate(backend, objective, image)
    losses, gradient = evaluate(backend, objective, image, tiles)
    assert expected_losses["temporal"].item() > 0
    for name in ("content", "style", "tv", "temporal", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-12)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-12
    # The temporal term is in that gradient: without it, the gradient differs.
    _, without = evaluate(backend, base, image, tiles)
    assert (without - gradient).abs().max() > 1e-3 * gradient.abs().max()


def test_render_adds_the_extra_terms_at_every_level_and_a_large_weight_holds_the_trusted_pixels():
    generator = torch.Generator().manual_seed(2)
    content = torch.rand(3, 48, 64, generator=generator)
    style = torch.rand(3, 32, 32, generator=generator).pow(3)
    reference = torch.rand(1, 3, 48, 64, generator=generator)
    trusted = torch.zeros(1, 1, 48, 64)
    trusted[..., :, :32] = 1.0  # the left half follows the reference; the right half is free
    shapes = []

    def extra(shape, device):
        shapes.append(shape)
        resized = torch.nn.functional.interpolate(reference, size=shape, mode="bilinear", align_corners=False)
        mask = torch.nn.functional.interpolate(trusted, size=shape, mode="nearest")
        return [(TemporalTerm([(resized.to(device), mask.to(device))]), 1e5)]

    config = RenderConfig(size=64, levels=2, iterations=15, model="vgg19-random", device="cpu", style_weight=100.0)
    events = []
    result = render(config, content, [style], extra_terms=extra, callback=events.append)
    assert shapes == [(34, 45), (48, 64)]  # built once per level, at its size
    assert "temporal" in events[-1].losses
    left = (result.image[:, :, :32] - reference[0, :, :, :32]).abs().mean()
    right = (result.image[:, :, 32:] - reference[0, :, :, 32:]).abs().mean()
    assert left < 0.05 < right, (left, right)


def test_render_leaves_the_caller_s_init_image_alone():
    """The optimiser updates its start in place: a start that shared the caller's tensor (the
    warped previous frame, also the temporal term's reference) zeroed the term as it went."""
    generator = torch.Generator().manual_seed(3)
    content, init = torch.rand(2, 3, 32, 48, generator=generator)
    kept = init.clone()
    config = RenderConfig(size=48, iterations=3, model="vgg19-random", device="cpu")
    result = render(config, content, [content], init_image=init)
    assert torch.equal(init, kept) and not torch.equal(result.image, kept)
