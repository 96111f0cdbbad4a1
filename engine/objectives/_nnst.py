"""Neural Neighbor Style Transfer (Kolkin, Kucera, Paris, Sykora, Shechtman and Shakhnarovich,
"Neural Neighbor Style Transfer", 2022; NNST-Opt, after the authors' MIT code,
nkolkin13/NeuralNeighborStyleTransfer) as a style loss on the registry: ``style_loss = "nnst"``.

Hypercolumns: the taps ``layers`` (the paper's VGG16 conv layers of blocks 1-4, relu1_1 ...
relu4_3; the authors drop block 5 "without hurting quality"), each divided by its channel count so
wide layers do not dominate the cosine, brought to a common grid of stride 4 (the paper's h/4 x
w/4) and stacked: (1, D, H/4, W/4). Departure: finer layers are average-pooled and coarser ones
repeated (nearest), where the authors resample bilinearly; both are aligned to the tiles' 16-pixel
grid and read no position outside their own, so every window's hypercolumns are the whole image's
and the term has no reach beyond the receptive field.

Target, once per level: every hypercolumn of the *search image* is replaced by its nearest style
hypercolumn by centred cosine (both sides minus their own mean, as the authors'
``pairwise_distances_cos_center``; their mean is per chunk of content rows, ours over the whole
image). The search image is the content on the pyramid's first level and 0.25 x the level's start
+ 0.75 x the content after (the authors' default alpha = 0.75: their start is the coarser result
plus the content's detail band, which is our ``level_start = detail``). The style bank holds the
hypercolumns of every style with a positive blend weight and of its 90, 180 and 270 degree
rotations (the authors' ``flip_aug``, on by default); weights beyond that are not used: a nearest
neighbour has no mixture. The search is ``kernels.mrf_nearest`` on unit rows (1x1 NCC is the
cosine): the CuPy kernel on a GPU, the chunked torch reference elsewhere, both exact, scores
bounded by chunk x chunk; the content side is searched window by window. A bank larger than
``BANK_ROWS`` (65536: the authors' bank at their default 512 px, 128 x 128 positions x 4 rotations)
is sampled on a regular grid of every s-th row and column of each image's hypercolumns, the
smallest s that fits, each grid's offset drawn from the render's seed (the authors sample their
final pass the same way, to at most 64 per side); so a 4K style is a 65536-row bank, not 2M.

Loss, a local term: sum over owned positions of 1 - cos(h_p, t_p), divided by the whole image's
position count (the authors' ``(1 - (target_n * current_n).sum(1)).mean()``); positions without a
target (the unstyled colour; a region no style holds at this size) contribute 0. The content term
is ours (``content_weight``, relu4_2) rather than the authors' optional self-similarity loss, off
in their default run. Their last pass (per-layer matching recomputed every step) and their colour
correction (the output's chrominance replaced by the content's, moved to the style's moments in
OkLab) are not done: the palette start already gives the render the style's colours per luminance
band, and the correction, in the authors' words, trades stylisation for robustness.

Regions: each position searches only the style rows whose label (the map averaged to the stride-4
grid, its largest share) is its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from styleforge.kernels import mrf_nearest, normalize_patches

from .._backbone import FeatureInfo
from .._config import RenderConfig
from ._base import Window, Statistic, Term
from .._style_losses import NNST_LAYERS  # the layers are data the config reads without torch
from ._registry import StyleLoss, StyleTargets, register_style_loss

__all__ = ["BANK_ROWS", "HYPERCOLUMN_STRIDE", "NNST_LAYERS", "NNSTTarget", "NNSTTerm", "SEARCH_CURRENT_SHARE",
           "hypercolumns", "nearest_hypercolumns"]

#: The common grid of the hypercolumns, in pixels (the paper's h/4 x w/4).
HYPERCOLUMN_STRIDE = 4
#: Style bank rows at most (see the module docstring for how larger banks are sampled).
BANK_ROWS = 1 << 16
#: The share of the level's start in the search image after the first level (the authors'
#: 1 - alpha, alpha = 0.75).
SEARCH_CURRENT_SHARE = 0.25


def hypercolumns(features: Mapping[str, torch.Tensor], layers: Sequence[str], strides: Mapping[str, int],
                 shape: tuple[int, int], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """(1, D, H/4, W/4) hypercolumns of an image (or crop) of (H, W) ``shape``: each layer's
    (1, C, H/s, W/s) map times weight / C, average-pooled (s < 4) or repeated (s > 4) to stride 4."""
    height, width = shape[0] // HYPERCOLUMN_STRIDE, shape[1] // HYPERCOLUMN_STRIDE
    blocks = []
    for layer in layers:
        value, stride = features[layer], strides.get(layer, 1)
        value = value * ((weights[layer] if weights is not None else 1.0) / value.shape[1])
        if stride < HYPERCOLUMN_STRIDE:
            value = F.avg_pool2d(value, HYPERCOLUMN_STRIDE // stride)
        elif stride > HYPERCOLUMN_STRIDE:
            factor = stride // HYPERCOLUMN_STRIDE
            value = value.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        value = value[:, :, :height, :width]
        if value.shape[2] < height or value.shape[3] < width:  # a coarse layer's floor: repeat its edge
            value = F.pad(value, (0, width - value.shape[3], 0, height - value.shape[2]), mode="replicate")
        blocks.append(value)
    return torch.cat(blocks, dim=1)


@torch.no_grad()
def nearest_hypercolumns(rows: torch.Tensor, bank: torch.Tensor, *, row_mean: torch.Tensor,
                         bank_mean: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the nearest bank row (M, D) of each of ``rows`` (N, D) by centred cosine:
    cos(x - row_mean, y - bank_mean), through the exact, chunked NCC search (kernels.mrf_nearest)."""
    centred_bank = normalize_patches((bank - bank_mean).float())
    index, _ = mrf_nearest(normalize_patches((rows - row_mean).float()), centred_bank, normalized=True)
    return index


