"""The objective registry: a new style loss is one file. A toy loss declared here alone renders,
tiled and untiled, with and without maps; unknown names and maps without a guided variant are
clear errors, never a fallback to Gram."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from styleforge.engine import ConfigError, RenderConfig, load_backbone, render
from styleforge.engine._style_losses import style_loss_names, unregister_entry
from styleforge.engine.backends import TorchBackend
from styleforge.engine.objectives import (
    Statistic,
    StyleLoss,
    StyleTargets,
    Term,
    Window,
    guided_moment_term,
    register_style_loss,
    semantic_labels,
)
from styleforge.engine.rendering import LevelInputs, build_objective, evaluate, plan_tiles, receptive_radius

D = torch.float64
LAYERS = ("relu1_1", "relu2_1", "relu3_1")


# --- the toy loss: its whole declaration -------------------------------------------------------


def _means(features: Mapping[str, torch.Tensor], window: Window, layers, strides) -> dict[str, Statistic]:
    stats = {}
    for layer in layers:
        inside = window.owned(strides.get(layer, 1), features[layer])
        if inside.shape[2] * inside.shape[3]:
            stats[f"{layer}/mean"] = Statistic(inside.mean(dim=(2, 3)), inside.shape[2] * inside.shape[3])
    return stats


class MeanStyleTerm(Term):
    """sum_l |mean(F_l) - mean(S_l)|^2 / |mean(S_l)|^2: the features' means only (a toy)."""

    name = "style"

    def __init__(self, targets, strides=None):
        super().__init__(strides)
        self.targets = dict(targets)
        self.layers = tuple(key.split("/")[0] for key in self.targets)

    def statistics(self, features, window):
        return _means(features, window, self.layers, self.strides)

    def global_value(self, stats):
        errors = [(stats[key].mean - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)
                  for key, target in self.targets.items()]
        return torch.stack(errors).sum()


def _build(targets: StyleTargets) -> Term:
    return MeanStyleTerm(targets.blended_targets(_means), targets.strides)


def _build_guided(targets: StyleTargets) -> Term:
    """Each region's guided means (the registry's helper for losses on guided moments)."""
    return guided_moment_term(targets, ("mean", "second"), lambda found: MeanStyleTerm(
        {key: value for key, value in found.items() if key.endswith("/mean")}, targets.strides))


@pytest.fixture
def toy_losses():
    register_style_loss(StyleLoss("toy_mean", _build, _build_guided))
    register_style_loss(StyleLoss("toy_unguided", _build, None))
    yield
    unregister_entry("toy_mean")
    unregister_entry("toy_unguided")


# --- the tests ----------------------------------------------------------------------------------


RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


@pytest.mark.parametrize("maps", [False, True])
def test_a_toy_loss_from_a_test_file_tiles_exactly(toy_losses, maps, stripes):
    generator = torch.Generator().manual_seed(5)
    backbone = load_backbone("vgg16-random", LAYERS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, 64, 96, generator=generator, dtype=D)
    style = torch.rand(1, 3, 64, 80, generator=generator, dtype=D)
    image = torch.rand(1, 3, 64, 96, generator=generator, dtype=D)
    level = LevelInputs(content, [style], (64, 96))
    if maps:
        palette = torch.tensor([RED, BLUE])
        level.content_labels = semantic_labels(stripes(64, 96, RED, BLUE), palette).to(D)
        level.style_labels = [semantic_labels(stripes(64, 80, BLUE, RED), palette).to(D)]
    config = RenderConfig(style_loss="toy_mean", model="vgg16-random", style_layers=LAYERS,
                          content_layers=("relu3_1",), style_weight=100.0)
    tiles = plan_tiles(64, 96, 32, receptive_radius(backbone.layers))
    expected_losses, expected = evaluate(backend, build_objective(config, backend, level), image)
    losses, gradient = evaluate(backend, build_objective(config, backend, level, tile_size=32), image, tiles)
    assert expected_losses["style"].item() > 1e-4
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10


@pytest.mark.parametrize("tile_size", [0, 32])
@pytest.mark.parametrize("maps", [False, True])
def test_a_toy_loss_renders_tiled_and_untiled_with_and_without_maps(toy_losses, maps, tile_size, stripes):
    generator = torch.Generator().manual_seed(3)
    content, style = torch.rand(3, 48, 64, generator=generator), torch.rand(3, 48, 48, generator=generator)
    options = {"content_map": stripes(48, 64, RED, BLUE), "style_maps": [stripes(48, 48, BLUE, RED)]} if maps else {}
    styles = []
    config = RenderConfig(style_loss="toy_mean", model="vgg16-random", device="cpu", backend="torch",
                          precision="fp32", size=64, levels=1, iterations=6, init="noise", tile_size=tile_size)
    render(config, content, [style], callback=lambda event: styles.append(float(event.losses["style"])), **options)
    assert styles[-1] < styles[0] / 2


def test_the_registry_lists_the_toy_loss_and_the_config_accepts_it(toy_losses):
    assert {"gram", "w2", "sliced", "nnst", "toy_mean"} <= set(style_loss_names())
    assert RenderConfig(style_loss="toy_mean").objective.style_loss == "toy_mean"


def test_an_unknown_loss_is_an_error_never_gram():
    with pytest.raises(ConfigError, match="did you mean 'sliced'"):
        RenderConfig(style_loss="slicd")
    assert "mrf" not in style_loss_names()  # a method of its own, not a style loss of gram's


def test_maps_with_a_loss_without_a_guided_variant_are_an_error(toy_losses, stripes):
    config = RenderConfig(style_loss="toy_unguided", model="vgg16-random", device="cpu", size=32, levels=1,
                          iterations=1)
    with pytest.raises(ConfigError, match="no guided variant"):
        render(config, torch.rand(3, 32, 32), [torch.rand(3, 32, 32)], content_map=stripes(32, 32, RED, BLUE),
               style_maps=[stripes(32, 32, RED, BLUE)])
