"""The render loop on a random backbone: it optimises, counts, reports, and fails cleanly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from styleforge.engine import (
    ConfigError,
    RenderConfig,
    RenderError,
    RenderInterrupted,
    render,
    resize_long_side,
    resize_to,
)
from styleforge.engine.objectives import Objective, Statistic, blend_statistics
from styleforge.engine.rendering import match_luminance_colors
from styleforge.engine._models import MODELS
from styleforge.engine.rendering._inputs import initial_image
from styleforge.engine.rendering import rgb_to_yiq as _rgb_to_yiq
from styleforge.kernels import gram

FAST = dict(size=48, model="vgg19-random", device="cpu")


def style_grams(backbone, styles, blend, layers):
    """Blended target Grams of (1, 3, H, W) styles, as the target builder computes them."""
    per_style = [{layer: Statistic(gram(backbone(style)[layer]), 1) for layer in layers} for style in styles]
    return blend_statistics(per_style, blend)


def _images(rng):
    content = torch.rand(3, 40, 56, generator=rng)
    style = torch.rand(3, 32, 32, generator=rng).pow(3)  # a different distribution from the content
    return content, style


def _style_term(backbone, image, style, config):
    """The style loss of an image (1, 3, H, W), computed independently of the render loop."""
    targets = style_grams(backbone, [style[None]], [1.0], config.objective.style_layers)
    features = backbone(image)
    return sum(((gram(features[layer]) - target).pow(2).sum() / target.pow(2).sum()).item()
               for layer, target in targets.items()) / len(targets)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_render_lowers_the_style_loss_several_fold(random_vgg19, rng, optimizer):
    content, style = _images(rng)
    config = RenderConfig(**FAST, iterations=40, optimizer=optimizer, style_weight=100.0,
                          **({"learning_rate": 0.05} if optimizer == "adam" else {}))
    events = []
    result = render(config, content, [style], backbone=random_vgg19, callback=events.append)
    assert [e.iteration for e in events] == list(range(1, 41))  # one event per evaluation
    assert result.iterations == 40
    assert result.image.shape == (3, 34, 48)  # long side 48, aspect kept
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    style_at_size = resize_long_side(style, 48)
    before = _style_term(random_vgg19, resize_to(content, 34, 48)[None], style_at_size, config)
    after = _style_term(random_vgg19, result.image[None], style_at_size, config)
    assert after < before / 4, (before, after)
    assert events[-1].losses["style"] < events[0].losses["style"] / 4


def test_targets_are_computed_once_not_per_iteration(random_vgg19, rng, monkeypatch):
    content, style = _images(rng)
    calls = []
    original = type(random_vgg19).forward
    monkeypatch.setattr(type(random_vgg19), "forward", lambda self, x: calls.append(1) or original(self, x))
    render(RenderConfig(**FAST, iterations=7), content, [style, style], backbone=random_vgg19)
    assert len(calls) == 1 + 2 + 7  # content once, each style once, one per evaluation


def test_same_seed_same_image_on_cpu(random_vgg19, rng):
    content, style = _images(rng)
    config = RenderConfig(**FAST, iterations=5, init="noise", seed=7)
    first = render(config, content, [style], backbone=random_vgg19).image
    second = render(config, content, [style], backbone=random_vgg19).image
    other = render(RenderConfig(**FAST, iterations=5, init="noise", seed=8), content, [style],
                   backbone=random_vgg19).image
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_the_gray_start_is_neural_styles_flat_mean_pixel():
    """neural-style's -init random: the network's mean pixel (its zero input) plus noise of 1/1000
    of a level, not uniform noise; seeded like noise."""
    config = RenderConfig(**FAST, init="gray", seed=3)
    level = SimpleNamespace(shape=(20, 30))
    start = initial_image(config, SimpleNamespace(init_image=None), level)
    assert start.shape == (1, 3, 20, 30)
    mean = torch.tensor(MODELS["vgg19-random"].preprocessing.mean_pixel).view(1, 3, 1, 1)
    assert (start - mean).abs().max() < 1e-4 and 1e-7 < (start - mean).std() < 1e-5
    assert torch.equal(start, initial_image(config, SimpleNamespace(init_image=None), level))
    assert not torch.equal(start, initial_image(RenderConfig(**FAST, init="gray", seed=4),
                                                SimpleNamespace(init_image=None), level))


def test_the_mean_pixel_is_what_each_preprocessing_maps_to_zero():
    oxford = MODELS["vgg19-oxford-8bit"].preprocessing  # BGR, 0-255: neural-style's mean pixel, in RGB
    assert oxford.mean_pixel == pytest.approx((123.68 / 255, 116.779 / 255, 103.939 / 255))
    for spec in MODELS.values():
        pre = spec.preprocessing
        pixel = torch.tensor(pre.mean_pixel).view(1, 3, 1, 1)
        order = [2, 1, 0] if pre.channel_order == "BGR" else [0, 1, 2]
        centred = pixel[:, order] * pre.scale - torch.tensor(pre.mean).view(1, 3, 1, 1)
        assert (centred / torch.tensor(pre.std).view(1, 3, 1, 1)).abs().max() < 1e-5, spec.name


def test_style_blend_weights_the_target_grams(random_vgg19, rng):
    _, style_a = _images(rng)
    style_b = torch.rand(3, 32, 32, generator=rng)
    blended = style_grams(random_vgg19, [style_a[None], style_b[None]], [3.0, 1.0], ["relu1_1"])["relu1_1"]
    only_a = style_grams(random_vgg19, [style_a[None]], [1.0], ["relu1_1"])["relu1_1"]
    only_b = style_grams(random_vgg19, [style_b[None]], [1.0], ["relu1_1"])["relu1_1"]
    assert torch.allclose(blended, 0.75 * only_a + 0.25 * only_b, rtol=1e-5, atol=1e-6)


def test_nan_stops_the_render_with_an_error(random_vgg19, rng, monkeypatch):
    content, style = _images(rng)
    original = Objective.__call__

    def poisoned(self, features, image):
        terms = original(self, features, image)
        terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(Objective, "__call__", poisoned)
    with pytest.raises(RenderError, match="NaN"):
        render(RenderConfig(**FAST, iterations=30, optimizer="adam"), content, [style], backbone=random_vgg19)


def test_interrupt_returns_the_current_image(random_vgg19, rng):
    content, style = _images(rng)

    def stop_at_five(event):
        if event.iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(RenderInterrupted) as caught:
        render(RenderConfig(**FAST, iterations=50), content, [style], backbone=random_vgg19, callback=stop_at_five)
    assert caught.value.iteration == 5
    assert caught.value.image.shape == (3, 34, 48)
    assert torch.isfinite(caught.value.image).all()


def test_too_small_for_the_deepest_layer_is_refused(random_vgg19, rng):
    content, style = _images(rng)
    with pytest.raises(ConfigError, match=r"the content image is 12x9 after resizing; the deepest layer relu5_1 "
                                          r"needs at least 16x16"):
        render(RenderConfig(**{**FAST, "size": 12}), content[:, :30, :40], [style], backbone=random_vgg19)
    with pytest.raises(ConfigError, match="style image 1"):
        render(RenderConfig(**FAST, style_scale=0.2), content, [style], backbone=random_vgg19)


def test_style_blend_count_must_match(random_vgg19, rng):
    content, style = _images(rng)
    with pytest.raises(ConfigError, match="style_blend: 2 weights for 1 style images"):
        render(RenderConfig(**FAST, style_blend=(0.5, 0.5)), content, [style], backbone=random_vgg19)


def test_original_colors_keep_the_content_chrominance(rng):
    content = torch.rand(1, 3, 8, 8, generator=rng) * 0.5 + 0.25
    stylised = torch.rand(1, 3, 8, 8, generator=rng) * 0.5 + 0.25
    mixed = match_luminance_colors(stylised, content)
    assert torch.allclose(_rgb_to_yiq(mixed)[:, 0], _rgb_to_yiq(stylised)[:, 0], atol=0.02)
    inside = (mixed > 0) & (mixed < 1)
    assert inside.all()  # nothing clamped here, so chrominance must match exactly
    assert torch.allclose(_rgb_to_yiq(mixed)[:, 1:], _rgb_to_yiq(content)[:, 1:], atol=1e-5)


def test_texture_synthesis_without_content(random_vgg19, rng):
    _, style = _images(rng)
    result = render(RenderConfig(**FAST, iterations=3, init="noise"), None, [style], backbone=random_vgg19)
    assert result.image.shape == (3, 48, 48)


def test_cuda_device_without_cuda_is_a_clear_error(random_vgg19, rng):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from styleforge.engine import BackendUnavailableError

    content, style = _images(rng)
    with pytest.raises(BackendUnavailableError, match="--device cuda"):
        render(RenderConfig(**{**FAST, "device": "cuda"}), content, [style], backbone=random_vgg19)


def test_progress_weighs_each_evaluation_by_its_level_pixels():
    generator = torch.Generator().manual_seed(7)
    content, style = torch.rand(3, 96, 128, generator=generator), torch.rand(3, 64, 64, generator=generator)
    config = RenderConfig(size=128, levels=2, level_scale=2.0, iterations=(4, 4), model="vgg16-random", device="cpu",
                          precision="fp32")
    events = []
    render(config, content, [style], callback=events.append)
    progress = [event.progress for event in events]
    assert [event.level for event in events] == [0] * 4 + [1] * 4
    # Level 1 has a quarter of level 2's pixels: its 4 evaluations are a fifth of the work.
    assert progress[3] == pytest.approx(0.2, abs=0.01) and progress[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(progress, progress[1:]))


def _detail(image: torch.Tensor, coarse: tuple[int, int]) -> torch.Tensor:
    """The band of (1, 3, H, W) a level of size ``coarse`` cannot hold."""
    return image - resize_to(resize_to(image, *coarse), *image.shape[-2:])


@pytest.mark.parametrize("level_start", ["upsample", "detail"])
def test_a_finer_level_starts_from_the_coarser_result(random_vgg19, rng, level_start):
    """Level 2 starts from level 1's result upsampled; with level_start = detail, plus the
    content's detail band, so what the coarse level washed out (here: everything, from noise)
    comes back at the start of the finer level, while the coarse layout stays."""
    content, style = _images(rng)
    config = RenderConfig(**{**FAST, "size": 64}, levels=2, level_scale=2.0, iterations=(6, 2), init="noise",
                          level_start=level_start)
    seen = []  # (level, image) of each evaluation; an event's image is the live one: copy it
    render(config, content, [style], backbone=random_vgg19,
           callback=lambda event: seen.append((event.level, event.image.clone())))
    coarse = seen[0][1].shape[-2:]
    first_fine = next(image for level, image in seen if level == 1)[None]
    wanted = _detail(resize_to(content, *first_fine.shape[-2:])[None], tuple(coarse))
    error = (_detail(first_fine, tuple(coarse)) - wanted).pow(2).mean() / wanted.pow(2).mean()
    if level_start == "detail":
        # The content's band is there; clamping to [0, 1] costs some of it (this content is
        # uniform noise, all detail: 0.25 measured), and the coarse result's own remnant some.
        assert error < 0.35, error
    else:
        assert error > 0.8, error  # an upsampled image has none of that band (1.18 measured)


def test_iterate_averaging_returns_the_bias_corrected_average_of_the_iterates(random_vgg19, rng):
    """--average d: the result is sum_k (1 - d) d^(n-k) x_k / (1 - d^n) over the iterates x_1..x_n
    (the start excluded); the iterates themselves are those of the plain render."""
    content, style = _images(rng)
    options = dict(**FAST, iterations=8, optimizer="adam", learning_rate=0.05, style_weight=100.0)
    plain = render(RenderConfig(**options), content, [style], backbone=random_vgg19)
    seen = []  # an event's image is the live one: copy it
    averaged = render(RenderConfig(**options, average=0.7), content, [style], backbone=random_vgg19,
                      callback=lambda event: seen.append(event.image.clone()))
    iterates = seen[1:] + [plain.image]  # the first is the start; no evaluation saw the last
    decay, n = 0.7, len(iterates)
    expected = sum((1 - decay) * decay ** (n - 1 - k) * x for k, x in enumerate(iterates)) / (1 - decay**n)
    torch.testing.assert_close(averaged.image, expected, atol=1e-5, rtol=0)
    assert (averaged.image - plain.image).abs().max() > 1e-3  # and it is not just the last iterate
