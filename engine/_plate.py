"""Plates: scene-referred EXR images shown to the network display-referred, and the render
taken back to the scene.

The network sees what VGG was trained on: display values in [0, 1], the plate through an OCIO
view (by default ACES 2.0 SDR on an sRGB display). The render comes back through the inverse
view, where display 1 is far above scene 1 (about 128 with ACES 2.0 SDR): where the style puts
its brightest paint the plate gets values above 1. What the display could not hold — highlights
beyond the view's range, colours outside its gamut, the view's own round-off — is kept as the
plate's residual, ``scene - inverse_view(display)``, and added back at the same place. So an
untouched plate comes back exactly (to half precision; tested), a highlight the style leaves
alone keeps its value, and a region the style repaints takes the repaint's inverse view.

Alpha is passed through untouched, the data and display windows and the compression kept. A
plate read for a ``--size`` frame of another aspect knows the part of it the render covers
(``frame_crop``, the cut ``crop_to_frame`` makes of the picture): alpha and the residual are cut
the same way before they are resized to the output, so they stay on the pixels they belong to,
and the windows are cut and scaled with them (``_windows``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._colorspace import ColorPipeline, color_pipeline
from ._exr import ExrImage, Window, encode_exr, read_exr
from ._values import frame_crop

__all__ = ["Plate", "encode_display_exr", "read_plate"]


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W[, C]) float array at (height, width): bicubic, antialiased, never clamped."""
    if array.shape[:2] == (height, width):
        return array
    planar = torch.from_numpy(np.ascontiguousarray(array.reshape(*array.shape[:2], -1))).permute(2, 0, 1)[None]
    resized = F.interpolate(planar, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).numpy().reshape(height, width, *array.shape[2:])


#: One axis of a window: (low, high), inclusive.
Span = tuple[int, int]


def _axis(data: Span, shown: Span, kept: slice, size: int) -> tuple[Span, Span]:
    """One axis of the (data, display) windows, (low, high) inclusive, after the render kept
    ``kept`` of the data window's pixels and resized them to ``size``.

    The choice: a cut of the picture is a cut of the frame. The display window is cut by the same
    lines as the data (a 1920x1080 plate rendered at --size 1080x1080 is a 1080x1080 frame, as the
    user asked, not its old frame with bars), and both move so that the display window keeps its
    corner where it was (a frame at (0, 0) stays there); the data keeps its place in that frame.
    Then both scale about the origin, as a resize alone always did. Where the kept pixels lie
    outside the display window (data all in the overscan) the display window is left whole.
    """
    (d0, d1), (s0, s1) = data, shown
    if (kept.start, kept.stop) != (0, d1 - d0 + 1):
        k0, k1 = d0 + kept.start, d0 + kept.stop - 1
        shift = 0
        if max(s0, k0) <= min(s1, k1):
            c0, c1 = max(s0, k0), min(s1, k1)
            shift, s1 = c0 - s0, s0 + c1 - c0
        d0, d1 = k0 - shift, k1 - shift
    scale = size / (d1 - d0 + 1)
    start = round(d0 * scale)  # the data window has the output's size exactly
    return (start, start + size - 1), (round(s0 * scale), round((s1 + 1) * scale) - 1)


def _windows(exr: ExrImage, crop: tuple[slice, slice], height: int, width: int) -> tuple[Window, Window]:
    """The plate's (data, display) windows for an output of ``height`` x ``width`` made from
    ``crop`` (rows, columns) of its pixels: see ``_axis``."""
    ((dx0, dy0), (dx1, dy1)), ((sx0, sy0), (sx1, sy1)) = exr.data_window, exr.display_window
    (x_data, x_shown), (y_data, y_shown) = (_axis((dx0, dx1), (sx0, sx1), crop[1], width),
                                            _axis((dy0, dy1), (sy0, sy1), crop[0], height))
    return ((x_data[0], y_data[0]), (x_data[1], y_data[1])), ((x_shown[0], y_shown[0]), (x_shown[1], y_shown[1]))


