"""EXR plates: real files written and read back (half and float, RGB and RGBA, data and display
windows, compression), colour-managed through OCIO's built-in ACES config."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from styleforge.engine import (
    ConfigError,
    ImageError,
    MissingExtraError,
    RenderConfig,
    load_image,
    read_metadata,
    read_plate,
    save_image,
)
from styleforge.engine._colorspace import color_pipeline
from styleforge.engine._exr import encode_exr, read_exr

OpenEXR = pytest.importorskip("OpenEXR", reason="the exr extra (OpenEXR) is not installed")
pytest.importorskip("PyOpenColorIO", reason="the exr extra (opencolorio) is not installed")


@pytest.fixture(autouse=True)
def _builtin_ocio(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


def _plate_pixels(height=12, width=16, seed=0) -> np.ndarray:
    """Scene-linear values as a plate has them: mid-greys, a highlight far above 1, a colour
    outside the display's gamut (a negative component)."""
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0.0, 1.5, size=(height, width, 3)).astype(np.float32)
    rgb[0, 0] = (40.0, 35.0, 30.0)     # a light source
    rgb[1, 1] = (500.0, 500.0, 500.0)  # beyond the view's range: display 1 is about 128
    rgb[2, 2] = (-0.02, 0.3, 0.6)      # out of gamut
    return rgb


def _write(path, rgb, alpha=None, **options):
    path.write_bytes(encode_exr(rgb, alpha, **options))
    return path


@pytest.mark.parametrize("pixel_type", ["half", "float"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_exr_round_trips_pixels_alpha_windows_and_compression(tmp_path, pixel_type, with_alpha):
    rgb = _plate_pixels()
    alpha = np.linspace(0, 1, rgb.shape[0] * rgb.shape[1], dtype=np.float32).reshape(rgb.shape[:2]) \
        if with_alpha else None
    windows = dict(data_window=((100, 50), (115, 61)), display_window=((0, 0), (199, 99)))
    path = _write(tmp_path / "plate.exr", rgb, alpha, pixel_type=pixel_type, compression="PIZ_COMPRESSION",
                  **windows)
    exr = read_exr(path, max_pixels=10**6)
    dtype = np.float16 if pixel_type == "half" else np.float32
    assert exr.pixel_type == pixel_type and exr.compression == "PIZ_COMPRESSION"
    assert (exr.data_window, exr.display_window) == (windows["data_window"], windows["display_window"])
    np.testing.assert_array_equal(exr.rgb, rgb.astype(dtype).astype(np.float32))
    if with_alpha:
        np.testing.assert_array_equal(exr.alpha, alpha.astype(dtype).astype(np.float32))
    else:
        assert exr.alpha is None


@pytest.mark.parametrize("pixel_type", ["half", "float"])
def test_an_untouched_plate_comes_back_exactly_through_the_colour_conversions(tmp_path, pixel_type):
    """Scene -> display (what the network sees) -> scene is exact to the file's precision, even
    for a highlight beyond the view's range and a colour outside its gamut."""
    rgb = _plate_pixels()
    alpha = np.full(rgb.shape[:2], 0.25, dtype=np.float32)
    windows = dict(data_window=((4, 2), (19, 13)), display_window=((0, 0), (31, 15)))
    source = _write(tmp_path / "plate.exr", rgb, alpha, pixel_type=pixel_type, compression="ZIPS_COMPRESSION",
                    **windows)
    plate = read_plate(source, max_pixels=10**6)
    assert plate.display.shape == (3, 12, 16) and 0 <= plate.display.min() and plate.display.max() <= 1
    target = save_image(plate.display, tmp_path / "out.exr", plate=plate, metadata={"size": 16})
    back = read_exr(target, max_pixels=10**6)
    original = read_exr(source, max_pixels=10**6)
    np.testing.assert_array_equal(back.rgb, original.rgb)
    np.testing.assert_array_equal(back.alpha, original.alpha)
    assert (back.pixel_type, back.compression, back.data_window, back.display_window) == \
        (pixel_type, "ZIPS_COMPRESSION", windows["data_window"], windows["display_window"])
    assert read_metadata(target) == {"size": 16}


def test_the_network_sees_the_view_and_its_inverse_gives_values_above_one(tmp_path):
    pipeline = color_pipeline()
    assert pipeline.colorspace == "ACEScg" and pipeline.display == "sRGB - Display"
    grey = pipeline.to_display(np.array([[0.18, 0.18, 0.18]], dtype=np.float32))
    assert 0.3 < grey[0, 0] < 0.4  # mid-grey shown as a display mid-tone, not 0.18
    # A render that paints near-white where the plate was grey: the scene value is far above 1.
    plate = read_plate(_write(tmp_path / "grey.exr", np.full((4, 4, 3), 0.18, np.float32)), max_pixels=100)
    painted = plate.display.clone()
    painted[:, :2] = 0.98
    restored = plate.restore(painted)
    assert restored[:2].min() > 10.0
    np.testing.assert_allclose(restored[2:], float(np.float16(0.18)), rtol=1e-6)  # the file is half


def test_the_output_colour_space_and_another_size(tmp_path):
    rgb = np.full((8, 8, 3), 0.5, np.float32)
    windows = dict(data_window=((8, 8), (15, 15)), display_window=((0, 0), (31, 31)))
    plate = read_plate(_write(tmp_path / "plate.exr", rgb, np.ones((8, 8), np.float32), **windows), max_pixels=100)
    path = save_image(torch.nn.functional.interpolate(plate.display[None], size=(4, 4))[0], tmp_path / "half.exr",
                      plate=plate, colorspace="Linear Rec.709 (sRGB)", bit_depth=32)
    out = read_exr(path, max_pixels=100)
    assert out.pixel_type == "float" and out.rgb.shape == (4, 4, 3) and out.alpha.shape == (4, 4)
    assert (out.data_window, out.display_window) == (((4, 4), (7, 7)), ((0, 0), (15, 15)))
    expected = color_pipeline().convert(np.full((1, 3), 0.5, np.float32), "Linear Rec.709 (sRGB)")
    np.testing.assert_allclose(out.rgb[0, 0], expected[0], rtol=1e-3)


@pytest.mark.parametrize(("size", "rows", "columns"), [((20, 20), slice(0, 20), slice(10, 30)),
                                                     ((40, 10), slice(5, 15), slice(0, 40))])
def test_a_frame_of_another_aspect_gives_back_the_part_of_the_plate_it_covers_exactly(tmp_path, size, rows, columns):
    """A plate read for a --size frame: its untouched centre, rendered at its own pixels, comes
    back exactly as that part of the plate (values, alpha), in a frame of that size."""
    from styleforge.engine.rendering import crop_to_frame

    rgb = _plate_pixels(height=20, width=40)
    alpha = np.linspace(0, 1, 800, dtype=np.float32).reshape(20, 40)
    source = _write(tmp_path / "plate.exr", rgb, alpha, pixel_type="float")
    plate = read_plate(source, max_pixels=10**6, size=size)
    picture = crop_to_frame(plate.display, RenderConfig(size=size))
    assert picture.shape[-2:] == (rows.stop - rows.start, columns.stop - columns.start)
    out = read_exr(save_image(picture, tmp_path / "out.exr", plate=plate), max_pixels=10**6)
    np.testing.assert_array_equal(out.rgb, rgb[rows, columns])
    np.testing.assert_array_equal(out.alpha, alpha[rows, columns])
    window = ((0, 0), (columns.stop - columns.start - 1, rows.stop - rows.start - 1))
    assert (out.data_window, out.display_window) == (window, window)


def test_a_frame_of_another_aspect_cuts_the_windows_by_the_same_lines_and_keeps_the_frames_corner(tmp_path):
    """A 40x20 data window inside a 200x100 display window, at --size 16x16: the centre 20
    columns are kept and scaled by 0.8. The display window is cut by the same vertical lines (20
    wide, all 100 high), moved so its corner stays at (0, 0), and both scale; the alpha and the
    residual are the kept columns, resized."""
    rgb = np.full((20, 40, 3), 0.18, np.float32)
    rgb[0, 10] = 5000.0  # a light at the kept part's corner
    alpha = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))
    source = _write(tmp_path / "plate.exr", rgb, alpha, pixel_type="float", data_window=((100, 40), (139, 59)),
                    display_window=((0, 0), (199, 99)))
    plate = read_plate(source, max_pixels=10**6, size=(16, 16))
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))

    def resized(array):
        planar = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).reshape(20, 20, -1).permute(2, 0, 1)
        return torch.nn.functional.interpolate(planar[None], size=(16, 16), mode="bicubic", align_corners=False,
                                               antialias=True)[0].permute(1, 2, 0).numpy().squeeze()

    expected = plate.pipeline.from_display(image.permute(1, 2, 0).numpy()) + resized(plate.residual[:, 10:30])
    np.testing.assert_allclose(plate.restore(image), expected, rtol=1e-6)
    out = read_exr(save_image(image, tmp_path / "out.exr", plate=plate, bit_depth=32), max_pixels=10**6)
    assert (out.data_window, out.display_window) == (((0, 32), (15, 47)), ((0, 0), (15, 79)))
    np.testing.assert_allclose(out.alpha, resized(alpha[:, 10:30]), atol=1e-6)
    assert np.unravel_index(np.argmax(out.rgb.max(axis=-1)), (16, 16)) == (0, 0)