@dataclass(frozen=True)
class NNSTTarget:
    """The style rows, unit-norm (M, D), and each position's row in it (H/4, W/4), -1 for none."""

    bank: torch.Tensor
    index: torch.Tensor


def _grid_step(rows: int) -> int:
    """The smallest s such that every s-th row and column of ``rows`` positions fits BANK_ROWS."""
    return max(1, math.ceil(math.sqrt(rows / BANK_ROWS)))


def _labels_at(labels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(1, K, H, W) one-hot map -> (h, w) label with the largest share of each stride-4 position."""
    height, width = shape[0] // HYPERCOLUMN_STRIDE, shape[1] // HYPERCOLUMN_STRIDE
    return F.adaptive_avg_pool2d(labels.float(), (height, width))[0].argmax(dim=0)


@torch.no_grad()
def _style_bank(targets: StyleTargets, layers: Sequence[str],
                weights: Mapping[str, float]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The bank's rows (M, D) over every style of positive weight and its rotations, sampled on a
    seeded grid when larger than BANK_ROWS, and each row's label (or None without maps)."""
    chosen = [(index, style) for index, (style, weight) in enumerate(zip(targets.styles, targets.blend)) if weight > 0]
    total = sum(4 * (s.shape[-2] // HYPERCOLUMN_STRIDE) * (s.shape[-1] // HYPERCOLUMN_STRIDE) for _, s in chosen)
    step = _grid_step(total)
    generator = torch.Generator().manual_seed(targets.seed)
    rows, labels = [], []
    for index, style in chosen:
        for turns in range(4):
            image = torch.rot90(style, turns, dims=(2, 3))
            shape = (image.shape[-2], image.shape[-1])
            oy, ox = (int(v) for v in torch.randint(0, step, (2,), generator=generator))

            def owned_rows(features: Mapping[str, torch.Tensor], window: Window, shape: tuple[int, int] = shape,
                           oy: int = oy, ox: int = ox) -> tuple[torch.Tensor, slice, slice]:
                crop = hypercolumns(features, layers, targets.strides,
                                    (window.cy1 - window.cy0, window.cx1 - window.cx0), weights)
                rows_, cols_ = window.interior(HYPERCOLUMN_STRIDE, crop)
                full_r, full_c = window.full_interior(HYPERCOLUMN_STRIDE, crop)
                first_r = -(-(full_r.start - oy) // step) * step + oy
                first_c = -(-(full_c.start - ox) // step) * step + ox
                picked = crop[0, :, rows_.start + first_r - full_r.start:rows_.stop:step,
                              cols_.start + first_c - full_c.start:cols_.stop:step]
                return (picked.reshape(picked.shape[0], -1).T, slice(first_r, full_r.stop, step),
                        slice(first_c, full_c.stop, step))

            for picked, rs, cs in targets.over_windows(image, owned_rows):
                rows.append(picked.float())
                if targets.style_labels is not None:
                    turned = torch.rot90(targets.style_labels[index], turns, dims=(2, 3))
                    labels.append(_labels_at(turned, shape)[rs, cs].reshape(-1))
    return torch.cat(rows), (torch.cat(labels) if labels else None)


@torch.no_grad()
def _build_target(targets: StyleTargets, search: torch.Tensor, layers: Sequence[str],
                  weights: Mapping[str, float]) -> NNSTTarget:
    bank, bank_labels = _style_bank(targets, layers, weights)
    bank_mean = bank.mean(dim=0)
    shape = (search.shape[-2], search.shape[-1])

    def owned(features: Mapping[str, torch.Tensor], window: Window) -> tuple[torch.Tensor, slice, slice]:
        crop = hypercolumns(features, layers, targets.strides, (window.cy1 - window.cy0, window.cx1 - window.cx0),
                            weights)
        rows, cols = window.interior(HYPERCOLUMN_STRIDE, crop)
        return crop[:, :, rows, cols].float(), *window.full_interior(HYPERCOLUMN_STRIDE, crop)

    # Two passes over the search image's windows: the mean (for the centring), then the search;
    # no more than a window's hypercolumns are held at once.
    count, total = 0, None
    for part, _, _ in targets.over_windows(search, owned):
        summed = part.sum(dim=(0, 2, 3))
        total = summed if total is None else total + summed
        count += part.shape[2] * part.shape[3]
    assert total is not None
    row_mean = total / count
    content_labels = _labels_at(targets.content_labels, shape) if targets.content_labels is not None else None
    index = torch.full((shape[0] // HYPERCOLUMN_STRIDE, shape[1] // HYPERCOLUMN_STRIDE), -1, dtype=torch.int64,
                       device=bank.device)

    def search_window(features: Mapping[str, torch.Tensor], window: Window) -> None:
        part, rows, cols = owned(features, window)
        flat = part[0].reshape(part.shape[1], -1).T
        if content_labels is None or bank_labels is None:
            found = nearest_hypercolumns(flat, bank, row_mean=row_mean, bank_mean=bank_mean)
        else:  # each position searches only its own region's rows
            here = content_labels[rows, cols].reshape(-1)
            found = torch.full_like(here, -1)
            for r in targets.styled:
                mine, theirs = (here == r).nonzero()[:, 0], (bank_labels == r).nonzero()[:, 0]
                if len(mine) and len(theirs):
                    nearest = nearest_hypercolumns(flat[mine], bank[theirs], row_mean=row_mean, bank_mean=bank_mean)
                    found[mine] = theirs[nearest]
        index[rows, cols] = found.reshape(part.shape[2], part.shape[3])

    targets.over_windows(search, search_window)
    return NNSTTarget(normalize_patches(bank), index)


class NNSTTerm(Term):
    """sum over owned positions of 1 - cos(h_p, t_p), over the whole image's positions (a local
    term: see the module docstring). ``target``: the unit style rows and each position's index."""

    name = "style"

    def __init__(self, target: NNSTTarget, layer_weights: Mapping[str, float],
                 strides: Mapping[str, int] | None = None) -> None:
        super().__init__(strides)
        self.target = target
        self.layers = tuple(layer_weights)
        self.weights = _relative(layer_weights)

    def local_value(self, features: Mapping[str, torch.Tensor], window: Window,
                    stats: Mapping[str, Statistic]) -> torch.Tensor | None:
        crop = hypercolumns(features, self.layers, self.strides, (window.cy1 - window.cy0, window.cx1 - window.cx0),
                            self.weights)
        rows, cols = window.interior(HYPERCOLUMN_STRIDE, crop)
        full_rows, full_cols = window.full_interior(HYPERCOLUMN_STRIDE, crop)
        owned = crop[0, :, rows, cols].reshape(crop.shape[1], -1).T
        index = self.target.index[full_rows, full_cols].reshape(-1)
        if not owned.shape[0]:
            return None
        chosen = self.target.bank[index.clamp_min(0)].to(owned.dtype)
        cosine = (normalize_patches(owned) * chosen).sum(dim=1)
        return ((1 - cosine) * (index >= 0).to(owned.dtype)).sum() / self.target.index.numel()


def _relative(layer_weights: Mapping[str, float]) -> dict[str, float]:
    """Layer weights with mean 1 (equal weights: the paper's hypercolumn)."""
    total = sum(layer_weights.values())
    return {layer: weight * len(layer_weights) / total for layer, weight in layer_weights.items()}


def _search_image(targets: StyleTargets) -> torch.Tensor:
    if targets.content is None:
        assert targets.start is not None
        return targets.start
    if targets.first or targets.start is None:
        return targets.content
    return SEARCH_CURRENT_SHARE * targets.start.to(targets.content) + (1 - SEARCH_CURRENT_SHARE) * targets.content


def _build(targets: StyleTargets) -> Term:
    weights = _relative(targets.layer_weights)
    search = _search_image(targets)
    target = targets.cached(lambda: _build_target(targets, search, targets.layers, weights),
                            targets.layers, weights, search, targets.styled if targets.guided else None)
    return NNSTTerm(target, targets.layer_weights, targets.strides)


def _memory(config: RenderConfig, layers: Mapping[str, FeatureInfo], height: int, width: int) -> int:
    """The bank, unit rows and their centred copy while searching (float32), and the index map."""
    depth = sum(layers[name].channels for name in config.objective.style_layers)
    side = config.objective.style_scale * max(height, width) / HYPERCOLUMN_STRIDE
    rows = min(BANK_ROWS, int(4 * side * side))
    return 2 * rows * depth * 4 + (height // HYPERCOLUMN_STRIDE) * (width // HYPERCOLUMN_STRIDE) * 8


NNST = register_style_loss(StyleLoss("nnst", _build, _build, memory=_memory, default_layers=NNST_LAYERS))
