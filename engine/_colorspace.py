"""Colour spaces through OpenColorIO (``import PyOpenColorIO``, the ``exr`` extra).

The config is ``$OCIO`` when set, else OCIO's built-in CG config (``ocio://cg-config-latest``:
ACES 2.0 views, ACEScg as the scene-linear role). A plate is shown to the network through a
display and view (the config's default: sRGB - Display, ACES 2.0 - SDR 100 nits), since VGG was
trained on display-referred photos; the inverse view maps a render back to the scene. Names are
checked against the config, with the valid list and a "did you mean".
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import ConfigError, check_choice
from ._extras import require_extra

__all__ = ["BUILTIN_CONFIG", "ColorPipeline", "color_pipeline"]

#: OCIO's built-in config, used when $OCIO is not set.
BUILTIN_CONFIG = "ocio://cg-config-latest"


def _ocio() -> Any:
    return require_extra("PyOpenColorIO", extra="exr", package="opencolorio", purpose="colour management")


@functools.lru_cache(maxsize=4)
def _config(source: str) -> Any:
    ocio = _ocio()
    try:
        return ocio.Config.CreateFromFile(source)
    except ocio.Exception as error:
        raise ConfigError(f"the OCIO config {source} ($OCIO, or the built-in one) cannot be read ({error})") from None


def _apply(processor: Any, rgb: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(rgb, dtype=np.float32).copy()
    processor.applyRGB(out.reshape(-1, 3))
    return out


@dataclass(frozen=True)
class ColorPipeline:
    """One plate's conversions: scene (``colorspace``) <-> display (``display``, ``view``),
    and scene -> another colour space. Arrays are (..., 3) float32."""

    source: str
    name: str
    colorspace: str
    display: str
    view: str

    def describe(self) -> dict[str, str]:
        """What an output's metadata records of the conversion."""
        return {"ocio_config": self.name, "colorspace": self.colorspace, "display": self.display, "view": self.view}

    def _processor(self, transform: Any) -> Any:
        return _config(self.source).getProcessor(transform).getDefaultCPUProcessor()

    def _view(self, direction: Any) -> Any:
        ocio = _ocio()
        return self._processor(ocio.DisplayViewTransform(src=self.colorspace, display=self.display, view=self.view,
                                                         direction=direction))

    def to_display(self, rgb: np.ndarray) -> np.ndarray:
        """Scene values -> the view's display values (not clamped)."""
        return _apply(self._view(_ocio().TRANSFORM_DIR_FORWARD), rgb)

    def from_display(self, rgb: np.ndarray) -> np.ndarray:
        """Display values -> scene values: the inverse view (display 1 is far above scene 1)."""
        return _apply(self._view(_ocio().TRANSFORM_DIR_INVERSE), rgb)

    def convert(self, rgb: np.ndarray, target: str) -> np.ndarray:
        """Scene values in ``colorspace`` -> ``target`` (the same array when they are one space)."""
        if target == self.colorspace:
            return rgb
        check_choice("output_colorspace", target, _colorspaces(self.source))
        ocio = _ocio()
        return _apply(self._processor(ocio.ColorSpaceTransform(src=self.colorspace, dst=target)), rgb)


def _colorspaces(source: str) -> list[str]:
    return [space.getName() for space in _config(source).getColorSpaces()]


def color_pipeline(colorspace: str | None = None, view: str | None = None, *,
                   output: str | None = None) -> ColorPipeline:
    """The conversions of a plate in ``colorspace`` (default: the config's scene_linear role)
    shown through ``view``, "DISPLAY/VIEW" or a view of the default display (default: the
    config's default view). ConfigError lists the valid names for an unknown one (``output``
    too: the colour space outputs will be converted to, checked before any work)."""
    source = os.environ.get("OCIO") or BUILTIN_CONFIG
    config = _config(source)
    if output is not None:
        check_choice("output_colorspace", output, _colorspaces(source))
    if colorspace is None:
        colorspace = config.getRoleColorSpace("scene_linear") or config.getColorSpaceNames()[0]
    else:
        check_choice("input_colorspace", colorspace, _colorspaces(source))
    display = config.getDefaultDisplay()
    if view is not None and "/" in view:
        display, view = view.split("/", 1)
        check_choice("view", display, list(config.getDisplays()))
    if view is None:
        view = config.getDefaultView(display)
    else:
        check_choice("view", view, list(config.getViews(display)))
    return ColorPipeline(source, config.getName(), colorspace, display, view)
