"""Semantic maps as the user gives them: an image file, or a flat ``#rrggbb`` colour.

A style whose map is one flat colour is bound to that region of the output (the palette logic
of objectives._semantic); writing the colour instead of painting a one-colour file is the
convenience this module provides, for the command line, TOML files, manifests and the API alike.
A map file's alpha says only where something is painted (``load_map``): a semi-transparent
brush keeps its colour, it is not blended with white into one the user never painted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch

from ._errors import ConfigError
from ._image import DEFAULT_MAX_PIXELS, load_image
from ._values import is_color, parse_color  # without torch: the config reads colours too

__all__ = ["check_map_spec", "flat_map", "is_color", "load_map", "load_style_maps", "parse_color"]


def check_map_spec(spec: str | os.PathLike, *, field: str = "style_map") -> None:
    """A spec written as a colour (``#...``) that is not ``#rrggbb`` nor an existing file is a
    ConfigError saying so, not "no such file": ``#f00`` is refused, with its ``#ff0000`` spelt out
    (one way to write a colour keeps the parameters' hash one)."""
    text = os.fspath(spec)
    if text.startswith("#") and not is_color(text) and not os.path.exists(text):
        short = re.fullmatch(r"#([0-9a-fA-F])([0-9a-fA-F])([0-9a-fA-F])", text)
        hint = f" (write #{''.join(c * 2 for c in short.groups())})" if short is not None else ""
        raise ConfigError(f"{text!r} is not a #rrggbb colour{hint}", field=field)


def load_map(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A semantic map file (3, H, W): its alpha says only where something is painted (see
    ``load_image``'s ``alpha="map"``)."""
    return load_image(path, max_pixels=max_pixels, alpha="map")


def flat_map(color: str, like: torch.Tensor, *, field: str = "style_map") -> torch.Tensor:
    """A (3, H, W) map of one colour, the size of ``like`` (..., H, W)."""
    rgb = torch.tensor(parse_color(color, field=field), dtype=torch.float32)
    return rgb[:, None, None].expand(3, *like.shape[-2:]).clone()


def load_style_maps(specs: Sequence[str | os.PathLike], styles: Sequence[torch.Tensor], *,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> list[torch.Tensor]:
    """One map per style image: each spec a file, or a flat colour sized like its style."""
    if len(specs) != len(styles):
        raise ConfigError(f"{len(specs)} maps for {len(styles)} style images", field="style_map")
    for spec in specs:
        check_map_spec(spec)
    return [flat_map(os.fspath(spec), style) if is_color(spec) else load_map(spec, max_pixels=max_pixels)
            for spec, style in zip(specs, styles)]
