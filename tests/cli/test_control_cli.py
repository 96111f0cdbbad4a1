"""Regions and colour from the command line, TOML and a manifest: flat-colour style maps, an
unstyled colour, --color-transfer; bad input is one line naming the option, exit 2, no output."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import load_image, read_metadata, resize_to

runner = CliRunner()
FAST = ["--model", "vgg16-random", "--device", "cpu", "--quiet", "--size", "48", "--levels", "1", "-n", "2"]


def _map(path, size, *colors):
    """Vertical stripes of equal width, one per colour."""
    picture = Image.new("RGB", size, colors[0])
    for index, color in enumerate(colors[1:], start=1):
        picture.paste(color, (size[0] * index // len(colors), 0, size[0], size[1]))
    picture.save(path)
    return path


@pytest.fixture
def inputs(tmp_path, test_images):
    paths = {}
    for name, source in (("content", "tubingen.jpg"), ("style", "starry_night.jpg")):
        with Image.open(test_images / source) as image:
            image = image.convert("RGB").resize((64, 48))
            paths[name] = tmp_path / f"{name}.png"
            image.save(paths[name])
    paths["content_map"] = _map(tmp_path / "content_map.png", (64, 48), (255, 0, 0), (0, 0, 0))
    return paths


def test_a_flat_colour_style_map_and_an_unstyled_colour(tmp_path, inputs):
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(inputs["content"]), "-s", str(inputs["style"]), "--style-map", "#ff0000",
                                 "--content-map", str(inputs["content_map"]), "--unstyled-color", "#000000",
                                 "-o", str(output), *FAST])
    assert result.exit_code == 0, result.output
    image = load_image(output)
    content = resize_to(load_image(inputs["content"])[None], *image.shape[-2:])[0]
    # The right (unstyled) half is the content, to 8-bit rounding, past the soft border.
    assert (image[:, :, 30:] - content[:, :, 30:]).abs().max().item() <= 1 / 255 + 1e-6
    metadata = read_metadata(output)
    assert metadata["style_maps"] == ["#ff0000"] and metadata["config"]["unstyled_color"] == "#000000"


def test_color_transfer_from_a_config_file(tmp_path, inputs):
    config = tmp_path / "render.toml"
    config.write_text('color-transfer = "histogram"\n')
    output = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(inputs["content"]), "-s", str(inputs["style"]), "-o", str(output),
                                 "--config", str(config), *FAST])
    assert result.exit_code == 0, result.output
    assert read_metadata(output)["config"]["color_transfer"] == "histogram"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--content-map", "{content_map}", "--style-map", "#ff0000"],
         "--content-map: colour(s) #000000 have no region in the style maps"),
        (["--content-map", "{content_map}", "--style-map", "{small_map}"], "must be the same size"),
        (["--color-transfer", "histo"], "--color-transfer: unknown value 'histo' (did you mean 'histogram'?)"),
        (["--color-transfer", "histogram", "--original-colors"], "--color-transfer: histogram contradicts "
                                                                 "original_colors"),
        (["--unstyled-color", "#000000"], "--unstyled-color: names a colour of the content map"),
        (["--unstyled-color", "black", "--content-map", "{content_map}", "--style-map", "#ff0000"],
         "--unstyled-color: must be a colour written #rrggbb"),
        (["--content-map", "{content_map}", "--style-map", "#ff0000", "--style-map", "#000000"],
         "--style-map: 2 maps for 1 style images"),
    ],
)
def test_bad_regions_and_colour_input_is_one_line_exit_2_and_no_output(tmp_path, inputs, args, message):
    small_map = _map(tmp_path / "small.png", (20, 20), (255, 0, 0), (0, 0, 0))
    output = tmp_path / "out.png"
    args = [a.format(content_map=inputs["content_map"], small_map=small_map) for a in args]
    result = runner.invoke(app, ["render", str(inputs["content"]), "-s", str(inputs["style"]), *args,
                                 "-o", str(output), *FAST])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not output.exists()


def test_a_manifest_job_with_a_flat_colour_style_map(tmp_path, inputs):
    manifest = tmp_path / "jobs.jsonl"
    job = {"content": "content.png", "style": "style.png", "style_map": "#ff0000", "content_map": "content_map.png",
           "unstyled_color": "#000000", "output": "out/a.png", "size": 48, "levels": 1, "iterations": 2,
           "model": "vgg16-random", "device": "cpu"}
    manifest.write_text(json.dumps(job) + "\n")
    result = runner.invoke(app, ["batch", str(manifest)])
    assert result.exit_code == 0, result.output
    assert load_image(tmp_path / "out" / "a.png").shape == (3, 36, 48)
