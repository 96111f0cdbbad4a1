"""Semantic maps as the user gives them: an image file, or a flat ``#rrggbb`` colour.

A style whose map is one flat colour is bound to that region of the output (the palette logic
of objectives._semantic); writing the colour instead of painting a one-colour file is the
convenience this module provides, for the command line, TOML files, manifests and the API alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ._errors import ConfigError
from ._image import DEFAULT_MAX_PIXELS, load_image
from ._values import is_color, parse_color  # without torch: the config reads colours too

__all__ = ["flat_map", "is_color", "load_style_maps", "parse_color"]


def flat_map(color: str, like: torch.Tensor, *, field: str = "style_map") -> torch.Tensor:
    """A (3, H, W) map of one colour, the size of ``like`` (..., H, W)."""
    rgb = torch.tensor(parse_color(color, field=field), dtype=torch.float32)
    return rgb[:, None, None].expand(3, *like.shape[-2:]).clone()


def load_style_maps(specs: Sequence[str | os.PathLike], styles: Sequence[torch.Tensor], *,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> list[torch.Tensor]:
    """One map per style image: each spec a file, or a flat colour sized like its style."""
    if len(specs) != len(styles):
        raise ConfigError(f"{len(specs)} maps for {len(styles)} style images", field="style_map")
    return [flat_map(os.fspath(spec), style) if is_color(spec) else load_image(spec, max_pixels=max_pixels)
            for spec, style in zip(specs, styles)]
