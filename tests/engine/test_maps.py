"""Issue 25, item 11: how region maps are read. A semi-transparent brush keeps its colour (never
blended with white into one no one painted), antialiased and JPEG borders are snapped to the
nearest region colour and reported, and a colour written wrong is called that."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.engine import ConfigError, RenderConfig, StyleforgeWarning, load_map, load_style_maps
from styleforge.engine.objectives import semantic_palette, shared_palette
from styleforge.engine.rendering import prepare_inputs

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _halves(width=40, height=32, border=None):
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :width // 2], array[:, width // 2:] = RED, BLUE
    if border is not None:
        array[:, width // 2 - 1:width // 2 + 1] = border  # an antialiased edge: the two colours mixed
    return array


def _hexes(palette):
    return sorted("#" + "".join(f"{round(c * 255):02x}" for c in colour.tolist()) for colour in palette)


def test_a_semi_transparent_map_keeps_its_colours(tmp_path):
    rgba = np.concatenate([_halves(), np.full((32, 40, 1), 128, dtype=np.uint8)], axis=2)
    rgba[:2, :2, 3] = 0  # unpainted: white, as before (too small here to be a region)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "map.png")
    styles = [torch.rand(3, 32, 40)]
    style_map = load_style_maps([tmp_path / "map.png"], styles)[0]
    assert _hexes(semantic_palette(style_map, what="style_map")) == ["#0000ff", "#ff0000"]  # not pink and lilac
    assert torch.equal(style_map[:, :2, :2], torch.ones(3, 2, 2))
    Image.fromarray(_halves()).save(tmp_path / "content.png")
    assert _hexes(shared_palette(load_map(tmp_path / "content.png"), style_map)) == ["#0000ff", "#ff0000"]


def test_a_small_jpeg_map_with_a_blended_border_is_snapped_and_reported(tmp_path):
    Image.fromarray(_halves(border=(128, 0, 128))).save(tmp_path / "style_map.jpg", quality=90)
    Image.fromarray(_halves()).save(tmp_path / "content_map.png")
    content_map = load_map(tmp_path / "content_map.png")
    style_map = load_map(tmp_path / "style_map.jpg")
    assert semantic_palette(style_map, what="style_map").shape == (2, 3)  # the border is no region
    config = RenderConfig(size=32, model="vgg19-random", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = prepare_inputs(config, torch.rand(3, 32, 40), [torch.rand(3, 32, 40)], content_map=content_map,
                                style_maps=[style_map])
    assert _hexes(inputs.palette) in (["#0000fe", "#fe0000"], ["#0000ff", "#ff0000"])  # JPEG may drift by one
    reports = [str(w.message) for w in caught if issubclass(w.category, StyleforgeWarning)]
    assert len(reports) == 1 and reports[0].startswith("style map 1: ") and "blends between regions" in reports[0]


@pytest.mark.parametrize(("spec", "message"), [("#f00", r"'#f00' is not a #rrggbb colour \(write #ff0000\)"),
                                                ("#12345", "'#12345' is not a #rrggbb colour")])
def test_a_colour_written_wrong_is_called_that_not_a_missing_file(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_style_maps([spec], [torch.rand(3, 8, 8)])
