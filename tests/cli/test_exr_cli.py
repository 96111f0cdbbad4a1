"""``render`` with an EXR plate through ACES: the plate's alpha, windows and type come back, the
parameters sit in the header, and values above 1 survive."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import read_metadata

pytest.importorskip("OpenEXR", reason="the exr extra (OpenEXR) is not installed")
pytest.importorskip("PyOpenColorIO", reason="the exr extra (opencolorio) is not installed")
from styleforge.engine._exr import encode_exr, read_exr  # noqa: E402

runner = CliRunner()
TINY = ["--size", "48", "-n", "3", "--levels", "1", "--model", "vgg16-random", "--device", "cpu", "--quiet"]


@pytest.fixture
def plate(tmp_path, test_images, monkeypatch):
    """tubingen as a scene-linear ACEScg plate (sRGB decoded, doubled: highlights above 1), with
    alpha and a data window inside a larger display window."""
    monkeypatch.delenv("OCIO", raising=False)
    with Image.open(test_images / "tubingen.jpg") as image:
        image = image.convert("RGB").resize((48, 32))
    srgb = np.asarray(image, dtype=np.float32) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4) * 2.0
    alpha = np.ones(linear.shape[:2], np.float32)
    alpha[:, :8] = 0.5
    path = tmp_path / "plate.exr"
    path.write_bytes(encode_exr(linear, alpha, pixel_type="half", compression="DWAA_COMPRESSION",
                                data_window=((10, 20), (57, 51)), display_window=((0, 0), (79, 71))))
    style = tmp_path / "style.png"
    with Image.open(test_images / "starry_night.jpg") as image:
        image.resize((48, 40)).save(style)
    return path, style


def test_render_an_exr_plate_through_aces(tmp_path, plate):
    content, style = plate
    output = tmp_path / "out.exr"
    result = runner.invoke(app, ["render", str(content), "-s", str(style), "-o", str(output),
                                 "--input-colorspace", "ACEScg", *TINY])
    assert result.exit_code == 0, result.output
    out, source = read_exr(output, max_pixels=10**6), read_exr(content, max_pixels=10**6)
    assert out.rgb.shape == (32, 48, 3) and np.isfinite(out.rgb).all()
    assert (out.pixel_type, out.compression) == ("half", "DWAA_COMPRESSION")
    assert (out.data_window, out.display_window) == (source.data_window, source.display_window)
    np.testing.assert_array_equal(out.alpha, source.alpha)  # passed through untouched
    assert out.rgb.max() > 1.0
    metadata = read_metadata(output)
    assert metadata["config"]["input_colorspace"] == "ACEScg"
    assert metadata["color"]["view"].startswith("ACES") and metadata["color"]["colorspace"] == "ACEScg"


def test_an_exr_plate_to_a_display_png_and_a_bad_colour_space(tmp_path, plate):
    content, style = plate
    png = tmp_path / "out.png"
    result = runner.invoke(app, ["render", str(content), "-s", str(style), "-o", str(png), *TINY])
    assert result.exit_code == 0, result.output
    assert Image.open(png).size == (48, 32)
    result = runner.invoke(app, ["render", str(content), "-s", str(style), "-o", str(tmp_path / "b.exr"),
                                 "--output-colorspace", "ACEScgg", *TINY])
    assert result.exit_code == 2 and "did you mean 'ACEScg'" in result.output
    assert not (tmp_path / "b.exr").exists()


def _exr_shot(folder, numbers):
    folder.mkdir()
    rng = np.random.default_rng(0)
    texture = rng.uniform(0.0, 2.0, size=(24, 40 + 2 * len(numbers), 3)).astype(np.float32)
    for t, number in enumerate(numbers):
        (folder / f"plate.{number:04d}.exr").write_bytes(encode_exr(texture[:, 2 * t:2 * t + 40]))
    return folder


def test_video_renders_a_range_of_a_numbered_exr_shot_keeping_its_numbers(tmp_path, plate):
    pytest.importorskip("cv2", reason="video needs OpenCV (the video extra)")
    _, style = plate
    shot = _exr_shot(tmp_path / "shot", range(1001, 1005))
    result = runner.invoke(app, ["video", str(shot / "plate.####.exr"), "-s", str(style), "-o",
                                 str(tmp_path / "out" / "styled.%04d.exr"), "--frames", "1002-1003",
                                 "--frame-iterations", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["styled.1002.exr", "styled.1003.exr"]
    assert read_metadata(tmp_path / "out" / "styled.1003.exr")["frame"] == 1003
    (shot / "plate.1003.exr").unlink()
    result = runner.invoke(app, ["video", str(shot / "plate.####.exr"), "-s", str(style), "-o",
                                 str(tmp_path / "again" / "styled.####.exr"), *TINY])
    assert result.exit_code == 2 and "missing frames 1003" in result.output
    assert not (tmp_path / "again").exists()


def test_video_takes_the_colour_options_from_its_flags_and_config_file(tmp_path, plate):
    # Refused before (issue 26): a shot's EXR frames are now read and written as render's plate.
    pytest.importorskip("cv2", reason="video needs OpenCV (the video extra)")
    _, style = plate
    shot = _exr_shot(tmp_path / "shot", range(1001, 1003))
    options = tmp_path / "shot.toml"
    options.write_text('output-colorspace = "Linear Rec.709 (sRGB)"\n')
    result = runner.invoke(app, ["video", str(shot / "plate.####.exr"), "-s", str(style), "-o",
                                 str(tmp_path / "out" / "styled.####.exr"), "--input-colorspace", "ACES2065-1",
                                 "--view", "Un-tone-mapped", "--config", str(options), "--frame-iterations", "1",
                                 *TINY])
    assert result.exit_code == 0, result.output
    for number in (1001, 1002):
        metadata = read_metadata(tmp_path / "out" / f"styled.{number}.exr")
        assert metadata["frame"] == number
        assert (metadata["config"]["input_colorspace"], metadata["config"]["output_colorspace"],
                metadata["config"]["view"]) == ("ACES2065-1", "Linear Rec.709 (sRGB)", "Un-tone-mapped")
        assert (metadata["color"]["colorspace"], metadata["color"]["view"]) == ("ACES2065-1", "Un-tone-mapped")
    result = runner.invoke(app, ["video", str(shot / "plate.####.exr"), "-s", str(style), "-o",
                                 str(tmp_path / "again" / "styled.####.exr"), "--view", "No such view", *TINY])
    assert result.exit_code == 2 and "--view" in result.output and "unknown value 'No such view'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "again").exists()


def test_batch_glob_renders_a_numbered_shot_frame_by_frame(tmp_path, plate, monkeypatch):
    _, style = plate
    _exr_shot(tmp_path / "shot", range(1001, 1003))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["batch", "--glob", "shot/plate.####.exr", "-s", str(style), "-o",
                                 "out/styled.####.exr", "--frames", "1002-1002", *TINY[:-1]])
    assert result.exit_code == 0, result.output
    # Only frame 1002 rendered, under its own number; the glob's report lies beside the outputs.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["batch-report.json", "styled.1002.exr"]


def _wide_plate(path):
    """A 40x20 plate with an alpha ramp across and down, a light at the top-left corner of its
    centre 20x20 (what a square frame keeps) and another at its bottom-right corner (cut away)."""
    rows, columns = np.mgrid[0:20, 0:40].astype(np.float32)
    alpha = (columns / 39.0 * 0.8 + rows / 19.0 * 0.2).astype(np.float32)
    rgb = np.full((20, 40, 3), 0.18, np.float32)
    rgb[0, 10] = rgb[19, 39] = 5000.0
    path.write_bytes(encode_exr(rgb, alpha, pixel_type="float"))
    return alpha


@pytest.mark.parametrize("command", ["render", "video", "batch"])
def test_a_frame_of_another_aspect_crops_the_plates_alpha_and_residual_as_the_picture(tmp_path, plate, command,
                                                                                         monkeypatch):
    """--size 16x16 on a 40x20 plate renders its centre 20x20 (a cover crop, never a stretch):
    alpha and the residual (a light above what the display holds) are cut the same way, so the
    light at the kept part's corner is at the output's corner, and the output is a 16x16 frame."""
    import torch

    if command == "video":
        pytest.importorskip("cv2", reason="video needs OpenCV (the video extra)")
    _, style = plate
    (tmp_path / "shot").mkdir()
    alpha = _wide_plate(tmp_path / "shot" / "plate.1001.exr")
    monkeypatch.chdir(tmp_path)
    square = ["--size", "16x16", *TINY[2:]]
    if command == "render":
        arguments = ["render", "shot/plate.1001.exr", "-s", str(style), "-o", "out/styled.1001.exr", *square]
    elif command == "video":
        arguments = ["video", "shot/plate.####.exr", "-s", str(style), "-o", "out/styled.####.exr", *square]
    else:
        arguments = ["batch", "--glob", "shot/plate.####.exr", "-s", str(style), "-o", "out/styled.####.exr",
                     *square[:-1]]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    out = read_exr(tmp_path / "out" / "styled.1001.exr", max_pixels=10**6)
    assert out.rgb.shape == (16, 16, 3)
    assert (out.data_window, out.display_window) == (((0, 0), (15, 15)), ((0, 0), (15, 15)))
    kept = torch.from_numpy(np.ascontiguousarray(alpha[:, 10:30]))[None, None]
    expected = torch.nn.functional.interpolate(kept, size=(16, 16), mode="bicubic", align_corners=False,
                                               antialias=True)[0, 0].numpy()
    np.testing.assert_allclose(out.alpha, expected, atol=1e-5)
    brightest = np.unravel_index(np.argmax(out.rgb.max(axis=-1)), (16, 16))
    assert brightest == (0, 0) and out.rgb[0, 0].min() > 1000.0  # the kept light, at the kept part's corner
    assert out.rgb[8:, 8:].max() < 1000.0  # the light that was cut away is not painted back
