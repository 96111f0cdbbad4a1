"""``--photo`` and ``photo = true``: the photorealistic preset from the command line and TOML,
explicit options over it, and a bad photo weight refused in one line before any work."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import PHOTO_PRESET, read_metadata

runner = CliRunner()
FAST = ["--model", "vgg19-random", "--device", "cpu", "--quiet", "--size", "32", "-n", "2"]


@pytest.fixture
def photos(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for name in ("content", "style"):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    return tmp_path


def _render(photos, *args: str):
    output = photos / "out.png"
    result = runner.invoke(app, ["render", str(photos / "content.png"), "-s", str(photos / "style.png"),
                                 "-o", str(output), *FAST, *args])
    return result, output


def test_photo_flag_sets_the_preset_and_renders_with_the_term(photos):
    result, output = _render(photos, "--photo")
    assert result.exit_code == 0, result.output
    config = read_metadata(output)["config"]
    for name, value in PHOTO_PRESET.items():
        assert config[name] == (list(value) if isinstance(value, tuple) else value), name
    assert config["photo_weight"] > 0 and config["tv_weight"] == 0.0 and config["init"] == "content"


def test_an_explicit_option_overrides_the_preset_on_the_command_line(photos):
    result, output = _render(photos, "--tv-weight", "3", "--photo", "--photo-weight", "7")
    assert result.exit_code == 0, result.output
    config = read_metadata(output)["config"]
    assert config["photo"] is True and config["tv_weight"] == 3.0 and config["photo_weight"] == 7.0
    assert config["init"] == PHOTO_PRESET["init"]


def test_photo_in_a_toml_file_sets_the_preset_and_its_options_override_it(photos):
    settings = photos / "photo.toml"
    settings.write_text("photo = true\nphoto-weight = 5.0\n")
    result, output = _render(photos, "--config", str(settings))
    assert result.exit_code == 0, result.output
    config = read_metadata(output)["config"]
    assert config["photo"] is True and config["photo_weight"] == 5.0
    assert config["tv_weight"] == PHOTO_PRESET["tv_weight"]  # from the preset: the file did not set it
    # A flag in the file's place wins over it; --no-photo drops the preset the file asked for.
    result, output = _render(photos, "--config", str(settings), "--no-photo", "--overwrite")
    assert result.exit_code == 0, result.output
    config = read_metadata(output)["config"]
    assert config["photo"] is False and config["photo_weight"] == 5.0 and config["tv_weight"] == 2.0


def test_a_toml_option_overrides_the_preset_a_flag_asks_for(photos):
    settings = photos / "plain.toml"
    settings.write_text("tv_weight = 0.5\n")
    result, output = _render(photos, "--config", str(settings), "--photo")
    assert result.exit_code == 0, result.output
    config = read_metadata(output)["config"]
    assert config["tv_weight"] == 0.5 and config["photo_weight"] == PHOTO_PRESET["photo_weight"]


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_photo_weight_is_one_line_naming_the_option_and_writes_nothing(photos, value):
    result, output = _render(photos, f"--photo-weight={value}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--photo-weight: must be a finite number >= 0" in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not output.exists()
