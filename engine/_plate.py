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

Alpha is passed through untouched, the data and display windows and the compression kept; at
another output size (``--size``) alpha and the residual are resized and the windows scaled.
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

__all__ = ["Plate", "encode_display_exr", "read_plate"]


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W[, C]) float array at (height, width): bicubic, antialiased, never clamped."""
    if array.shape[:2] == (height, width):
        return array
    planar = torch.from_numpy(np.ascontiguousarray(array.reshape(*array.shape[:2], -1))).permute(2, 0, 1)[None]
    resized = F.interpolate(planar, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].permute(1, 2, 0).numpy().reshape(height, width, *array.shape[2:])


def _scale_window(window: Window, sx: float, sy: float) -> Window:
    (x0, y0), (x1, y1) = window
    return (round(x0 * sx), round(y0 * sy)), (round((x1 + 1) * sx) - 1, round((y1 + 1) * sy) - 1)


@dataclass(frozen=True)
class Plate:
    """A scene-referred image and how it is shown: ``exr`` (pixels and header), ``pipeline``
    (colour space and view), ``display`` (3, H, W) float32 in [0, 1] (what renders) and
    ``residual`` (H, W, 3) float64, what the display could not hold."""

    path: Path
    exr: ExrImage
    pipeline: ColorPipeline
    display: torch.Tensor
    residual: np.ndarray

    def restore(self, image: torch.Tensor) -> np.ndarray:
        """A render (3, h, w) in [0, 1] back in the plate's colour space: (h, w, 3) float64, the
        inverse view of the render plus the plate's residual (resized to h x w if need be)."""
        height, width = image.shape[-2:]
        display = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
        return self.pipeline.from_display(display).astype(np.float64) + _resize(self.residual, height, width)

    def encode(self, image: torch.Tensor, *, colorspace: str | None = None, pixel_type: str | None = None,
               attributes: dict[str, str] | None = None) -> bytes:
        """An EXR of the render as the plate was: its colour space (or ``colorspace``), pixel
        type (or ``pixel_type``), compression, alpha, windows (scaled to another size) and string
        attributes, with ``attributes`` added."""
        height, width = image.shape[-2:]
        scene = self.pipeline.convert(self.restore(image).astype(np.float32), colorspace or self.pipeline.colorspace)
        alpha = self.exr.alpha
        sx, sy = width / self.exr.width, height / self.exr.height
        data, shown = self.exr.data_window, self.exr.display_window
        if (sx, sy) != (1.0, 1.0):
            alpha = _resize(alpha, height, width) if alpha is not None else None
            (x0, y0), _ = _scale_window(data, sx, sy)
            data, shown = ((x0, y0), (x0 + width - 1, y0 + height - 1)), _scale_window(shown, sx, sy)
        return encode_exr(scene, alpha, pixel_type=pixel_type or self.exr.pixel_type, compression=self.exr.compression,
                          data_window=data, display_window=shown, attributes={**self.exr.attributes, **(attributes or {})})


def read_plate(path: str | os.PathLike, *, colorspace: str | None = None, view: str | None = None,
               max_pixels: int) -> Plate:
    """Read an EXR plate in ``colorspace`` (default: the OCIO config's scene_linear) and show it
    through ``view`` (see ``color_pipeline``)."""
    path = Path(path)
    exr = read_exr(path, max_pixels=max_pixels)
    pipeline = color_pipeline(colorspace, view)
    display = np.clip(pipeline.to_display(exr.rgb), 0.0, 1.0)
    residual = exr.rgb.astype(np.float64) - pipeline.from_display(display)
    tensor = torch.from_numpy(np.ascontiguousarray(display)).permute(2, 0, 1).contiguous()
    return Plate(path, exr, pipeline, tensor, residual)


def encode_display_exr(image: torch.Tensor, *, colorspace: str | None = None, view: str | None = None,
                       pixel_type: str = "half", attributes: dict[str, str] | None = None) -> bytes:
    """An EXR of a display-referred image (3, H, W) in [0, 1] with no plate behind it: the
    inverse view into ``colorspace`` (default: the config's scene_linear)."""
    pipeline = color_pipeline(colorspace, view)
    display = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
    return encode_exr(pipeline.from_display(display), pixel_type=pixel_type, attributes=attributes)
