"""Regions through the render: tiled equals untiled with maps (every style loss), the unstyled
region keeps the content, flat-colour style maps bind each style to one region."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, load_backbone, render, resize_to
from styleforge.engine.backends import TorchBackend
from styleforge.engine.objectives import Window
from styleforge.engine.rendering import LevelInputs, build_objective, evaluate, plan_tiles, receptive_radius

D = torch.float64
SHALLOW_LAYERS = ("relu1_1", "relu2_1", "relu3_1")
RED, GREEN, BLUE, BLACK = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)


def _stripes(height: int, width: int, *colors: tuple[float, float, float]) -> torch.Tensor:
    """A (3, H, W) map of vertical stripes of equal width, one per colour."""
    semantic = torch.zeros(3, height, width)
    edges = [round(width * i / len(colors)) for i in range(len(colors) + 1)]
    for color, start, stop in zip(colors, edges, edges[1:]):
        semantic[:, :, start:stop] = torch.tensor(color)[:, None, None]
    return semantic


def _labels(semantic: torch.Tensor, palette: list[tuple[float, float, float]]) -> torch.Tensor:
    from styleforge.engine.objectives import semantic_labels

    return semantic_labels(semantic, torch.tensor(palette)).to(D)


@pytest.mark.parametrize("style_loss", ["gram", "w2", "sliced"])
def test_tiled_regions_equal_untiled_in_float64(style_loss):
    """Three regions, one unstyled, two styles each bound to a region by its map; targets and
    evaluation tile by tile against both whole, with tiles that cut the regions' borders."""
    generator = torch.Generator().manual_seed(11)
    backbone = load_backbone("vgg16-random", SHALLOW_LAYERS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    styles = [torch.rand(1, 3, 80, 96, generator=generator, dtype=D) for _ in range(2)]
    image = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    palette = [RED, BLUE, BLACK]  # black: unstyled
    level = LevelInputs(content, styles, (96, 128),
                        content_labels=_labels(_stripes(96, 128, RED, BLUE, BLACK), palette),
                        style_labels=[_labels(_stripes(80, 96, RED, BLUE), palette),
                                      _labels(_stripes(80, 96, BLUE), palette)], unstyled=2)
    config = RenderConfig(style_loss=style_loss, model="vgg16-random", style_layers=SHALLOW_LAYERS,
                          content_layers=("relu3_1",), style_weight=100.0)
    tiles = plan_tiles(96, 128, 32, receptive_radius(backbone.layers))
    assert len(tiles) == 12
    expected_losses, expected = evaluate(backend, build_objective(config, backend, level), image)
    losses, gradient = evaluate(backend, build_objective(config, backend, level, tile_size=32), image, tiles)
    assert expected_losses["style"].item() > 1e-3
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10


FAST = dict(model="vgg16-random", device="cpu", backend="torch", precision="fp32", size=64, levels=2, iterations=3)


def test_a_tiled_render_with_maps_and_an_unstyled_region_matches_the_untiled_one():
    """Through the loop (inputs, planner, targets, tiled evaluation) in float32, one level of three
    L-BFGS steps, as test_tiling's render test without maps. (Two levels drift apart by rounding,
    maps or not: 1.7e-2 at 160 px without maps.)"""
    generator = torch.Generator().manual_seed(12)
    content = torch.rand(3, 48, 64, generator=generator)
    styles = [torch.rand(3, 40, 40, generator=generator) for _ in range(2)]
    maps = dict(content_map=_stripes(48, 64, RED, BLUE, BLACK), style_maps=["#ff0000", "#0000ff"])
    config = RenderConfig(**{**FAST, "levels": 1}, unstyled_color="#000000", style_loss="w2")
    runs = []
    for options in ({}, {"tile_size": 32}):
        events = []
        image = render(config.replace(options), content, styles, callback=events.append, **maps).image
        runs.append((image, events[0].losses))
    (untiled, expected), (tiled, losses) = runs
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected[name].item(), rel=1e-5)
    assert (tiled - untiled).abs().max().item() < 1e-4


def test_the_unstyled_region_keeps_the_content():
    generator = torch.Generator().manual_seed(13)
    content = torch.rand(3, 48, 96, generator=generator)
    config = RenderConfig(**FAST, unstyled_color="#000000", optimizer="adam", learning_rate=0.05)
    result = render(config, content, [torch.rand(3, 40, 40, generator=generator)],
                    content_map=_stripes(48, 96, RED, BLACK), style_maps=["#ff0000"]).image
    expected = resize_to(content[None], *result.shape[-2:])[0]
    # Beyond the soft border (two blurs of 1 px radius at 64 px) the content is kept exactly;
    # the styled half has moved.
    assert (result[:, :, 36:] - expected[:, :, 36:]).abs().max().item() < 1e-6
    assert (result[:, :, :28] - expected[:, :, :28]).abs().max().item() > 1e-2


