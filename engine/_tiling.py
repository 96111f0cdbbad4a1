"""Exact tiled evaluation of the loss (Gatys or MRF) and its image gradient.

When an image's activations do not fit in memory, the loss and its gradient are evaluated tile by
tile. Tiles are aligned to the backbone's total stride (16), and each is cropped from the image
with a halo of at least the receptive-field radius of the deepest tap, so the features at the
tile's *interior* positions equal the full image's exactly. Each feature position belongs to one
tile's interior, so:

- pass 1 accumulates the global Gram matrices from the interiors (no gradients kept);
- pass 2 runs forward + backward per tile with upstream gradients only at its interior
  positions (the global Gram gradient for style, the local error for content) and adds the
  crop's image gradient into the full gradient, halo included.

MRF terms are local too: each synthesis patch belongs to the tile whose interior holds its
top-left position, and is matched and pulled there; the halo is widened by (k - 1) feature
positions of the coarsest MRF layer so the patch's other positions are exact as well. The mean
over patches divides by the full image's patch count.

The sum over tiles is then the untiled gradient, up to floating-point summation order.
Total variation is computed on the whole image (it is cheap and local in pixel space).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from styleforge.kernels import extract_patches, gram

from ._backbone import FeatureInfo
from ._backend import Backend
from ._mrf import MRFObjective
from ._objectives import GatysObjective, total_variation

__all__ = ["Tile", "plan_tiles", "receptive_radius", "tile_halo", "tiled_evaluate", "tiled_features", "tiled_grams"]

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


def tile_halo(layers: Sequence[FeatureInfo], mrf_layers: Sequence[str] = (), patch_size: int = 1) -> int:
    """The halo tiles need: the receptive radius, plus (MRF) a patch's extent at the coarsest
    MRF layer, so every position of a patch whose corner is in the interior is exact."""
    strides = [info.stride for info in layers if info.name in mrf_layers]
    return receptive_radius(layers) + (patch_size - 1) * max(strides, default=0)


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


def _full_interior(tile: Tile, stride: int, features: torch.Tensor) -> tuple[slice, slice]:
    """The same interior positions as _interior, in the full image's feature map."""
    rows, cols = _interior(tile, stride, features)
    shift_r, shift_c = tile.cy0 // stride, tile.cx0 // stride
    return slice(rows.start + shift_r, rows.stop + shift_r), slice(cols.start + shift_c, cols.stop + shift_c)


