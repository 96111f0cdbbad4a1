"""Exact tiled evaluation of the Gatys loss and its image gradient.

When an image's activations do not fit in memory, the loss and its gradient are evaluated tile by
tile. Tiles are aligned to the backbone's total stride (16), and each is cropped from the image
with a halo of at least the receptive-field radius of the deepest tap, so the features at the
tile's *interior* positions equal the full image's exactly. Each feature position belongs to one
tile's interior, so:

- pass 1 accumulates the global Gram matrices from the interiors (no gradients kept);
- pass 2 runs forward + backward per tile with upstream gradients only at its interior
  positions (the global Gram gradient for style, the local error for content) and adds the
  crop's image gradient into the full gradient, halo included.

The sum over tiles is then the untiled gradient, up to floating-point summation order.
Total variation is computed on the whole image (it is cheap and local in pixel space).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from styleforge.kernels import gram

from ._backbone import FeatureInfo
from ._backend import Backend
from ._objectives import GatysObjective, total_variation

__all__ = ["Tile", "plan_tiles", "receptive_radius", "tiled_gatys_evaluate"]

_ALIGN = 16


def receptive_radius(layers: Sequence[FeatureInfo]) -> int:
    """Pixels on each side of a position that can influence the last layer's value there."""
    size, jump = 1, 1
    for info in layers:
        if info.kind == "conv":
            size += 2 * jump
        elif info.kind == "pool":
            size += jump
            jump *= 2
    return size // 2 + 1


@dataclass(frozen=True)
class Tile:
    """Interior [y0, y1) x [x0, x1) and the crop [cy0, cy1) x [cx0, cx1) it is computed from."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """Tiles of ``tile`` pixels (rounded up to the 16-pixel stride) with a halo of ``halo``
    (rounded up likewise), clipped at the image's borders, covering the image once."""
    def up(value: int) -> int:
        return -(-value // _ALIGN) * _ALIGN

    tile, halo = max(_ALIGN, up(tile)), up(halo)
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo),
                              max(0, x0 - halo), min(width, x1 + halo)))
    return tiles


def _interior(tile: Tile, stride: int, features: torch.Tensor) -> tuple[slice, slice]:
    """The interior's rows and columns in a crop's feature map of the given stride."""
    top, left = (tile.y0 - tile.cy0) // stride, (tile.x0 - tile.cx0) // stride
    bottom = min(features.shape[2], top + -(-(tile.y1 - tile.y0) // stride))
    right = min(features.shape[3], left + -(-(tile.x1 - tile.x0) // stride))
    return slice(top, bottom), slice(left, right)


def tiled_gatys_evaluate(backend: Backend, objective: GatysObjective, image: torch.Tensor,
                         tiles: list[Tile]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The objective's terms and d total / d image (1, 3, H, W), evaluated tile by tile."""
    strides = {name: info.stride for name, info in backend.backbone.feature_info.items()}
    height, width = image.shape[-2:]
    style_layers = list(objective.style_targets)
    content_layers = list(objective.content.targets)

    # Pass 1: global Gram sums over interior positions.
    sums = {layer: None for layer in style_layers}
    counts = dict.fromkeys(style_layers, 0)
    with torch.no_grad():
        for tile in tiles:
            crop = image[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1]
            features = backend.features(crop)
            for layer in style_layers:
                rows, cols = _interior(tile, strides[layer], features[layer])
                inside = features[layer][:, :, rows, cols]
                positions = inside.shape[2] * inside.shape[3]
                if positions == 0:  # an edge tile narrower than this layer's stride
                    continue
                partial = gram(inside) * positions
                sums[layer] = partial if sums[layer] is None else sums[layer] + partial
                counts[layer] += positions

    # Loss and its gradient with respect to each global Gram matrix.
    zero = image.new_zeros(())
    style, gram_grads = zero, {}
    for layer in style_layers:
        total = sums[layer] / counts[layer]
        difference = total - objective.style_targets[layer]
        scale = objective._style_scale[layer]
        style = style + difference.pow(2).sum() * scale
        gram_grads[layer] = 2 * scale * objective.style_weight * difference  # dL/dG
    content = zero
    image_grad = torch.zeros_like(image)

    # Pass 2: per tile, upstream gradients at interior positions only, then the crop's backward.
    for tile in tiles:
        crop = image[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1]
        features = backend.forward(crop)
        upstream = {name: torch.zeros_like(value) for name, value in features.items()}
        for layer in style_layers:
            rows, cols = _interior(tile, strides[layer], features[layer])
            inside = features[layer][:, :, rows, cols]
            flat = inside.reshape(inside.shape[0], inside.shape[1], -1)
            symmetric = gram_grads[layer] + gram_grads[layer].transpose(1, 2)
            # G = F F^T / N  =>  dL/dF = (dL/dG + dL/dG^T) F / N, N the global position count.
            grad = torch.bmm(symmetric, flat) / counts[layer]
            upstream[layer][:, :, rows, cols] += grad.reshape(inside.shape)
        for layer in content_layers:
            rows, cols = _interior(tile, strides[layer], features[layer])
            target = objective.content.targets[layer][:, :, _shift(rows, tile.cy0, strides[layer]),
                                                      _shift(cols, tile.cx0, strides[layer])]
            error = features[layer][:, :, rows, cols] - target
            numel = objective.content.targets[layer].numel()
            scale = objective.content._scale[layer] / len(content_layers)
            content = content + error.pow(2).sum() / numel * scale
            upstream[layer][:, :, rows, cols] += 2 * error / numel * scale * objective.content_weight
        image_grad[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1] += backend.backward(upstream)

    pixels = image.detach().requires_grad_(True)
    with torch.enable_grad():
        tv = total_variation(pixels) if objective.tv_weight > 0 else pixels.new_zeros(())
        if objective.tv_weight > 0:
            (tv_grad,) = torch.autograd.grad(tv * objective.tv_weight, pixels)
            image_grad += tv_grad
    total = objective.content_weight * content + objective.style_weight * style + objective.tv_weight * tv.detach()
    return {"content": content, "style": style, "tv": tv.detach(), "total": total}, image_grad


def _shift(part: slice, origin: int, stride: int) -> slice:
    """A crop-coordinate slice of a feature map moved to full-image coordinates."""
    return slice(part.start + origin // stride, part.stop + origin // stride)
