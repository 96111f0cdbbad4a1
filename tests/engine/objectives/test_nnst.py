"""NNST (Kolkin et al. 2022): the search is exact, targets are per position so tiles are exact,
regions confine the search, large banks are sampled, and a render lowers the term."""

from __future__ import annotations

import pytest
import torch

from styleforge.engine import RenderConfig, load_backbone, render
from styleforge.engine.backends import TorchBackend
from styleforge.engine.objectives import NNST_LAYERS, hypercolumns, nearest_hypercolumns, semantic_labels
from styleforge.engine.objectives import _nnst
from styleforge.engine.rendering import LevelInputs, build_objective, evaluate, plan_tiles, receptive_radius

D = torch.float64
LAYERS = ("relu1_1", "relu2_2", "relu3_1", "relu4_1")  # not the Gram default, which NNST replaces by its own
RED, BLUE, BLACK = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)


def test_the_search_is_the_brute_force_centred_cosine_argmax():
    generator = torch.Generator().manual_seed(0)
    rows, bank = torch.randn(300, 40, generator=generator), torch.randn(500, 40, generator=generator)
    row_mean, bank_mean = rows.mean(0), bank.mean(0)
    found = nearest_hypercolumns(rows, bank, row_mean=row_mean, bank_mean=bank_mean)
    a = torch.nn.functional.normalize(rows - row_mean, dim=1)
    b = torch.nn.functional.normalize(bank - bank_mean, dim=1)
    assert torch.equal(found, (a @ b.T).argmax(dim=1))


def test_hypercolumns_stack_every_layer_at_stride_4_divided_by_its_channels():
    features = {"a": torch.ones(1, 8, 32, 32), "b": torch.ones(1, 16, 8, 8) * 2, "c": torch.ones(1, 4, 3, 3)}
    column = hypercolumns(features, ("a", "b", "c"), {"a": 1, "b": 4, "c": 8}, (32, 32))
    assert column.shape == (1, 28, 8, 8)  # c's 3 x 2 = 6 rows are padded to 8 with its edge
    assert torch.allclose(column[0, :8], torch.full((8, 8, 8), 1 / 8))
    assert torch.allclose(column[0, 8:24], torch.full((16, 8, 8), 2 / 16))


def test_the_paper_layers_are_taps_of_vgg16_and_vgg19():
    for model, arch in (("vgg16-random", "vgg16"), ("vgg19-random", "vgg19")):
        config = RenderConfig(style_loss="nnst", model=model)
        assert config.objective.style_layers == NNST_LAYERS[arch] and "relu4_3" in config.taps


@pytest.mark.parametrize("maps", [False, True])
def test_tiled_nnst_equals_untiled_in_float64(maps, stripes):
    """Targets (the search window by window) and the evaluation, tiled against whole; with maps,
    three regions, one unstyled, two styles each bound to a region, tiles cutting the borders."""
    generator = torch.Generator().manual_seed(11)
    backbone = load_backbone("vgg16-random", LAYERS).double()
    backend = TorchBackend(backbone, torch.device("cpu"))
    content = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    styles = [torch.rand(1, 3, 80, 96, generator=generator, dtype=D) for _ in range(2)]
    image = torch.rand(1, 3, 96, 128, generator=generator, dtype=D)
    level = LevelInputs(content, styles, (96, 128))
    if maps:
        palette = torch.tensor([RED, BLUE, BLACK])
        level.content_labels = semantic_labels(stripes(96, 128, RED, BLUE, BLACK), palette).to(D)
        level.style_labels = [semantic_labels(stripes(80, 96, RED, BLUE), palette).to(D),
                              semantic_labels(stripes(80, 96, BLUE), palette).to(D)]
        level.unstyled = 2
    config = RenderConfig(style_loss="nnst", model="vgg16-random", style_layers=LAYERS, content_layers=("relu3_1",),
                          style_weight=100.0)
    tiles = plan_tiles(96, 128, 32, receptive_radius(backbone.layers))
    whole = build_objective(config, backend, level, start=image, first=False)
    tiled = build_objective(config, backend, level, tile_size=32, start=image, first=False)
    # The same target at every position (the bank's rows come window by window, so in another order).
    for a, b in ((whole.terms["style"].target, tiled.terms["style"].target),):
        assert torch.equal(a.index >= 0, b.index >= 0)
        assert torch.allclose(a.bank[a.index.clamp_min(0)], b.bank[b.index.clamp_min(0)], rtol=0, atol=1e-6)
    expected_losses, expected = evaluate(backend, whole, image)
    losses, gradient = evaluate(backend, tiled, image, tiles)
    assert expected_losses["style"].item() > 1e-3
    for name in ("content", "style", "tv", "total"):
        assert losses[name].item() == pytest.approx(expected_losses[name].item(), rel=1e-10)
    assert ((gradient - expected).abs().max() / expected.abs().max()).item() < 1e-10
    if maps:  # the unstyled third has no target
        assert (whole.terms["style"].target.index[:, 22:] == -1).all()


def test_a_position_searches_only_its_regions_style_rows(stripes):
    """Left half red, right half blue; style 1 is all red, style 2 all blue: every red position's
    row is one of style 1's (the bank holds style 1's rows first, in 4 rotations)."""
    generator = torch.Generator().manual_seed(2)
    backbone = load_backbone("vgg16-random", LAYERS)
    backend = TorchBackend(backbone, torch.device("cpu"))
    styles = [torch.rand(1, 3, 64, 64, generator=generator) for _ in range(2)]
    palette = torch.tensor([RED, BLUE])
    level = LevelInputs(torch.rand(1, 3, 64, 64, generator=generator), styles, (64, 64),
                        content_labels=semantic_labels(stripes(64, 64, RED, BLUE), palette),
                        style_labels=[semantic_labels(stripes(64, 64, RED), palette),
                                      semantic_labels(stripes(64, 64, BLUE), palette)])
    config = RenderConfig(style_loss="nnst", model="vgg16-random", style_layers=LAYERS, content_layers=("relu3_1",))
    index = build_objective(config, backend, level).terms["style"].target.index
    first_style_rows = 4 * 16 * 16
    assert (index[:, :8] < first_style_rows).all() and (index[:, 8:] >= first_style_rows).all()


def test_a_large_bank_is_sampled_on_a_seeded_grid(monkeypatch):
    monkeypatch.setattr(_nnst, "BANK_ROWS", 100)
    backend = TorchBackend(load_backbone("vgg16-random", LAYERS), torch.device("cpu"))
    level = LevelInputs(torch.rand(1, 3, 64, 64), [torch.rand(1, 3, 80, 80)], (64, 64))
    config = RenderConfig(style_loss="nnst", model="vgg16-random", style_layers=LAYERS, content_layers=("relu3_1",))
    target = build_objective(config, backend, level).terms["style"].target
    assert target.bank.shape[0] <= 100 and target.bank.shape[0] >= 100 // 4  # step 4: (20 / 4)^2 x 4 rotations
    assert target.index.max() < target.bank.shape[0]


def test_a_render_lowers_the_nnst_term():
    generator = torch.Generator().manual_seed(1)
    terms = []
    config = RenderConfig(style_loss="nnst", model="vgg16-random", device="cpu", backend="torch", size=64, levels=2,
                          iterations=8)
    render(config, torch.rand(3, 48, 64, generator=generator), [torch.rand(3, 64, 64, generator=generator)],
           callback=lambda event: terms.append((event.level, float(event.losses["style"]))))
    last_level = [value for level, value in terms if level == 1]
    assert last_level[-1] < last_level[0]
