"""OpenEXR files through the Academy Software Foundation's bindings (``import OpenEXR``, the
``exr`` extra): pixels as float32 arrays, and the header facts a compositor expects back — half
or float, the compression, the data window (where the pixels are) and the display window (the
frame they belong to), alpha — plus the render's parameters as a string attribute.

Pure arrays and bytes: colour spaces are ``_colorspace``'s, atomic writes ``_image``'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ImageError
from ._extras import require_extra

__all__ = ["EXR_PIXEL_TYPES", "ExrImage", "encode_exr", "read_exr", "read_exr_metadata"]

#: Pixel type name -> numpy dtype, as EXR stores them.
EXR_PIXEL_TYPES = {"half": np.float16, "float": np.float32}

#: A window: ((x_min, y_min), (x_max, y_max)), inclusive, as EXR headers give it.
Window = tuple[tuple[int, int], tuple[int, int]]


def _openexr() -> Any:
    return require_extra("OpenEXR", extra="exr", package="OpenEXR (the openexr package)", purpose="EXR files")


@dataclass(frozen=True)
class ExrImage:
    """An EXR file's first part: ``rgb`` (H, W, 3) float32 over the data window, ``alpha``
    (H, W) float32 or None, and what a rewrite keeps: ``pixel_type`` ("half" or "float"), the
    ``compression``'s name (ZIP_COMPRESSION, ...), both windows and the other string
    ``attributes``."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    pixel_type: str
    compression: str
    data_window: Window
    display_window: Window
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _window(value: Any) -> Window:
    low, high = value
    return (int(low[0]), int(low[1])), (int(high[0]), int(high[1]))


def _open(path: Path, **options: Any) -> Any:
    exr = _openexr()
    if not path.is_file():
        raise ImageError(path, "no such file" if not path.exists() else "is not a file")
    try:
        return exr.File(str(path), **options)
    except Exception as error:  # the bindings raise RuntimeError, or their own types, for a bad file
        raise ImageError(path, f"not an EXR file OpenEXR can read ({error})") from None


def read_exr(path: str | os.PathLike, *, max_pixels: int) -> ExrImage:
    """Read an RGB or RGBA EXR (scanline or tiled, half, float or uint channels). ImageError
    names the file and the problem: unreadable, too many pixels, no R, G and B channels."""
    path = Path(path)
    header = _open(path, header_only=True).header()
    (x0, y0), (x1, y1) = _window(header["dataWindow"])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width <= 0 or height <= 0:
        raise ImageError(path, f"empty data window ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(path, f"{width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,}")
    with _open(path, separate_channels=True) as file:
        channels = {name: channel.pixels for name, channel in file.channels().items()}
    missing = [name for name in "RGB" if name not in channels]
    if missing:
        raise ImageError(path, f"has channels {', '.join(sorted(channels)) or '(none)'}; an RGB or RGBA image "
                               f"needs R, G and B (missing {', '.join(missing)})")
    rgb = np.stack([channels[name].astype(np.float32) for name in "RGB"], axis=-1)
    alpha = channels["A"].astype(np.float32) if "A" in channels else None
    kinds = {channels[name].dtype for name in "RGB"}
    pixel_type = "half" if kinds == {np.dtype(np.float16)} else "float"
    attributes = {key: value for key, value in header.items() if isinstance(value, str)}
    return ExrImage(rgb, alpha, pixel_type, header["compression"].name, _window(header["dataWindow"]),
                    _window(header["displayWindow"]), attributes)


def encode_exr(rgb: np.ndarray, alpha: np.ndarray | None = None, *, pixel_type: str = "half",
               compression: str = "ZIP_COMPRESSION", data_window: Window | None = None,
               display_window: Window | None = None, attributes: dict[str, str] | None = None) -> bytes:
    """The bytes of a scanline EXR holding ``rgb`` (H, W, 3) and ``alpha`` (H, W) as
    ``pixel_type``. The data window defaults to (0, 0)-(W-1, H-1) and must have the pixels'
    size; the display window defaults to the data window."""
    exr = _openexr()
    height, width = rgb.shape[:2]
    if data_window is None:
        data_window = ((0, 0), (width - 1, height - 1))
    (x0, y0), (x1, y1) = data_window
    if (x1 - x0 + 1, y1 - y0 + 1) != (width, height):
        raise ValueError(f"data window {data_window} is not {width}x{height}")
    dtype = EXR_PIXEL_TYPES[pixel_type]
    channels = {name: np.ascontiguousarray(rgb[:, :, i], dtype=dtype) for i, name in enumerate("RGB")}
    if alpha is not None:
        channels["A"] = np.ascontiguousarray(alpha, dtype=dtype)
    header: dict[str, Any] = {
        "compression": getattr(exr, compression), "type": exr.scanlineimage,
        "dataWindow": data_window, "displayWindow": display_window or data_window, **(attributes or {})}
    with tempfile.TemporaryDirectory(prefix="styleforge-exr-") as folder:
        target = Path(folder) / "image.exr"
        exr.File(header, channels).write(str(target))
        return target.read_bytes()


def read_exr_metadata(path: str | os.PathLike, key: str) -> dict | None:
    """The JSON object in the header's string attribute ``key``, or None."""
    text = _open(Path(path), header_only=True).header().get(key)
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
