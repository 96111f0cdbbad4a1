"""MRF objective and neural-doodle maps: gradients, region-confined matching, map errors, renders."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from styleforge.engine import ConfigError, RenderConfig, load_image, render
from styleforge.engine.objectives import (build_patch_bank, mrf_objective, semantic_labels, shared_palette,
                                          style_variants)
from styleforge.kernels import extract_patches

RED, BLUE, GREEN = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)


def _two_region_map(height: int, width: int, left=RED, right=BLUE) -> torch.Tensor:
    semantic = torch.empty(3, height, width)
    semantic[:, :, : width // 2] = torch.tensor(left).view(3, 1, 1)
    semantic[:, :, width // 2 :] = torch.tensor(right).view(3, 1, 1)
    return semantic


def MRFObjective(*, features_of, styles, content_targets, layer_weights, content_weight, mrf_weight, tv_weight,
                 patch_size, style_stride, synthesis_stride, style_labels=None, content_labels=None, map_weight=0.0):
    """The MRF objective with its bank built from ``styles`` (what the render's target builder does)."""
    map_scale = map_weight ** 0.5 if content_labels is not None else 0.0
    bank = build_patch_bank(features_of, styles, list(layer_weights), patch_size=patch_size, style_stride=style_stride,
                            style_labels=style_labels, map_scale=map_scale)
    return mrf_objective(bank, layer_weights, content_targets=content_targets, content_weight=content_weight,
                         mrf_weight=mrf_weight, tv_weight=tv_weight, patch_size=patch_size,
                         synthesis_stride=synthesis_stride, content_labels=content_labels, map_scale=map_scale)


def _encoder(weight):
    return lambda x: {"a": torch.nn.functional.conv2d(x, weight, padding=1).relu()}


def test_mrf_loss_gradient_passes_gradcheck(rng):
    weight = torch.randn(4, 3, 3, 3, generator=rng, dtype=torch.float64)
    encoder = _encoder(weight)
    style = torch.rand(1, 3, 7, 7, generator=rng, dtype=torch.float64)
    objective = MRFObjective(
        features_of=encoder, styles=[style], content_targets=None, layer_weights={"a": 1.0},
        content_weight=0.0, mrf_weight=1.0, tv_weight=0.1, patch_size=3, style_stride=1, synthesis_stride=2,
    )
    image = torch.rand(1, 3, 6, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x: objective(encoder(x), x)["total"], (image,))


def test_mrf_loss_is_zero_on_the_style_itself(rng):
    weight = torch.randn(4, 3, 3, 3, generator=rng)
    encoder = _encoder(weight)
    style = torch.rand(1, 3, 9, 9, generator=rng)
    objective = MRFObjective(
        features_of=encoder, styles=[style], content_targets=None, layer_weights={"a": 1.0},
        content_weight=0.0, mrf_weight=1.0, tv_weight=0.0, patch_size=3, style_stride=1, synthesis_stride=1,
    )
    assert objective(encoder(style), style)["style"].item() < 1e-10
    assert objective(encoder(torch.rand(1, 3, 9, 9, generator=rng)), style)["style"].item() > 1e-3


def test_semantic_maps_confine_matches_to_the_same_region(rng):
    """Style: region RED on the left, BLUE on the right. Output map: the other way round.
    With the maps, every output patch must match a style patch of its own colour."""
    def features(x):  # identity encoder: the patches are the pixels themselves
        return {"a": x}

    style = torch.rand(1, 3, 12, 12, generator=rng)
    style_map = _two_region_map(12, 12, RED, BLUE)
    content_map = _two_region_map(12, 12, BLUE, RED)
    palette = shared_palette(content_map, style_map)
    objective = MRFObjective(
        features_of=features, styles=[style], content_targets=None, layer_weights={"a": 1.0},
        content_weight=0.0, mrf_weight=1.0, tv_weight=0.0, patch_size=2, style_stride=2, synthesis_stride=2,
        style_labels=[semantic_labels(style_map, palette)[:, :, :, :]],
        content_labels=semantic_labels(content_map, palette), map_weight=10.0,
    )
    image = torch.rand(1, 3, 12, 12, generator=rng)
    index, _ = objective.terms["style"].matches("a", image)
    style_colour = extract_patches(semantic_labels(style_map, palette), 2, 2).argmax(1)
    output_colour = extract_patches(semantic_labels(content_map, palette), 2, 2).argmax(1)
    assert torch.equal(style_colour[index], output_colour)

    unconstrained = MRFObjective(
        features_of=features, styles=[style], content_targets=None, layer_weights={"a": 1.0},
        content_weight=0.0, mrf_weight=1.0, tv_weight=0.0, patch_size=2, style_stride=2, synthesis_stride=2,
    )
    free_index, _ = unconstrained.terms["style"].matches("a", image)
    assert not torch.equal(style_colour[free_index], output_colour)  # the maps made the difference


def test_map_colours_missing_on_either_side_are_errors():
    with pytest.raises(ConfigError, match="content_map: colour\\(s\\) #00ff00 have no region in the style maps"):
        shared_palette(_two_region_map(8, 8, RED, GREEN), _two_region_map(8, 8, RED, BLUE))
    with pytest.raises(ConfigError, match="style_map: colour\\(s\\) #0000ff"):
        shared_palette(torch.tensor(RED).view(3, 1, 1).expand(3, 8, 8), _two_region_map(8, 8, RED, BLUE))


def test_style_variants_are_2n_plus_1_each_with_the_original_first():
    pairs = style_variants(1, 15.0, 2, 0.1)
    assert len(pairs) == 3 * 5 and pairs[0] == (0.0, 1.0)
    assert (-15.0, pytest.approx(0.8)) in [(d, s) for d, s in pairs]


FAST = dict(model="vgg19-random", device="cpu", size=48, levels=2, iterations=15, mrf_layers=("relu2_1", "relu3_1"))


def test_mrf_render_lowers_the_mrf_loss_coarse_to_fine(random_vgg19, test_images):
    content = load_image(test_images / "cnnmrf_portrait.jpg")
    style = load_image(test_images / "cnnmrf_picasso.jpg")
    config = RenderConfig.mrf_defaults(**{**FAST, "iterations": 20}, content_weight=0.05, tv_weight=0.0)
    events = []
    result = render(config, content, [style], backbone=random_vgg19, callback=events.append)
    assert result.image.shape == (3, 48, 37)
    assert [e.level for e in events] == [0] * 20 + [1] * 20
    assert events[-1].iterations == 40 and events[-1].iteration == 40
    # The MRF loss of the content itself at the final size (the first evaluation of a 1-level render).
    first = []
    render(RenderConfig.mrf_defaults(**{**FAST, "levels": 1, "iterations": 1}, init="content"), content, [style],
           backbone=random_vgg19, callback=first.append)
    assert events[-1].losses["style"] < first[0].losses["style"] / 3


def test_doodle_from_maps_alone(random_vgg19, rng):
    style = torch.rand(3, 40, 40, generator=rng)
    result = render(RenderConfig.mrf_defaults(**FAST), None, [style], backbone=random_vgg19,
                    content_map=_two_region_map(30, 40, BLUE, RED), style_maps=[_two_region_map(40, 40)])
    assert result.image.shape == (3, 36, 48)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(content_map=_two_region_map(30, 40), style_maps=[_two_region_map(20, 20)]), "must be the same size"),
        (dict(content_map=_two_region_map(30, 40)), "come in pairs"),
        (dict(content_map=_two_region_map(30, 40), style_maps=[_two_region_map(40, 40, RED, GREEN)]),
         "#0000ff have no region in the style maps"),
    ],
)
def test_bad_maps_are_refused(random_vgg19, rng, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        render(RenderConfig.mrf_defaults(**FAST), None, [torch.rand(3, 40, 40, generator=rng)], backbone=random_vgg19,
               **kwargs)


def test_maps_serve_the_gram_method_too(random_vgg19, rng):
    """Once MRF only; now every style loss takes regions (tests/engine/objectives/test_regions.py)."""
    result = render(RenderConfig(model="vgg19-random", device="cpu", size=32, levels=1, iterations=2),
                    torch.rand(3, 32, 32), [torch.rand(3, 32, 32)], backbone=random_vgg19,
                    content_map=_two_region_map(32, 32), style_maps=[_two_region_map(32, 32)])
    assert result.image.shape == (3, 32, 32)


def test_a_level_too_small_for_an_mrf_patch_is_refused(random_vgg19, rng):
    config = RenderConfig.mrf_defaults(model="vgg19-random", device="cpu", size=64, levels=3)  # coarsest: 16 px
    with pytest.raises(ConfigError, match=r"is 16x12 after resizing; a 3x3 MRF patch needs at least 24x24"):
        render(config, torch.rand(3, 48, 64, generator=rng), [torch.rand(3, 64, 64, generator=rng)],
               backbone=random_vgg19)
