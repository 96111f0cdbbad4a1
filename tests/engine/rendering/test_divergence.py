"""Divergence is an error naming the option, not a saturated image written with success."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, RenderError, render

FAST = dict(size=32, model="vgg19-random", device="cpu", levels=1, precision="fp32")  # the symptoms are fp32's


def _images():
    generator = torch.Generator().manual_seed(3)
    return torch.rand(3, 24, 32, generator=generator), torch.rand(3, 32, 32, generator=generator) ** 2


@pytest.mark.parametrize(("rate", "iterations", "symptom"), [
    (1e3, 3, "% of the image is pinned at 0 or 1"),  # what the clamp hid: a saturated image
    (10.0, 3, "the loss rose from"),
    (1e9, 10, "NaN/Inf"),
])
def test_an_absurd_learning_rate_is_a_render_error_naming_it(random_vgg19, rate, iterations, symptom):
    content, style = _images()
    config = RenderConfig(**FAST, iterations=iterations, optimizer="lbfgs", learning_rate=rate)
    with pytest.raises(RenderError) as caught:
        render(config, content, [style], backbone=random_vgg19)
    assert caught.value.field == "learning_rate"
    assert str(caught.value).startswith("learning_rate: ") and symptom in str(caught.value)


def test_a_divergence_under_bf16_also_offers_fp32(random_vgg19):
    """--precision auto is bf16 on CPUs that run it natively: the error says how to leave it."""
    content, style = _images()
    config = RenderConfig(**{**FAST, "precision": "bf16"}, iterations=3, optimizer="lbfgs", learning_rate=1e3)
    with pytest.raises(RenderError, match=r"L-BFGS, bf16, learning rate 1000\); lower it or use --precision fp32"):
        render(config, content, [style], backbone=random_vgg19)


def test_an_adam_rate_that_can_only_pin_every_pixel_is_refused_up_front():
    with pytest.raises(ConfigError, match="learning_rate: must be below 1 for adam"):
        RenderConfig(optimizer="adam", learning_rate=1.0)
    RenderConfig(optimizer="lbfgs", learning_rate=1.0)


def test_a_white_page_in_a_white_style_is_not_divergence(random_vgg19):
    white = torch.ones(3, 24, 32)
    result = render(RenderConfig(**FAST, iterations=5, optimizer="adam"), white, [torch.ones(3, 32, 32)],
                    backbone=random_vgg19)
    assert result.image.min() > 0.5


def test_a_sane_adam_render_is_not_divergence(random_vgg19):
    content, style = _images()
    render(RenderConfig(**FAST, iterations=10, optimizer="adam", learning_rate=0.05), content, [style],
           backbone=random_vgg19)


@pytest.mark.parametrize("field", ["learning_rate", "style_weight", "content_weight", "tv_weight", "mrf_weight"])
@pytest.mark.parametrize("value", [float("inf"), 1e39])
def test_values_that_can_only_diverge_are_refused_up_front(field, value):
    with pytest.raises(ConfigError, match=field):
        RenderConfig(**{field: value})


@pytest.mark.parametrize("iterations", [2, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_one_colour_image_at_its_floor_is_not_divergence(precision, iterations):
    """Issue 25, item 12: a 1x1 one-colour content in a style of its colour starts at the loss's
    floor (3e-9 in fp32, exactly 0 in bf16). L-BFGS's first step, scaled by the inverse of that
    near-zero gradient, took fp32's loss to 1e-3: 370000 times the start, over the old fixed
    floor of 1e-3, so "diverged"; bf16's gradient rounds to 0 and no step is taken."""
    one = torch.tensor([120 / 255, 140 / 255, 90 / 255]).view(3, 1, 1)
    config = RenderConfig(size=48, iterations=iterations, levels=1, model="vgg16-random", device="cpu",
                          precision=precision)
    result = render(config, one, [one.expand(3, 40, 40).clone()])
    assert (result.image - one).abs().max() < 0.05