def _global_grams(backend: Backend, layers: Sequence[str], image: torch.Tensor, tiles: list[Tile],
                  strides: dict[str, int]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Pass 1: Gram matrices of the whole image from the tiles' interiors, and position counts."""
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(layers, 0)
    with torch.no_grad():
        for tile in tiles:
            features = backend.features(image[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1])
            for layer in layers:
                rows, cols = _interior(tile, strides[layer], features[layer])
                inside = features[layer][:, :, rows, cols]
                positions = inside.shape[2] * inside.shape[3]
                if positions == 0:  # an edge tile narrower than this layer's stride
                    continue
                partial = gram(inside) * positions
                sums[layer] = sums[layer] + partial if layer in sums else partial
                counts[layer] += positions
    return {layer: sums[layer] / counts[layer] for layer in layers}, counts


def _strides(backend: Backend) -> dict[str, int]:
    return {name: info.stride for name, info in backend.backbone.feature_info.items()}


def _target_tiles(backend: Backend, image: torch.Tensor, tile_size: int) -> list[Tile]:
    return plan_tiles(*image.shape[-2:], tile_size, receptive_radius(backend.backbone.layers))


def tiled_grams(backend: Backend, image: torch.Tensor, tile_size: int,
                layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram matrices of a (1, 3, H, W) image too large to run whole (style targets at 8K)."""
    return _global_grams(backend, layers, image, _target_tiles(backend, image, tile_size), _strides(backend))[0]


@torch.no_grad()
def tiled_features(backend: Backend, image: torch.Tensor, tile_size: int,
                   layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Full feature maps of ``layers`` assembled from the tiles' interiors (content targets)."""
    strides = _strides(backend)
    height, width = image.shape[-2:]
    maps: dict[str, torch.Tensor] = {}
    for tile in _target_tiles(backend, image, tile_size):
        features = backend.features(image[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1])
        for layer in layers:
            stride, crop = strides[layer], features[layer]
            if layer not in maps:
                maps[layer] = crop.new_zeros(crop.shape[0], crop.shape[1], height // stride, width // stride)
            rows, cols = _interior(tile, stride, crop)
            maps[layer][:, :, *_full_interior(tile, stride, crop)] = crop[:, :, rows, cols]
    return maps


def _tile_content(objective, features, tile: Tile, strides: dict[str, int]) -> torch.Tensor:
    """The content term's share from a tile's interior positions (a sum over the full mean)."""
    term = torch.zeros((), device=next(iter(features.values())).device)
    targets = objective.content.targets
    for layer, target in targets.items():
        stride = strides[layer]
        rows, cols = _interior(tile, stride, features[layer])
        error = features[layer][:, :, rows, cols] - target[:, :, *_full_interior(tile, stride, features[layer])]
        term = term + error.pow(2).sum() / target.numel() * objective.content._scale[layer] / len(targets)
    return term


def _patch_rows(start: int, stop: int, size: int, patch: int, step: int) -> range:
    """Full-map patch corners (multiples of ``step``) in [start, stop) whose patch fits in ``size``."""
    first = -(-start // step) * step
    return range(first, min(stop, size - patch + 1), step)


def _tile_mrf(objective: MRFObjective, features, tile: Tile, strides: dict[str, int],
              image_shape: tuple[int, int]) -> torch.Tensor:
    """The MRF term's share from the patches whose top-left corner lies in the tile's interior."""
    term = torch.zeros((), device=next(iter(features.values())).device)
    k, step = objective.patch_size, objective.synthesis_stride
    for layer in objective.layers:
        stride = strides[layer]
        full_h, full_w = image_shape[0] // stride, image_shape[1] // stride
        rows_all = (full_h - k) // step + 1
        cols_all = (full_w - k) // step + 1
        rows = _patch_rows(tile.y0 // stride, -(-tile.y1 // stride), full_h, k, step)
        cols = _patch_rows(tile.x0 // stride, -(-tile.x1 // stride), full_w, k, step)
        if not rows or not cols:
            continue
        top, left = rows[0] - tile.cy0 // stride, cols[0] - tile.cx0 // stride
        block = features[layer][:, :, top:top + rows[-1] - rows[0] + k, left:left + cols[-1] - cols[0] + k]
        patches = extract_patches(block, k, step)
        labels = objective.label_grid(layer, (full_h, full_w))
        if labels is not None:
            grid = labels.reshape(rows_all, cols_all, -1)
            labels = grid[rows[0] // step:rows[-1] // step + 1, cols[0] // step:cols[-1] // step + 1]
            labels = labels.reshape(-1, grid.shape[-1])
        distance = objective.patch_distances(layer, patches, labels)
        term = term + distance.sum() / (rows_all * cols_all) * objective.layer_scale(layer)
    return term


def tiled_evaluate(backend: Backend, objective: GatysObjective | MRFObjective, image: torch.Tensor,
                   tiles: list[Tile]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The objective's terms and d total / d image (1, 3, H, W), evaluated tile by tile."""
    strides = _strides(backend)
    zero = image.new_zeros(())
    style, content, gram_grads = zero, zero, {}
    is_gram = isinstance(objective, GatysObjective)
    if is_gram:
        layers = list(objective.style_targets)
        grams, counts = _global_grams(backend, layers, image, tiles, strides)
        for layer in layers:
            difference = grams[layer] - objective.style_targets[layer]
            scale = objective._style_scale[layer]
            style = style + difference.pow(2).sum() * scale
            grad_g = 2 * scale * objective.style_weight * difference  # dL/dG
            # G = F F^T / N  =>  dL/dF = (dL/dG + dL/dG^T) F / N, N the global position count.
            gram_grads[layer] = (grad_g + grad_g.transpose(1, 2)) / counts[layer]

    # Pass 2: per tile, upstream gradients at the positions it owns, then the crop's backward.
    image_grad = torch.zeros_like(image)
    for tile in tiles:
        features = {name: value.requires_grad_(True)
                    for name, value in backend.forward(image[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1]).items()}
        with torch.enable_grad():
            local = _tile_content(objective, features, tile, strides)
            content = content + local.detach()
            weighted = objective.content_weight * local
            if not is_gram:
                mrf = _tile_mrf(objective, features, tile, strides, tuple(image.shape[-2:]))
                style = style + mrf.detach()
                weighted = weighted + objective.mrf_weight * mrf
            names = list(features)
            if weighted.requires_grad:
                upstream = dict(zip(names, torch.autograd.grad(
                    weighted, [features[n] for n in names], allow_unused=True, materialize_grads=True)))
            else:  # no content target and a Gram objective: only the Gram gradient below
                upstream = {name: torch.zeros_like(features[name]) for name in names}
        for layer in gram_grads:
            rows, cols = _interior(tile, strides[layer], features[layer])
            inside = features[layer].detach()[:, :, rows, cols]
            flat = inside.reshape(inside.shape[0], inside.shape[1], -1)
            upstream[layer][:, :, rows, cols] += torch.bmm(gram_grads[layer], flat).reshape(inside.shape)
        image_grad[:, :, tile.cy0:tile.cy1, tile.cx0:tile.cx1] += backend.backward(upstream)

    pixels = image.detach().requires_grad_(True)
    tv = zero
    if objective.tv_weight > 0:
        with torch.enable_grad():
            tv = total_variation(pixels)
            (tv_grad,) = torch.autograd.grad(tv * objective.tv_weight, pixels)
        image_grad += tv_grad
        tv = tv.detach()
    weight = objective.style_weight if is_gram else objective.mrf_weight
    total = objective.content_weight * content + weight * style + objective.tv_weight * tv
    return {"content": content, "style": style, "tv": tv, "total": total}, image_grad