def test_a_display_image_written_as_exr_reads_back_as_itself(tmp_path):
    image = torch.rand(3, 5, 7)
    path = save_image(image, tmp_path / "render.exr", bit_depth=32, metadata={"a": 1})
    assert torch.allclose(load_image(path), image, atol=2e-3)
    assert read_metadata(path) == {"a": 1}


def test_bad_files_and_names_are_one_clear_error(tmp_path):
    (tmp_path / "fake.exr").write_bytes(b"not an exr")
    with pytest.raises(ImageError, match="not an EXR file"):
        load_image(tmp_path / "fake.exr")
    depth = tmp_path / "depth.exr"
    depth.write_bytes(encode_exr(np.zeros((2, 2, 3), np.float32)))
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(depth, max_pixels=3)
    with pytest.raises(ConfigError, match="did you mean 'ACEScg'"):
        load_image(depth, colorspace="ACEScgg")
    with pytest.raises(ConfigError, match="view"):
        load_image(depth, view="sRGB - Display/No such view")
    # The options are plain names in the config: checked against OCIO only when a plate is read.
    assert RenderConfig(input_colorspace="ACEScct").color_management.input_colorspace == "ACEScct"
    assert "input_colorspace" not in RenderConfig().hashed()  # earlier outputs keep their hashes


def test_missing_extra_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'styleforge\[exr\]'"):
        read_exr(tmp_path / "x.exr", max_pixels=10)


def test_the_header_attribute_holds_json(tmp_path):
    path = save_image(torch.rand(3, 2, 2), tmp_path / "m.exr", metadata={"config": {"size": 2}})
    with OpenEXR.File(str(path), header_only=True) as file:
        assert json.loads(file.header()["styleforge"]) == {"config": {"size": 2}}
