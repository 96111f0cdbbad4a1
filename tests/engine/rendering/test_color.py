"""Colour control: histogram matching of the styles, luminance transfer, the palette start, and the options."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, load_image, render, resize_long_side, resize_to
from styleforge.engine.rendering import (
    level_inputs,
    match_color_histogram,
    match_luminance_colors,
    palette_content,
    prepare_inputs,
    rgb_to_yiq,
)


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
    # Both from the content (a luminance transfer starts there; a plain render starts from the palette).
    fast = dict(model="vgg19-random", device="cpu", size=32, levels=1, iterations=2, init="content")
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
        ({"color_transfer": "histogram", "original_colors": True},
         "color_transfer: histogram contradicts original_colors"),
        ({"unstyled_color": "black"}, "unstyled_color: must be a colour written #rrggbb, got 'black'"),
    ],
)
def test_bad_colour_options_name_the_option(options, message):
    with pytest.raises(ConfigError) as error:
        RenderConfig.from_options(options)
    assert message in str(error.value)


def _luminance(image: torch.Tensor) -> torch.Tensor:
    return (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * image).sum(0)


def test_palette_start_takes_the_styles_luminance_histogram_and_keeps_the_photos_order(test_images):
    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    start = palette_content(content, [style])
    assert start.shape == content.shape and start.dtype == content.dtype
    levels = torch.linspace(0.05, 0.95, 19)
    wanted = torch.quantile(_luminance(style).flatten(), levels)
    assert (torch.quantile(_luminance(content).flatten(), levels) - wanted).abs().max() > 0.1  # far off before
    assert (torch.quantile(_luminance(start).flatten(), levels) - wanted).abs().max() < 0.02  # the clamp moves a few
    # A monotone map of luminance: the photo's structure is kept.
    ranks = torch.stack([_luminance(image).flatten().argsort().argsort().float() for image in (content, start)])
    assert torch.corrcoef(ranks)[0, 1] > 0.99


def _bands(generator, height, width, colours, spread=0.02):
    """(3, height, width) of horizontal bands, one per colour, each with a little noise."""
    rows = torch.cat([torch.tensor(c)[:, None].expand(3, height // len(colours)) for c in colours], dim=1)
    return rows[:, :, None].expand(3, height, width) + spread * torch.rand(3, height, width, generator=generator)


def test_the_colour_that_fills_a_luminance_band_becomes_the_paintings_colour_there():
    """A photo of a mid-bright blue sky over white walls and a dark river, a painting of an orange
    sky, cream and dark blue in the same shares: the sky turns orange (an affine colour match
    keeps it bluish), the walls cream, the river dark blue; a red roof as bright as the sky stays
    apart from it."""
    generator = torch.Generator().manual_seed(3)
    sky, wall, river = (0.25, 0.45, 0.85), (0.95, 0.95, 0.93), (0.08, 0.10, 0.12)
    content = _bands(generator, 60, 40, [wall, sky, river])  # luminance: 0.94, 0.44, 0.09
    content[:, 24:30, :8] = torch.tensor([0.85, 0.3, 0.25])[:, None, None]  # the roof: luminance 0.46
    orange, cream, navy = (0.9, 0.4, 0.1), (0.95, 0.9, 0.75), (0.1, 0.12, 0.25)
    style = _bands(generator, 45, 30, [cream, orange, navy])  # luminance: 0.89, 0.52, 0.13
    start = palette_content(content, [style])
    for rows, colour in ((slice(2, 18), cream), (slice(32, 38), orange), (slice(42, 58), navy)):
        mean = start[:, rows, 8:].mean(dim=(1, 2))
        assert (mean - torch.tensor(colour)).abs().max() < 0.06, (colour, mean)
    roof, sky_start = start[:, 24:30, :8].mean(dim=(1, 2)), start[:, 32:38, 8:].mean(dim=(1, 2))
    assert (roof - sky_start).abs().max() > 0.1, (roof, sky_start)


def test_palette_start_of_blended_styles_weighs_each_style_by_its_blend_weight():
    generator = torch.Generator().manual_seed(4)
    content = torch.rand(3, 24, 24, generator=generator)
    # Both large enough for all 32 luminance bands, so the band count is the same in both calls.
    a, b = torch.rand(3, 24, 24, generator=generator) * 0.5, torch.rand(3, 30, 20, generator=generator) * 0.5 + 0.5
    blended = palette_content(content, [a, b], [0.75, 0.25])
    assert torch.allclose(blended, palette_content(content, [a, a, a, b]), atol=1e-6)
    assert not torch.allclose(blended, palette_content(content, [a, b]), atol=1e-2)


def test_palette_start_with_maps_maps_each_region_to_its_own_style_region():
    """Left half of the content is region 0, right half region 1: region 0 takes the luminance of
    region 0 of the style only; region 1, when kept (the unstyled colour), keeps the photo's. The
    two meet through softened masks (two 3-pixel box blurs at this size): no step at the border."""
    generator = torch.Generator().manual_seed(5)
    content = torch.rand(3, 20, 40, generator=generator) * 0.2 + 0.4
    style = torch.cat([torch.rand(3, 16, 8, generator=generator) * 0.2 + 0.1,  # region 0: dark
                       torch.rand(3, 16, 8, generator=generator) * 0.2 + 0.7], dim=2)  # region 1: light
    content_labels = torch.zeros(1, 2, 20, 40)
    content_labels[0, 0, :, :20] = content_labels[0, 1, :, 20:] = 1
    style_labels = torch.zeros(1, 2, 16, 16)
    style_labels[0, 0, :, :8] = style_labels[0, 1, :, 8:] = 1
    start = palette_content(content, [style], content_labels=content_labels, style_labels=[style_labels], keep=1)
    assert _luminance(start[:, :, :17]).mean() == pytest.approx(float(_luminance(style[:, :, :8]).mean()), abs=0.02)
    assert torch.equal(start[:, :, 23:], content[:, :, 23:])
    columns = _luminance(start).mean(dim=0)
    assert (columns[17:23].diff() > 0).all()  # from the dark palette to the photo, step by step
    both = palette_content(content, [style], content_labels=content_labels, style_labels=[style_labels])
    assert _luminance(both[:, :, 23:]).mean() == pytest.approx(float(_luminance(style[:, :, 8:]).mean()), abs=0.02)


def test_a_palette_render_starts_from_the_content_in_the_styles_palette_and_adds_its_detail(random_vgg19):
    """init = palette: the first evaluation is at the content recoloured at the first level's size;
    a finer level's start (level_start = detail) adds that image's detail band, not the photo's."""
    generator = torch.Generator().manual_seed(5)
    # A grey photo (its detail the same in every channel) and a style whose first two channels
    # run opposite ways: the two bands differ in sign in the second channel.
    grey = torch.rand(1, 48, 64, generator=generator)
    content = (0.35 + 0.3 * grey + 0.02 * torch.rand(3, 48, 64, generator=generator))
    ramp = torch.rand(1, 40, 40, generator=generator)
    style = torch.cat([0.2 + 0.3 * ramp, 0.5 - 0.3 * ramp, 0.3 + 0.02 * torch.rand(1, 40, 40, generator=generator)])
    config = RenderConfig(size=64, levels=2, level_scale=2.0, iterations=(3, 1), init="palette",
                          model="vgg19-random", device="cpu", precision="fp32")
    seen = []  # (level, image) of each evaluation; an event's image is the live one: copy it
    render(config, content, [style], backbone=random_vgg19,
           callback=lambda event: seen.append((event.level, event.image.clone())))
    first = seen[0][1]
    assert torch.allclose(first, palette_content(resize_to(content, 24, 32), [resize_long_side(style, 32)]),
                          atol=1e-6)
    fine = next(image for level, image in seen if level == 1)
    fine_palette = palette_content(resize_to(content, 48, 64), [resize_long_side(style, 64)])
    band = fine_palette - resize_to(resize_to(fine_palette, 24, 32), 48, 64)
    photo_band = resize_to(content, 48, 64) - resize_to(resize_to(content, 24, 32), 48, 64)
    # The coarse level's last step is not seen by an evaluation: compare bands, not pixels.
    fine_band = fine - resize_to(resize_to(fine, 24, 32), 48, 64)
    to_palette, to_photo = (fine_band - band).pow(2).mean(), (fine_band - photo_band).pow(2).mean()
    assert to_palette < 0.1 * to_photo, (to_palette, to_photo)