@dataclass(frozen=True)
class Plate:
    """A scene-referred image and how it is shown: ``exr`` (pixels and header), ``pipeline``
    (colour space and view), ``display`` (3, H, W) float32 in [0, 1] (what renders) and
    ``residual`` (H, W, 3) float64, what the display could not hold, all of the plate; ``crop``
    (rows, columns) the part of it a render covers (``frame_crop``; None: all of it)."""

    path: Path
    exr: ExrImage
    pipeline: ColorPipeline
    display: torch.Tensor
    residual: np.ndarray
    crop: tuple[slice, slice] | None = None

    @property
    def _crop(self) -> tuple[slice, slice]:
        return self.crop or (slice(0, self.exr.height), slice(0, self.exr.width))

    def restore(self, image: torch.Tensor) -> np.ndarray:
        """A render (3, h, w) in [0, 1] back in the plate's colour space: (h, w, 3) float64, the
        inverse view of the render plus the plate's residual (cut as the render was, resized to
        h x w if need be)."""
        height, width = image.shape[-2:]
        display = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
        residual = _resize(self.residual[self._crop], height, width)
        return self.pipeline.from_display(display).astype(np.float64) + residual

    def encode(self, image: torch.Tensor, *, colorspace: str | None = None, pixel_type: str | None = None,
               attributes: dict[str, str] | None = None) -> bytes:
        """An EXR of the render as the plate was: its colour space (or ``colorspace``), pixel
        type (or ``pixel_type``), compression, alpha, windows (cut and scaled as the render was) and
        string attributes, with ``attributes`` added."""
        height, width = image.shape[-2:]
        scene = self.pipeline.convert(self.restore(image).astype(np.float32), colorspace or self.pipeline.colorspace)
        alpha = _resize(self.exr.alpha[self._crop], height, width) if self.exr.alpha is not None else None
        data, shown = _windows(self.exr, self._crop, height, width)
        return encode_exr(scene, alpha, pixel_type=pixel_type or self.exr.pixel_type,
                          compression=self.exr.compression, data_window=data, display_window=shown,
                          attributes={**self.exr.attributes, **(attributes or {})})


def read_plate(path: str | os.PathLike, *, colorspace: str | None = None, view: str | None = None,
               max_pixels: int, size: int | tuple[int, int] | None = None) -> Plate:
    """Read an EXR plate in ``colorspace`` (default: the OCIO config's scene_linear) and show it
    through ``view`` (see ``color_pipeline``), for a render at ``size`` (the config's
    ``pyramid.size``: a WxH frame of another aspect covers only part of the plate, and its alpha
    and residual are cut to that part; ``display`` is always all of it, cut by the render)."""
    path = Path(path)
    exr = read_exr(path, max_pixels=max_pixels)
    pipeline = color_pipeline(colorspace, view)
    display = np.clip(pipeline.to_display(exr.rgb), 0.0, 1.0)
    residual = exr.rgb.astype(np.float64) - pipeline.from_display(display)
    tensor = torch.from_numpy(np.ascontiguousarray(display)).permute(2, 0, 1).contiguous()
    crop = frame_crop(exr.height, exr.width, size) if size is not None else None
    return Plate(path, exr, pipeline, tensor, residual, crop)


def encode_display_exr(image: torch.Tensor, *, colorspace: str | None = None, view: str | None = None,
                       pixel_type: str = "half", attributes: dict[str, str] | None = None) -> bytes:
    """An EXR of a display-referred image (3, H, W) in [0, 1] with no plate behind it: the
    inverse view into ``colorspace`` (default: the config's scene_linear)."""
    pipeline = color_pipeline(colorspace, view)
    display = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
    return encode_exr(pipeline.from_display(display), pixel_type=pixel_type, attributes=attributes)
