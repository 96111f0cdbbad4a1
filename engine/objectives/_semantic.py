"""neural-doodle's semantic maps: flat-colour images naming regions, shared by every method
that confines a style to regions (the MRF doodles today).

A map becomes one channel per palette colour (one-hot by nearest colour); the content's map and
the styles' maps must use the same palette.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._errors import ConfigError

__all__ = ["REGION_SHARE", "semantic_labels", "semantic_palette", "shared_palette", "snapping"]

#: A colour counts as a region when it covers this share of a map (edges are antialiased blends).
REGION_SHARE = 0.005
#: Colours closer than this (per channel, in [0, 1]) name the same region (JPEG-saved maps drift).
_TOLERANCE = 12 / 255


def semantic_palette(semantic_map: torch.Tensor, *, what: str) -> torch.Tensor:
    """The region colours of a (3, H, W) map in [0, 1]: (K, 3), colours covering >= 0.5% that
    are neither a drift of a larger region's colour (within the tolerance: JPEG) nor a blend of
    two larger regions' colours (within the tolerance of the line between them: an antialiased
    or JPEG border, which in a small map covers 0.5% too). A region painted in the exact mix of
    two others is read as their border: give it a colour of its own."""
    pixels = (semantic_map.reshape(3, -1).T * 255).round().to(torch.int64)
    colours, counts = torch.unique(pixels, dim=0, return_counts=True)
    keep = counts >= REGION_SHARE * pixels.shape[0]
    candidates = colours[keep].double() / 255
    order = torch.argsort(counts[keep], descending=True, stable=True)
    regions: list[torch.Tensor] = []
    for colour in candidates[order]:
        if not regions or not (_near_any(colour, regions) or _on_a_blend(colour, regions)):
            regions.append(colour)
    if not regions:
        raise ConfigError("no flat colour regions found", field=what)
    return (torch.stack(regions) * 255).round().float() / 255


def _near_any(colour: torch.Tensor, regions: list[torch.Tensor]) -> bool:
    return bool((torch.stack(regions) - colour).abs().max(dim=1).values.min() <= _TOLERANCE)


def _on_a_blend(colour: torch.Tensor, regions: list[torch.Tensor]) -> bool:
    """Whether ``colour`` lies between two of ``regions`` (a mix of them, within the tolerance)."""
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            direction = b - a
            t = float((colour - a) @ direction / (direction @ direction))
            if 0.0 < t < 1.0 and float((colour - (a + t * direction)).abs().max()) <= _TOLERANCE:
                return True
    return False


def snapping(semantic_map: torch.Tensor, palette: torch.Tensor) -> tuple[int, int, float]:
    """How a map's pixels were read against ``palette`` (K, 3): (pixels more than 2/255 from
    every palette colour — a map and the palette drawn from the other map may differ by a
    rounding —, those further than the tolerance from every one — border blends —, the largest
    per-channel distance). Every pixel takes its nearest colour's region (semantic_labels)."""
    distance = (semantic_map.reshape(3, -1).T[:, None, :] - palette[None].to(semantic_map)).abs().amax(dim=2)
    nearest = distance.min(dim=1).values
    return int((nearest > 2.5 / 255).sum()), int((nearest > _TOLERANCE).sum()), float(nearest.max())


def semantic_labels(semantic_map: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(3, H, W) map -> (1, K, H, W) one-hot channels by nearest palette colour."""
    distance = torch.cdist(semantic_map.reshape(3, -1).T, palette)  # (H*W, K)
    nearest = distance.argmin(dim=1)
    one_hot = F.one_hot(nearest, palette.shape[0]).T.float()
    return one_hot.reshape(1, palette.shape[0], *semantic_map.shape[-2:])


def shared_palette(content_map: torch.Tensor, style_map: torch.Tensor,
                   unstyled: torch.Tensor | None = None) -> torch.Tensor:
    """The palette both maps use; a colour present on one side only is an error, except the
    content map's ``unstyled`` colour (3,), which no style needs to paint: it is appended last."""
    content_colours = semantic_palette(content_map, what="content_map")
    style_colours = semantic_palette(style_map, what="style_map")
    if unstyled is not None:
        near = torch.cdist(content_colours, unstyled[None]).squeeze(1) <= _TOLERANCE
        if not near.any():
            raise ConfigError(f"{_hexes(unstyled[None])} is not a colour of the content map", field="unstyled_color")
        style_colours = style_colours[torch.cdist(style_colours, unstyled[None]).squeeze(1) > _TOLERANCE]
        content_colours = content_colours[~near]
        if not content_colours.shape[0]:
            raise ConfigError("the whole content map is this colour: nothing is left to style", field="unstyled_color")
    distance = torch.cdist(content_colours, style_colours)

    missing_in_style = content_colours[distance.min(dim=1).values > _TOLERANCE]
    if missing_in_style.shape[0]:
        raise ConfigError(f"colour(s) {_hexes(missing_in_style)} have no region in the style maps", field="content_map")
    missing_in_content = style_colours[distance.min(dim=0).values > _TOLERANCE]
    if missing_in_content.shape[0]:
        raise ConfigError(f"colour(s) {_hexes(missing_in_content)} have no region in the content map",
                          field="style_map")
    if unstyled is not None:
        return torch.cat([style_colours, unstyled[None].to(style_colours)])
    return style_colours


def _hexes(colours: torch.Tensor) -> str:
    return ", ".join("#" + "".join(f"{round(c * 255):02x}" for c in colour.tolist()) for colour in colours)