def test_flat_colour_style_maps_bind_each_style_to_its_region():
    """Two styles, one flat-coloured map each: the left region's targets come from the first
    style only, the right's from the second (one region of a two-region map)."""
    from styleforge.engine.rendering import prepare_inputs

    generator = torch.Generator().manual_seed(14)
    config = RenderConfig(**FAST)
    styles = [torch.rand(3, 40, 40, generator=generator), torch.rand(3, 30, 50, generator=generator)]
    inputs = prepare_inputs(config, torch.rand(3, 48, 64, generator=generator), styles,
                            content_map=_stripes(48, 64, RED, BLUE), style_maps=["#ff0000", "#0000ff"])
    assert [tuple(m.shape) for m in inputs.style_maps] == [(3, 40, 40), (3, 30, 50)]
    assert torch.equal(inputs.style_maps[1], torch.tensor(BLUE)[:, None, None].expand(3, 30, 50))
    backend = TorchBackend(load_backbone("vgg16-random", SHALLOW_LAYERS + ("relu4_2",)), torch.device("cpu"))
    from styleforge.engine.rendering import level_inputs

    level = level_inputs(config, inputs, (48, 64), torch.device("cpu"), backend.backbone)
    term = build_objective(config.replace({"style_layers": SHALLOW_LAYERS}), backend, level).terms["style"]
    first, second = (build_objective(config.replace({"style_layers": SHALLOW_LAYERS}), backend,
                                     LevelInputs(level.content, [style], level.shape)).terms["style"]
                     for style in level.styles)
    red = next(r for r in range(2) if inputs.palette[r].tolist() == list(RED))
    for window, plain in ((red, first), (1 - red, second)):
        for layer in SHALLOW_LAYERS:
            assert torch.allclose(term.per_region[window].targets[layer], plain.targets[layer], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("options", "maps", "message"),
    [
        ({}, dict(content_map=_stripes(32, 32, RED, GREEN), style_maps=["#ff0000"]), "#00ff00 have no region"),
        ({}, dict(content_map=_stripes(32, 32, RED), style_maps=[_stripes(20, 20, RED)]), "must be the same size"),
        ({"unstyled_color": "#000000"}, {}, "unstyled_color: names a colour of the content map"),
        ({"unstyled_color": "#00ff00"}, dict(content_map=_stripes(32, 32, RED), style_maps=["#ff0000"]),
         "unstyled_color: #00ff00 is not a colour of the content map"),
        # A string map is a flat colour; any other string is refused (it failed later, on .shape).
        ({}, dict(content_map=_stripes(32, 32, RED), style_maps=["red"]),
         "style_map: must be a colour written #rrggbb, got 'red'"),
    ],
)
def test_bad_maps_are_one_error_naming_the_option(options, maps, message):
    with pytest.raises(ConfigError, match=message):
        render(RenderConfig(**FAST, **options), torch.rand(3, 32, 32), [torch.rand(3, 40, 40)], **maps)


def test_mrf_with_an_unstyled_colour_pulls_no_patch_there_and_tiles_exactly():
    """MRF doodles take the unstyled colour too: patches wholly inside it get no pull (their
    features' gradient is zero), a partial patch in proportion, and tiling stays exact."""
    from styleforge.engine.rendering import tile_halo

    generator = torch.Generator().manual_seed(15)
    layers = ("relu2_1", "relu3_1")
    backbone = load_backbone("vgg16-random", layers).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    style = torch.rand(1, 3, 80, 96, generator=generator, dtype=D)
    palette = [RED, BLUE, BLACK]
    level = LevelInputs(content, [style], (96, 128),
                        content_labels=_labels(_stripes(96, 128, RED, BLUE, BLACK), palette),
                        style_labels=[_labels(_stripes(80, 96, RED, BLUE), palette)], unstyled=2)
    config = RenderConfig.mrf_defaults(model="vgg16-random", mrf_layers=layers, content_layers=("relu3_1",))
    objective = build_objective(config, backend, level)
    features = {name: value.requires_grad_(True) for name, value in backend.forward(
        torch.rand(1, 3, 96, 128, generator=generator, dtype=D)).items()}
    term = objective.terms["style"]
    value = term.local_value(features, Window.whole(96, 128), {})
    for layer, grad in zip(layers, torch.autograd.grad(value, [features[layer] for layer in layers])):
        width = grad.shape[-1]
        assert grad[..., width * 2 // 3 + 4:].abs().max().item() == 0.0  # past the patches that straddle
        assert grad[..., : width // 3].abs().max().item() > 0.0
    image = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    tiles = plan_tiles(96, 128, 32, tile_halo(backbone.layers, dict.fromkeys(layers, 2)))
    expected_losses, expected = evaluate(backend, objective, image)
    losses, gradient = evaluate(backend, objective, image, tiles)
    assert losses["style"].item() == pytest.approx(expected_losses["style"].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10


@pytest.mark.parametrize("options", [{"backend": "onnxruntime"}, {"precision": "bf16"}, {"precision": "fp16"}],
                         ids=["onnxruntime", "bf16", "fp16"])
def test_regions_render_on_every_cpu_backend_and_precision_close_to_torch_fp32(options):
    """The guided terms read features as every backend and precision give them (fp32 tensors),
    so a short render with maps lands near the torch fp32 one (half precisions: within their
    rounding, as tests/engine/rendering/test_precision.py measures without maps)."""
    generator = torch.Generator().manual_seed(16)
    content = torch.rand(3, 48, 64, generator=generator)
    styles = [torch.rand(3, 40, 40, generator=generator) for _ in range(2)]
    maps = dict(content_map=_stripes(48, 64, RED, BLUE, BLACK), style_maps=["#ff0000", "#0000ff"])
    config = RenderConfig(**{**FAST, "levels": 1, "iterations": 1}, unstyled_color="#000000")
    reference = render(config, content, styles, **maps).image
    image = render(config.replace(options), content, styles, **maps).image
    assert torch.isfinite(image).all()
    tolerance = 1e-4 if "backend" in options else 2e-2
    assert (image - reference).abs().max().item() < tolerance
