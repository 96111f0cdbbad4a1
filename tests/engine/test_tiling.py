"""Exact tiling: the tiled loss and gradient equal the untiled ones, for every backend here."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import (
    GatysObjective,
    OnnxRuntimeBackend,
    RenderConfig,
    TorchBackend,
    VGGFeatures,
    load_backbone,
    render,
    style_grams,
)
from styleforge.engine._tiling import plan_tiles, receptive_radius, tiled_gatys_evaluate

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TAPS = STYLE_LAYERS + ("relu4_2",)


def _untiled(backend, objective, image):
    features = {k: v.requires_grad_(True) for k, v in backend.forward(image).items()}
    pixels = image.clone().requires_grad_(True)
    losses = objective(features, pixels)
    *tap_grads, tv_grad = torch.autograd.grad(losses["total"], [*features.values(), pixels], allow_unused=True,
                                              materialize_grads=True)
    return {k: v.detach() for k, v in losses.items()}, backend.backward(dict(zip(features, tap_grads))) + tv_grad


def _objective(backend, content, style, dtype):
    return GatysObjective(
        content_targets={"relu4_2": backend.features(content)["relu4_2"]},
        style_targets=style_grams(backend.features, [style], [1.0], STYLE_LAYERS),
        content_weight=1.0, style_weight=100.0, tv_weight=2.0, style_layer_weights=dict.fromkeys(STYLE_LAYERS, 1.0),
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
    expected_losses, expected = _untiled(backend, objective, image)
    tiles = plan_tiles(*size, 32, receptive_radius(backbone.layers))  # deliberately tiny tiles
    assert len(tiles) >= 9
    losses, gradient = tiled_gatys_evaluate(backend, objective, image, tiles)
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-12)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-12


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_tiled_gradient_equals_untiled_in_float32(backend_name):
    generator = torch.Generator().manual_seed(1)
    backbone = load_backbone("vgg16-random", TAPS)
    backend = (TorchBackend(backbone, torch.device("cpu")) if backend_name == "torch"
               else OnnxRuntimeBackend(backbone, torch.device("cpu"), model="vgg16-random"))
    content = torch.rand(1, 3, 176, 240, generator=generator)
    style = torch.rand(1, 3, 96, 96, generator=generator)
    objective = _objective(backend, content, style, torch.float32)
    image = torch.rand(1, 3, 176, 240, generator=generator)
    _, expected = _untiled(backend, objective, image)
    _, gradient = tiled_gatys_evaluate(backend, objective, image, plan_tiles(176, 240, 48, receptive_radius(backbone.layers)))
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_a_tiled_render_matches_the_untiled_one():
    generator = torch.Generator().manual_seed(2)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    config = RenderConfig(size=160, iterations=3, model="vgg16-random", device="cpu", backend="torch")
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"tile_size": 48}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_tiling_is_refused_for_mrf():
    with pytest.raises(Exception, match="--tile-size"):
        RenderConfig.mrf(tile_size=64)


def test_planner_keeps_small_renders_untiled_and_tiles_large_ones():
    from styleforge.engine import plan_render

    config = RenderConfig()
    cpu = torch.device("cpu")
    small = plan_render(config, [(384, 512)], cpu, budget=16 * 2**30)
    assert small.levels[0].tile_size == 0 and "untiled" in small.describe()
    large = plan_render(config, [(2160, 3840)], cpu, budget=16 * 2**30)
    assert large.levels[0].tile_size > 0 and large.levels[0].total_bytes <= 16 * 2**30
    with pytest.raises(Exception, match=r"7680x4320\) needs about .* even in 64-px tiles"):
        plan_render(config, [(4320, 7680)], cpu, budget=16 * 2**30)
    with pytest.raises(Exception, match="MRF renders cannot be tiled"):
        plan_render(RenderConfig.mrf(), [(2160, 3840)], cpu, budget=2**30)


def test_a_small_budget_makes_the_render_tile_and_gives_the_same_image():
    generator = torch.Generator().manual_seed(3)
    content, style = torch.rand(3, 120, 160, generator=generator), torch.rand(3, 96, 96, generator=generator)
    # Shallow taps keep the halo small, so tiles can save memory at this size.
    config = RenderConfig(size=160, iterations=2, model="vgg16-random", device="cpu", backend="torch",
                          style_layers=("relu1_1", "relu2_1", "relu3_1"), content_layers=("relu3_1",), lbfgs_history=5)
    from styleforge.engine import plan_for

    budget = "30M"
    assert plan_for(config.replace({"max_memory": budget}), content, torch.device("cpu")).levels[0].tile_size > 0
    untiled = render(config, content, [style]).image
    tiled = render(config.replace({"max_memory": budget}), content, [style]).image
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_max_memory_must_be_a_size():
    with pytest.raises(Exception, match="--max-memory: 'lots'"):
        RenderConfig(max_memory="lots")
