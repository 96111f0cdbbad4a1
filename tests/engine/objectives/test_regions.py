"""Guided (region) style statistics: a hand computation, the one-region case equals the unguided
loss, each region pulled toward its own style region, and no style pull in an unstyled region."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import RenderConfig, load_backbone
from styleforge.engine.backends import TorchBackend
from styleforge.engine.objectives import (
    GramStyleTerm,
    GuidedStyleTerm,
    Window,
    RegionGuide,
    gram_statistics,
    guided_moments,
)
from styleforge.engine.rendering import LevelInputs, build_objective, evaluate

D = torch.float64


def _halves(height: int, width: int, left: float = 0.5) -> torch.Tensor:
    """(1, 2, H, W) one-hot labels: channel 0 on the first ``left`` of the columns, 1 on the rest."""
    labels = torch.zeros(1, 2, height, width, dtype=D)
    cut = round(width * left)
    labels[:, 0, :, :cut] = 1
    labels[:, 1, :, cut:] = 1
    return labels


def test_guided_moments_match_a_hand_computation():
    features = torch.arange(12, dtype=D).reshape(1, 2, 2, 3) / 7 - 0.5
    # At pixel level region 0 covers 3 of 6 columns; averaged down to the 3 feature columns the
    # mask is 1, 0.5, 0 (soft at the border, not nearest-neighbour).
    guide = RegionGuide(_halves(4, 6), [0, 1])
    stats = guided_moments({"a": features}, Window.whole(4, 6), ["a"], {"a": 2}, guide, means=True)
    mask = torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]], dtype=D)
    for r, m in ((0, mask), (1, 1 - mask)):
        weight = m.pow(2)
        gram = torch.zeros(2, 2, dtype=D)
        mean = torch.zeros(2, dtype=D)
        for y in range(2):
            for x in range(3):
                f = features[0, :, y, x]
                gram += weight[y, x] * torch.outer(f, f)
                mean += weight[y, x] * f
        assert stats[f"a/{r}/weight"].positions == 6
        assert stats[f"a/{r}/weight"].mean.item() == pytest.approx(weight.mean().item(), rel=1e-12)
        # Guided Gram G_r = sum m^2 F F^T / sum m^2 (Gatys et al. 2017), from the mean statistics.
        guided = stats[f"a/{r}/second"].mean[0] / stats[f"a/{r}/weight"].mean
        assert torch.allclose(guided, gram / weight.sum(), rtol=1e-12, atol=1e-15)
        assert torch.allclose(stats[f"a/{r}/mean"].mean[0] / stats[f"a/{r}/weight"].mean, mean / weight.sum(),
                              rtol=1e-12, atol=1e-15)


LAYERS = ("relu1_1", "relu2_1", "relu3_1")


@pytest.fixture(scope="module")
def backend():
    return TorchBackend(load_backbone("vgg16-random", LAYERS).double(), torch.device("cpu"))


def _config(style_loss: str, **extra) -> RenderConfig:
    return RenderConfig(style_loss=style_loss, model="vgg16-random", style_layers=LAYERS, content_layers=("relu3_1",),
                        style_weight=100.0, **extra)


@pytest.mark.parametrize("style_loss", ["gram", "w2", "sliced"])
def test_a_one_region_map_gives_exactly_the_unguided_loss(backend, style_loss):
    generator = torch.Generator().manual_seed(3)
    content = torch.rand(1, 3, 64, 80, generator=generator, dtype=D)
    style = torch.rand(1, 3, 64, 64, generator=generator, dtype=D)
    image = torch.rand(1, 3, 64, 80, generator=generator, dtype=D)
    plain = LevelInputs(content, [style], (64, 80))
    mapped = LevelInputs(content, [style], (64, 80), content_labels=torch.ones(1, 1, 64, 80, dtype=D),
                         style_labels=[torch.ones(1, 1, 64, 64, dtype=D)])
    expected_losses, expected = evaluate(backend, build_objective(_config(style_loss), backend, plain), image)
    losses, gradient = evaluate(backend, build_objective(_config(style_loss), backend, mapped), image)
    assert expected_losses["style"].item() > 1e-3
    assert losses["style"].item() == pytest.approx(expected_losses["style"].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10


def _gram(features: torch.Tensor) -> torch.Tensor:
    return gram_statistics({"a": features}, Window.whole(*features.shape[-2:]), ["a"], {})["a"].mean


def test_each_region_moves_toward_its_own_style_region():
    """Two flat-coloured halves; the style's left half has other statistics than its right half.
    Optimising the features, the output's left half takes the style's left statistics and its
    right half the right ones; without maps both halves would settle on the mixture."""
    generator = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 6, 12, generator=generator, dtype=D)
    style[..., :6] *= torch.tensor([2.0, 0.1, 0.1], dtype=D)[:, None, None]
    style[..., 6:] *= torch.tensor([0.1, 0.1, 2.0], dtype=D)[:, None, None]
    left, right = _gram(style[..., :6]), _gram(style[..., 6:])
    labels = _halves(6, 12)
    targets = {}
    for r in (0, 1):
        stats = guided_moments({"a": style}, Window.whole(6, 12), ["a"], {}, RegionGuide(labels, [r]), means=False)
        targets[r] = GramStyleTerm({"a": stats[f"a/{r}/second"].mean / stats[f"a/{r}/weight"].mean}, {"a": 1.0})
    term = GuidedStyleTerm(targets, RegionGuide(labels, [0, 1]))
    features = torch.rand(1, 3, 6, 12, generator=generator, dtype=D).requires_grad_(True)

    def distances(half: torch.Tensor) -> tuple[float, float]:
        gram = _gram(half.detach())
        return ((gram - left).norm() / left.norm()).item(), ((gram - right).norm() / right.norm()).item()

    start = distances(features[..., :6])
    optimizer = torch.optim.Adam([features], lr=0.02)
    for _ in range(400):
        optimizer.zero_grad()
        term.global_value(term.statistics({"a": features}, Window.whole(6, 12))).backward()
        optimizer.step()
    to_left, to_right = distances(features[..., :6])
    assert to_left < 0.05 < 0.5 < to_right and to_left < start[0] / 10
    to_left, to_right = distances(features[..., 6:])
    assert to_right < 0.05 < 0.5 < to_left


@pytest.mark.parametrize("style_loss", ["gram", "w2", "sliced", "nnst"])
def test_an_unstyled_region_gets_no_style_gradient(backend, style_loss):
    """Channel 1 is the unstyled colour: the style term's gradient with respect to the features
    is zero wherever the mask is wholly that region, and not zero in the styled one."""
    generator = torch.Generator().manual_seed(5)
    content = torch.rand(1, 3, 64, 96, generator=generator, dtype=D)
    style = torch.rand(1, 3, 64, 64, generator=generator, dtype=D)
    level = LevelInputs(content, [style], (64, 96), content_labels=_halves(64, 96),
                        style_labels=[_halves(64, 64, left=1.0)], unstyled=1)
    objective = build_objective(_config(style_loss), backend, level)
    features = {name: value.requires_grad_(True) for name, value in backend.forward(torch.rand(
        1, 3, 64, 96, generator=generator, dtype=D)).items()}
    term = objective.terms["style"]
    window = Window.whole(64, 96)
    stats = term.statistics(features, window)
    local = style_loss in ("sliced", "nnst")  # terms of per-position pulls
    value = term.local_value(features, window, stats) if local else term.global_value(stats)
    grads = torch.autograd.grad(value, [features[layer] for layer in LAYERS])
    for layer, grad in zip(LAYERS, grads):
        width = grad.shape[-1]
        assert grad[..., width // 2:].abs().max().item() == 0.0  # wholly unstyled columns
        assert grad[..., : width // 2 - 1].abs().max().item() > 0.0
