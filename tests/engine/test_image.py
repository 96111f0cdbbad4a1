"""Image I/O: every input mode and format, every bad file, and atomic, metadata-carrying writes."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.engine import ImageError, load_image, read_metadata, resize_long_side, save_image

sys.path.insert(0, str(Path(__file__).parent))
from icc import SRGB_BLUE, SRGB_GREEN, SRGB_RED, rgb_profile  # noqa: E402

RED = (200, 30, 30)


def _solid(mode: str, color, size=(6, 4)) -> Image.Image:
    return Image.new(mode, size, color)


@pytest.mark.parametrize(
    ("name", "image", "expected"),
    [
        ("rgb.png", _solid("RGB", RED), RED),
        ("rgb.jpg", _solid("RGB", RED), RED),
        ("rgb.tif", _solid("RGB", RED), RED),
        ("rgb.webp", _solid("RGB", RED), RED),
        ("rgb.bmp", _solid("RGB", RED), RED),
        ("grey.png", _solid("L", 77), (77, 77, 77)),
        ("grey.jpg", _solid("L", 77), (77, 77, 77)),
        ("palette.png", _solid("RGB", RED).quantize(4), RED),
        ("bilevel.png", _solid("1", 1), (255, 255, 255)),
        # Transparent pixels are flattened onto white.
        ("rgba.png", _solid("RGBA", (200, 30, 30, 0)), (255, 255, 255)),
        ("rgba_opaque.webp", _solid("RGBA", (200, 30, 30, 255)), RED),
        ("grey_alpha.png", _solid("LA", (0, 128)), (127, 127, 127)),
        ("cmyk.jpg", _solid("CMYK", (0, 255, 255, 0)), (255, 0, 0)),
        ("cmyk.tif", _solid("CMYK", (0, 255, 255, 0)), (255, 0, 0)),
    ],
)
def test_modes_and_formats_decode_to_srgb(tmp_path, name, image, expected):
    path = tmp_path / name
    image.save(path)
    loaded = load_image(path)
    assert loaded.dtype == torch.float32
    assert loaded.shape == (3, 4, 6)
    tolerance = 6 / 255 if name.endswith((".jpg", ".webp")) else 1.5 / 255
    assert torch.allclose(loaded[:, 2, 3], torch.tensor(expected) / 255.0, atol=tolerance)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_greyscale_keeps_its_precision(tmp_path, suffix):
    values = np.array([[0, 257, 1000, 65535]], dtype=np.uint16)
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert torch.allclose(loaded[0, 0], torch.from_numpy(values[0] / 65535.0).float(), atol=1e-6)
    assert torch.equal(loaded[0], loaded[2])


def test_16_bit_rgb_png_is_read(tmp_path):
    """Pillow decodes 16-bit RGB PNGs at 8-bit precision; the values must still be right."""
    path = save_image(torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1).expand(3, 3, 5), tmp_path / "rgb16.png", bit_depth=16)
    loaded = load_image(path)
    assert loaded.shape == (3, 3, 5)
    assert torch.allclose(loaded[:, 1, 1], torch.tensor([0.2, 0.5, 0.9]), atol=1 / 255)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 4), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (3, 6, 4)
    # The top-left pixel moves to the top-right corner after a clockwise rotation.
    assert loaded[0, 0, 3] > 0.9 and loaded[0, 0, 0] < 0.1


def test_embedded_icc_profile_is_converted_to_srgb(tmp_path):
    swapped = rgb_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, name="red and blue swapped")
    path = tmp_path / "swapped.png"
    _solid("RGB", RED).save(path, icc_profile=swapped)
    loaded = load_image(path)
    # Device red means sRGB blue under this profile.
    assert loaded[2, 0, 0] > 0.7 and loaded[0, 0, 0] < 0.2

    faithful = rgb_profile(SRGB_RED, SRGB_GREEN, SRGB_BLUE)
    _solid("RGB", RED).save(tmp_path / "faithful.png", icc_profile=faithful)
    again = load_image(tmp_path / "faithful.png")
    assert torch.allclose(again[:, 0, 0], torch.tensor(RED) / 255.0, atol=0.03)


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(tmp_path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    return _written(tmp_path / f"cut.{fmt.lower()}", buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing.png", "no such file"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: _written(tmp / "empty.png", b""), "empty file"),
        (lambda tmp: _written(tmp / "notes.png", b"not pixels"), "not an image"),
        (lambda tmp: _truncated(tmp, "PNG"), "truncated or corrupt"),
        (lambda tmp: _truncated(tmp, "JPEG"), "truncated or corrupt"),
    ],
    ids=["missing", "directory", "empty", "not-an-image", "truncated-png", "truncated-jpeg"],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert reason in str(caught.value)
    assert str(path) in str(caught.value)


def test_corrupt_png_data_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), RED).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt"):
        load_image(path)


def test_zero_size_header_is_refused(tmp_path):
    # A PNG whose header claims 0x4 pixels (Pillow cannot write one, so build the header).
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path = tmp_path / "zero.png"
    path.write_bytes(png)
    with pytest.raises(ImageError, match=r"zero-size|not an image|corrupt"):
        load_image(path)


def test_pixel_limit_refuses_decompression_bombs(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80)).save(path)
    with pytest.raises(ImageError, match="8,000 pixels, more than the limit of 5,000"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=8000).shape == (3, 80, 100)


def _gradient(height=5, width=7) -> torch.Tensor:
    return torch.linspace(0, 1, 3 * height * width).reshape(3, height, width)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_save_round_trip_with_metadata(tmp_path, suffix):
    image = _gradient()
    path = save_image(image, tmp_path / f"out{suffix}", metadata={"style_weight": 30.0, "styles": ["a.jpg"]})
    loaded = load_image(path)
    assert loaded.shape == image.shape
    assert (loaded - image).abs().max() < (0.05 if suffix == ".jpg" else 1 / 255)
    assert read_metadata(path) == {"style_weight": 30.0, "styles": ["a.jpg"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_16_bit_png_stores_16_bit_samples(tmp_path):
    image = _gradient(2, 3)
    path = save_image(image, tmp_path / "deep.png", bit_depth=16, metadata={"k": 1})
    data = path.read_bytes()
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, color_type) == (3, 2, 16, 2)
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4 : start])[0]
    raw = zlib.decompress(data[start + 4 : start + 4 + length])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(2, 1 + 3 * 6)
    samples = rows[:, 1:].copy().view(">u2").reshape(2, 3, 3).astype(np.float64) / 65535
    assert np.abs(samples - image.permute(1, 2, 0).double().numpy()).max() <= 0.5 / 65535 + 1e-12
    assert read_metadata(path) == {"k": 1}


def test_save_never_overwrites_without_permission(tmp_path):
    path = tmp_path / "mine.png"
    path.write_bytes(b"precious")
    with pytest.raises(ImageError, match="exists"):
        save_image(_gradient(), path)
    assert path.read_bytes() == b"precious"
    save_image(_gradient(), path, overwrite=True)
    assert load_image(path).shape == (3, 5, 7)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("out.gif", {}, "unsupported output format"),
        ("out.jpg", {"bit_depth": 16}, "bit depth"),
        ("missing/out.png", {}, "does not exist"),
    ],
)
def test_save_refuses_bad_targets(tmp_path, name, kwargs, message):
    with pytest.raises(ImageError, match=message):
        save_image(_gradient(), tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_nan_and_leaves_nothing(tmp_path):
    image = _gradient()
    image[0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        save_image(image, tmp_path / "broken.png")
    assert list(tmp_path.iterdir()) == []


def test_resize_long_side_keeps_aspect():
    assert resize_long_side(torch.rand(3, 300, 400), 100).shape == (3, 75, 100)
    assert resize_long_side(torch.rand(1, 3, 400, 300), 64).shape == (1, 3, 64, 48)


def test_metadata_json_survives_a_png_text_chunk_reader(tmp_path):
    path = save_image(_gradient(), tmp_path / "meta.png", metadata={"seed": 3})
    with Image.open(path) as image:
        assert json.loads(image.text["styleforge"]) == {"seed": 3}
