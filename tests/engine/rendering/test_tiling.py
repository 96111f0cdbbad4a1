"""Exact tiling: the tiled loss and gradient equal the untiled ones (Gram and MRF), for every
backend here, with deliberately tiny tiles."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, VGGFeatures, load_backbone, plan_for, render
from styleforge.engine.backends import OnnxRuntimeBackend, TorchBackend
from styleforge.engine.objectives import (
    Window,
    blend_statistics,
    build_patch_bank,
    gatys_objective,
    gram_statistics,
    mrf_objective,
    semantic_labels,
    shared_palette,
)
from styleforge.engine.rendering import _planner
from styleforge.engine.rendering import (
    evaluate,
    features_over_windows,
    plan_render,
    plan_tiles,
    receptive_radius,
    statistics_over_windows,
    tile_halo,
)

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TAPS = STYLE_LAYERS + ("relu4_2",)


def _untiled(backend, objective, image):
    return evaluate(backend, objective, image)


def tiled_evaluate(backend, objective, image, tiles):
    return evaluate(backend, objective, image, tiles)


def style_grams(backend, styles, blend, layers):
    whole = [Window.whole(*style.shape[-2:]) for style in styles]
    per_style = [gram_statistics(backend.features(style), window, layers, backend.strides)
                 for style, window in zip(styles, whole)]
    return blend_statistics(per_style, blend)


def _assert_tiled_equals_untiled(backend, objective, image, tiles, *, rel):
    """Every loss term and the image gradient, tiled against untiled, to ``rel``."""
    expected_losses, expected = _untiled(backend, objective, image)
    losses, gradient = tiled_evaluate(backend, objective, image, tiles)
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=rel)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < rel


def _cpu_backend(name, backbone):
    if name == "torch":
        return TorchBackend(backbone, torch.device("cpu"))
    return OnnxRuntimeBackend(backbone, torch.device("cpu"), model="vgg16-random")


def _objective(backend, content, style, dtype):
    return gatys_objective(
        content_targets={"relu4_2": backend.features(content)["relu4_2"]},
        style_targets=style_grams(backend, [style], [1.0], STYLE_LAYERS),
        content_weight=1.0, style_weight=100.0, tv_weight=2.0, style_layer_weights=dict.fromkeys(STYLE_LAYERS, 1.0),
        strides=backend.strides,
    )


def test_receptive_radius_of_vgg16_relu5_1():
    backbone = VGGFeatures("vgg16", ["relu5_1"])
    assert receptive_radius(backbone.layers) == 67  # conv5_1's receptive field is 132 pixels


def test_tiles_partition_the_image_with_aligned_halos():
    tiles = plan_tiles(203, 269, 64, 67)
    covered = torch.zeros(203, 269, dtype=torch.int32)
    for tile in tiles:
        covered[tile.y0:tile.y1, tile.x0:tile.x1] += 1
        assert tile.cy0 % 16 == 0 and tile.cx0 % 16 == 0
        # Halo 67 rounded up to 80, clipped at the image's borders.
        assert tile.y0 - tile.cy0 == min(tile.y0, 80) and tile.x0 - tile.cx0 == min(tile.x0, 80)
        assert tile.cy1 - tile.y1 == min(203 - tile.y1, 80) and tile.cx1 - tile.x1 == min(269 - tile.x1, 80)
    assert (covered == 1).all()


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("size", [(96, 128), (101, 75)])
def test_tiled_gradient_equals_untiled_in_float64(pooling, size):
    generator = torch.Generator().manual_seed(0)
    backbone = load_backbone("vgg16-random", TAPS, pooling=pooling).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, *size, generator=generator, dtype=torch.float64)
    style = torch.rand(1, 3, 96, 96, generator=generator, dtype=torch.float64)
    objective = _objective(backend, content, style, torch.float64)
    image = torch.rand(1, 3, *size, generator=generator, dtype=torch.float64)
    tiles = plan_tiles(*size, 32, receptive_radius(backbone.layers))  # deliberately tiny tiles
    assert len(tiles) >= 9
    _assert_tiled_equals_untiled(backend, objective, image, tiles, rel=1e-12)


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_tiled_gradient_equals_untiled_in_float32(backend_name):
    generator = torch.Generator().manual_seed(1)
    backbone = load_backbone("vgg16-random", TAPS)
    backend = _cpu_backend(backend_name, backbone)
    content = torch.rand(1, 3, 176, 240, generator=generator)
    style = torch.rand(1, 3, 96, 96, generator=generator)
    objective = _objective(backend, content, style, torch.float32)
    image = torch.rand(1, 3, 176, 240, generator=generator)
    _, expected = _untiled(backend, objective, image)
    _, gradient = tiled_evaluate(backend, objective, image, plan_tiles(176, 240, 48, receptive_radius(backbone.layers)))
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_a_tiled_render_matches_the_untiled_one():
    generator = torch.Generator().manual_seed(2)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    config = RenderConfig(size=160, iterations=3, model="vgg16-random", device="cpu", backend="torch", precision="fp32")
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"tile_size": 48}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


MRF_LAYERS = ("relu2_1", "relu3_1", "relu4_1")


def _mrf_objective(backend, content, style, maps=None):
    content_labels = style_labels = None
    if maps is not None:
        content_map, style_map = maps
        palette = shared_palette(content_map, style_map)
        content_labels = semantic_labels(content_map, palette).to(content.dtype)
        style_labels = [semantic_labels(style_map, palette).to(content.dtype)]
    map_scale = 10.0 ** 0.5 if maps is not None else 0.0
    bank = build_patch_bank(backend.features, [style], MRF_LAYERS, patch_size=3, style_stride=2,
                            style_labels=style_labels, map_scale=map_scale)
    return mrf_objective(
        bank, dict.fromkeys(MRF_LAYERS, 1.0), content_targets={"relu4_2": backend.features(content)["relu4_2"]},
        content_weight=0.5, mrf_weight=1.0, tv_weight=2.0, patch_size=3, synthesis_stride=2,
        strides=backend.strides, content_labels=content_labels, map_scale=map_scale)


def _halves(height, width):
    """A two-colour semantic map: red left, blue right."""
    semantic = torch.zeros(3, height, width)
    semantic[0, :, : width // 2] = 1.0
    semantic[2, :, width // 2:] = 1.0
    return semantic


@pytest.mark.parametrize("with_maps", [False, True])
def test_tiled_mrf_gradient_equals_untiled_in_float64(with_maps):
    generator = torch.Generator().manual_seed(4)
    size = (112, 144)
    backbone = load_backbone("vgg16-random", MRF_LAYERS + ("relu4_2",)).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, *size, generator=generator, dtype=torch.float64)
    style = torch.rand(1, 3, 96, 96, generator=generator, dtype=torch.float64)
    maps = (_halves(*size), _halves(96, 96).flip(-1)) if with_maps else None
    objective = _mrf_objective(backend, content, style, maps)
    image = torch.rand(1, 3, *size, generator=generator, dtype=torch.float64)
    tiles = plan_tiles(*size, 32, tile_halo(backbone.layers, dict.fromkeys(MRF_LAYERS, 2)))
    assert len(tiles) >= 12
    _assert_tiled_equals_untiled(backend, objective, image, tiles, rel=1e-12)


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_tiled_mrf_gradient_equals_untiled_in_float32(backend_name):
    generator = torch.Generator().manual_seed(5)
    backbone = load_backbone("vgg16-random", MRF_LAYERS + ("relu4_2",))
    backend = _cpu_backend(backend_name, backbone)
    content = torch.rand(1, 3, 128, 176, generator=generator)
    style = torch.rand(1, 3, 96, 96, generator=generator)
    objective = _mrf_objective(backend, content, style)
    image = torch.rand(1, 3, 128, 176, generator=generator)
    tiles = plan_tiles(128, 176, 48, tile_halo(backbone.layers, dict.fromkeys(MRF_LAYERS, 2)))
    _assert_tiled_equals_untiled(backend, objective, image, tiles, rel=1e-4)


def test_mrf_halo_covers_a_patch_at_the_coarsest_mrf_layer():
    backbone = VGGFeatures("vgg16", list(MRF_LAYERS))
    # relu4_1: receptive radius 46 (VGG16 up to conv4_1), plus two positions at stride 8.
    assert tile_halo(backbone.layers, dict.fromkeys(MRF_LAYERS, 2)) == receptive_radius(backbone.layers) + 2 * 8


def test_a_tiled_mrf_render_matches_the_untiled_one():
    generator = torch.Generator().manual_seed(6)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    config = RenderConfig.mrf_defaults(size=160, levels=1, iterations=3, model="vgg16-random", device="cpu",
                                       backend="torch", precision="fp32")
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"tile_size": 48}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_planner_keeps_small_renders_untiled_and_tiles_large_ones():
    config = RenderConfig()
    cpu = torch.device("cpu")
    small = plan_render(config, [(384, 512)], cpu, budget=16 * 2**30)
    assert small.levels[0].tile_size == 0 and "untiled" in small.describe()
    large = plan_render(config, [(2160, 3840)], cpu, budget=16 * 2**30)
    assert large.levels[0].tile_size > 0 and large.levels[0].total_bytes <= 16 * 2**30
    mrf = plan_render(RenderConfig.mrf_defaults(), [(2160, 3840)], cpu, budget=20 * 2**30)
    assert mrf.levels[0].tile_size > 0 and mrf.levels[0].total_bytes <= 20 * 2**30
    with pytest.raises(Exception, match=r"7680x4320\) needs about .* even in 64-px tiles"):
        plan_render(config, [(4320, 7680)], cpu, budget=2 * 2**30)


def test_a_size_that_cannot_fit_is_refused_before_any_tile_is_cut(monkeypatch):
    """Issue 25, item 6 (a regression of the engine's restructure): ``--size 200000 --levels 1``
    took 284 s and 6.2 GB cutting millions of 64-px tiles per candidate before refusing."""

    def cut(*args):
        raise AssertionError("a tile was cut for a plan that was not chosen")

    monkeypatch.setattr(_planner, "plan_tiles", cut)
    config = RenderConfig(size=200000, levels=1, model="vgg16-random")
    with pytest.raises(ConfigError, match=r"200000x150000\) needs about .* even in 64-px tiles"):
        plan_for(config, torch.empty(3, 48, 64), torch.device("cpu"))


def test_planner_shortens_the_lbfgs_history_before_using_small_tiles():
    plan = plan_render(RenderConfig(), [(4320, 7680)], torch.device("cpu"), budget=16 * 2**30)
    level = plan.levels[0]
    assert level.lbfgs_history < 50 and level.total_bytes <= 16 * 2**30
    assert f"L-BFGS history {level.lbfgs_history}" in plan.describe()


def test_a_small_budget_makes_the_render_tile_and_gives_the_same_image():
    generator = torch.Generator().manual_seed(3)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    # Shallow taps keep the halo small, so tiles can save memory at this size.
    config = RenderConfig(size=160, iterations=2, model="vgg16-random", device="cpu", backend="torch",
                          style_layers=("relu1_1", "relu2_1", "relu3_1"), content_layers=("relu3_1",), lbfgs_history=5)
    budget = "30M"
    assert plan_for(config.replace({"max_memory": budget}), content, torch.device("cpu")).levels[0].tile_size > 0
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"max_memory": budget}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_max_memory_must_be_a_size():
    with pytest.raises(Exception, match="max_memory: 'lots'"):
        RenderConfig(max_memory="lots")


def test_targets_computed_tile_by_tile_equal_the_whole_image_ones():
    generator = torch.Generator().manual_seed(7)
    backbone = load_backbone("vgg16-random", TAPS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    image = torch.rand(1, 3, 101, 150, generator=generator, dtype=torch.float64)
    whole = backend.features(image)
    tiles = plan_tiles(101, 150, 32, receptive_radius(backbone.layers))
    assembled = features_over_windows(backend, image, tiles, ("relu4_2", "relu1_1"))
    for layer in ("relu4_2", "relu1_1"):
        assert assembled[layer].shape == whole[layer].shape
        assert torch.allclose(assembled[layer], whole[layer], rtol=1e-12, atol=1e-12)
    grams = statistics_over_windows(backend, lambda f, r: gram_statistics(f, r, STYLE_LAYERS, backend.strides),
                                    image, tiles)
    expected = style_grams(backend, [image], [1.0], STYLE_LAYERS)
    for layer in STYLE_LAYERS:
        assert torch.allclose(grams[layer].mean, expected[layer], rtol=1e-10, atol=1e-14)


def test_the_dry_run_plan_holds_the_tiles_that_run():
    """One tile geometry: a forced tile size off the 16-pixel grid is rounded once, by the
    planner, and the plan's regions are what the loop evaluates."""
    config = RenderConfig(size=300, levels=1, tile_size=100, model="vgg16-random")
    level = plan_render(config, [(224, 300)], torch.device("cpu"), budget=2**34).levels[0]
    assert level.tile_size == 112
    assert level.tiles == len(level.windows) == 2 * 3  # ceil(224 / 112) rows x ceil(300 / 112) columns
    assert f"{level.tiles} tiles of 112 px" in plan_render(config, [(224, 300)], torch.device("cpu"),
                                                           budget=2**34).describe()


SHALLOW_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


@pytest.mark.parametrize("style_loss", ["w2", "sliced"])
def test_tiled_w2_and_sliced_equal_untiled_in_float64(style_loss):
    """Targets and evaluation both tile by tile (build_objective with a tile size) against both
    whole. Their statistics are means over owned positions, combined by count, so tiling is exact
    (up to summation order) for the sliced histograms too. Shallow taps keep the halo, and the
    test, small."""
    from styleforge.engine.rendering import LevelInputs, build_objective

    generator = torch.Generator().manual_seed(9)
    backbone = load_backbone("vgg16-random", SHALLOW_LAYERS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, 96, 128, generator=generator, dtype=torch.float64)
    style = torch.rand(1, 3, 80, 96, generator=generator, dtype=torch.float64)
    image = torch.rand(1, 3, 96, 128, generator=generator, dtype=torch.float64)
    config = RenderConfig(style_loss=style_loss, model="vgg16-random", style_layers=SHALLOW_LAYERS,
                          content_layers=("relu3_1",), style_weight=100.0)
    level = LevelInputs(content, [style], (96, 128))
    halo = receptive_radius(backbone.layers)
    tiles = plan_tiles(96, 128, 32, halo)
    assert len(tiles) == 12 and len(plan_tiles(80, 96, 32, halo)) == 9
    whole = build_objective(config, backend, level)
    tiled = build_objective(config, backend, level, tile_size=32)
    expected_losses, expected = evaluate(backend, whole, image)
    losses, gradient = evaluate(backend, tiled, image, tiles)
    assert expected_losses["style"].item() > 1e-3
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10