def test_a_palette_start_without_a_content_is_noise_as_a_content_start_is(random_vgg19):
    style = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(6))
    options = dict(size=32, levels=1, iterations=1, model="vgg19-random", device="cpu", precision="fp32")
    starts = {}
    for init in ("palette", "content"):
        seen = []
        render(RenderConfig(**options, init=init), None, [style], backbone=random_vgg19,
               callback=lambda event: seen.append(event.image.clone()))
        starts[init] = seen[0]
    assert torch.equal(starts["palette"], starts["content"])


@pytest.mark.parametrize("colors", [{"color_transfer": "luminance"}, {"color_transfer": "histogram"},
                                    {"original_colors": True}])
def test_with_the_contents_colours_asked_for_the_palette_start_is_the_content(random_vgg19, colors):
    generator = torch.Generator().manual_seed(7)
    content, style = torch.rand(3, 24, 32, generator=generator), torch.rand(3, 32, 32, generator=generator) * 0.3
    seen = []
    render(RenderConfig(size=32, levels=1, iterations=1, model="vgg19-random", device="cpu", precision="fp32",
                        **colors), content, [style], backbone=random_vgg19,
           callback=lambda event: seen.append(event.image.clone()))
    assert torch.equal(seen[0], content)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_palette_start_on_cuda_is_the_cpus(test_images):
    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    labels = torch.zeros(1, 2, *content.shape[-2:])
    labels[0, 0, :, : content.shape[-1] // 2] = 1
    labels[0, 1, :, content.shape[-1] // 2:] = 1
    style_labels = torch.zeros(1, 2, *style.shape[-2:])
    style_labels[0, 0, : style.shape[-2] // 3] = 1
    style_labels[0, 1, style.shape[-2] // 3:] = 1
    for maps in ({}, {"content_labels": labels, "style_labels": [style_labels]}):
        cpu = palette_content(content, [style], **maps)
        cuda = palette_content(content.cuda(), [style.cuda()],
                               **{key: value.cuda() if key == "content_labels" else [v.cuda() for v in value]
                                  for key, value in maps.items()})
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-5, rtol=0)


def test_palette_start_applied_in_chunks_and_fitted_on_a_subsample_is_the_same_start(test_images, monkeypatch):
    """Large levels: the map is fitted on an even subsample and applied chunk by chunk; chunks
    change nothing, a subsample of a quarter of the pixels little (at 2048 px, 2^18 of 3.1 M
    pixels moved a channel by 0.0008 on average)."""
    from styleforge.engine.rendering import _color

    content = load_image(test_images / "tubingen.jpg")
    style = load_image(test_images / "starry_night.jpg")
    whole = palette_content(content, [style])
    monkeypatch.setattr(_color, "_CHUNK", 1000)
    assert torch.equal(palette_content(content, [style]), whole)
    monkeypatch.setattr(_color, "_FIT_PIXELS", content[0].numel() // 4)
    fitted = palette_content(content, [style])
    assert not torch.equal(fitted, whole)  # the subsample was used
    assert (fitted - whole).abs().mean() < 0.01 and (fitted - whole).abs().max() < 0.1


def test_an_init_image_replaces_the_palette_start(random_vgg19):
    """A given start (a video's warped frame) is the start: no palette is built for the level,
    and a finer level adds back the photo's own detail."""
    generator = torch.Generator().manual_seed(8)
    content, style = torch.rand(3, 24, 32, generator=generator), torch.rand(3, 32, 32, generator=generator) * 0.3
    config = RenderConfig(size=32, model="vgg19-random", device="cpu")
    for init_image, built in ((None, True), (torch.rand(3, 24, 32, generator=generator), False)):
        inputs = prepare_inputs(config, content, [style], init_image=init_image)
        level = level_inputs(config, inputs, (24, 32), torch.device("cpu"), random_vgg19)
        assert (level.palette_content is not None) == built
        assert torch.equal(level.start_content, level.palette_content if built else level.content)


def _local_noise(channels: torch.Tensor) -> float:
    """Std of (C, H, W) minus its 5x5 local mean: the pixel-scale speckle."""
    mean = torch.nn.functional.avg_pool2d(channels[None], 5, 1, 2, count_include_pad=False)[0]
    return float((channels - mean).std())


def test_an_image_in_its_own_palette_is_itself(test_images):
    image = load_image(test_images / "tubingen.jpg")
    torch.testing.assert_close(palette_content(image, [image]), image, atol=2e-3, rtol=0)


def test_palette_start_does_not_blow_up_a_photos_noise():
    """A grey photo with JPEG-like colour noise (0.002), a flat grey area with luminance noise
    (0.004) over 60% of the pixels: stretched to a colourful, wide-ranging painting without limits
    the noise came out at 0.17 (colour) and 0.062 (luminance); the limits hold it to 0.02 and 0.031."""
    generator = torch.Generator().manual_seed(9)
    ramp = torch.linspace(0.1, 0.9, 64)[None, None, :].expand(3, 48, 64)
    grey = (ramp + 0.003 * torch.randn(3, 48, 64, generator=generator)).clamp(0, 1)
    colourful = torch.rand(3, 40, 40, generator=generator)
    assert _local_noise(rgb_to_yiq(palette_content(grey, [colourful]))[1:]) < 0.04
    flat = torch.cat([0.5 + 0.004 * torch.randn(1, 30, 64, generator=generator),
                      torch.linspace(0, 1, 64)[None, None, :].expand(1, 18, 64)], dim=1).expand(3, 48, 64)
    wide = torch.rand(1, 40, 40, generator=generator).expand(3, 40, 40)
    assert _local_noise(palette_content(flat, [wide]).mean(0, keepdim=True)[:, :30]) < 0.045


def test_palette_start_from_a_one_colour_style_is_that_colour_everywhere_but_in_brightness(test_images):
    content = load_image(test_images / "tubingen.jpg")
    style = torch.tensor([0.8, 0.3, 0.1])[:, None, None].expand(3, 20, 20)
    start = palette_content(content, [style])
    assert torch.isfinite(start).all()
    torch.testing.assert_close(start, style[:, :1, :1].expand_as(start), atol=1e-5, rtol=0)


def test_with_upsampled_levels_only_the_first_level_builds_a_palette(random_vgg19, monkeypatch):
    from styleforge.engine.rendering import _inputs

    built = []
    real = _inputs.palette_content

    def counted(content, *args, **kwargs):
        built.append(tuple(content.shape))
        return real(content, *args, **kwargs)

    monkeypatch.setattr(_inputs, "palette_content", counted)
    generator = torch.Generator().manual_seed(10)
    content, style = torch.rand(3, 48, 64, generator=generator), torch.rand(3, 40, 40, generator=generator)
    for level_start, count in (("upsample", 1), ("detail", 2)):
        built.clear()
        render(RenderConfig(size=64, levels=2, level_scale=2.0, iterations=1, level_start=level_start,
                            model="vgg19-random", device="cpu"), content, [style], backbone=random_vgg19)
        assert len(built) == count, (level_start, built)


def test_the_default_start_is_the_palette_and_the_photo_preset_starts_from_the_photo():
    assert RenderConfig().optimization.init == "palette"
    assert RenderConfig.mrf_defaults().optimization.init == "palette"
    assert RenderConfig(photo=True).optimization.init == "content"
    for init in ("content", "palette", "noise", "gray", "style"):
        assert RenderConfig(init=init).optimization.init_image is None
