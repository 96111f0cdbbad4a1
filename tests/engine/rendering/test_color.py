"""Colour control: histogram matching of the styles, luminance transfer, and the options."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, load_image, render
from styleforge.engine.rendering import match_color_histogram, match_luminance_colors, prepare_inputs


def _moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.reshape(3, -1).double()
    mean = pixels.mean(dim=1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def test_histogram_matching_gives_the_style_the_contents_colour_mean_and_covariance(test_images):
    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    matched = match_color_histogram(style, content)
    assert matched.shape == style.shape and matched.dtype == style.dtype
    mean, covariance = _moments(matched)
    content_mean, content_covariance = _moments(content)
    assert torch.allclose(mean, content_mean, atol=1e-4)
    assert torch.allclose(covariance, content_covariance, atol=1e-4)
    # Not a copy of the content's statistics by accident: the style's own were far off.
    assert (_moments(style)[0] - content_mean).abs().max() > 0.05


def test_histogram_matching_keeps_the_styles_structure():
    """An affine map of colours: pixels that were equal stay equal, and order along a ramp
    is kept (the map is a whitening then a colouring, both positive definite)."""
    generator = torch.Generator().manual_seed(0)
    style = torch.rand(3, 20, 30, generator=generator)
    style[:, :, :5] = 0.5
    matched = match_color_histogram(style, torch.rand(3, 16, 16, generator=generator) * 0.3 + 0.2)
    assert torch.allclose(matched[:, :, :5], matched[:, :1, :1].expand(3, 20, 5), atol=1e-6)


def test_histogram_transfer_changes_the_styles_the_render_uses():
    generator = torch.Generator().manual_seed(1)
    content, style = torch.rand(3, 32, 32, generator=generator) * 0.2, torch.rand(3, 32, 32, generator=generator)
    inputs = prepare_inputs(RenderConfig(color_transfer="histogram"), content, [style])
    assert torch.allclose(inputs.styles[0], match_color_histogram(style, content))
    assert torch.equal(prepare_inputs(RenderConfig(), content, [style]).styles[0], style)
    with pytest.raises(ConfigError, match="color_transfer: histogram matches the styles to the content's colours"):
        prepare_inputs(RenderConfig(color_transfer="histogram"), None, [style])


def test_luminance_transfer_is_original_colors_by_either_name(random_vgg19):
    generator = torch.Generator().manual_seed(2)
    content, style = torch.rand(3, 32, 32, generator=generator), torch.rand(3, 32, 32, generator=generator)
    fast = dict(model="vgg19-random", device="cpu", size=32, levels=1, iterations=2)
    plain = render(RenderConfig(**fast), content, [style], backbone=random_vgg19).image
    for options in ({"color_transfer": "luminance"}, {"original_colors": True},
                    {"original_colors": True, "color_transfer": "luminance"}):
        config = RenderConfig(**fast, **options)
        assert config.objective.colors == "luminance"
        image = render(config, content, [style], backbone=random_vgg19).image
        assert torch.allclose(image, match_luminance_colors(plain, content), atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"color_transfer": "histo"}, "color_transfer: unknown value 'histo' (did you mean 'histogram'?)"),
        ({"color_transfer": "histogram", "original_colors": True}, "color_transfer: histogram contradicts original_colors"),
        ({"unstyled_color": "black"}, "unstyled_color: must be a colour written #rrggbb, got 'black'"),
    ],
)
def test_bad_colour_options_name_the_option(options, message):
    with pytest.raises(ConfigError) as error:
        RenderConfig.from_options(options)
    assert message in str(error.value)
