"""Memory planner and tile geometry: estimate a level's peak memory, choose untiled or the tile
size, or refuse; and cut the tiles (the only place tiles are cut, so --dry-run reports the tiles
that run).

Tiles are aligned to the backbone's total stride (16), and each is cropped with a halo of at least
the receptive-field radius of the deepest tap (plus the objective's extent, e.g. an MRF patch),
so the features at the tile's interior positions equal the whole image's exactly.

The estimate counts what one evaluation keeps alive on the torch backend in fp32: every ReLU and
pool output up to the deepest tap (autograd saves them, and each convolution's input is one of
them), max-pool indices (int64), the two largest gradient buffers of the backward, plus the
optimiser's state over the whole image (L-BFGS: two vectors per history entry), the image,
its gradient, the content target and what the style loss declares its targets hold (the MRF
patch bank, NNST's hypercolumn bank; objectives.StyleLoss.memory). Tiled, the activations are
those of one crop (tile plus halo on each side); the targets of a tiled level are computed tile
by tile too. When the L-BFGS history does not fit beside 512-px tiles it is shortened before
tiles get smaller. The budget is ``max_memory`` or most of what is free (GPU memory, or the
system's available RAM on CPU).

With ``--cuda-graphs`` every input shape of a level (the whole image, or each distinct tile crop:
edge tiles differ from interior ones) is captured once, and each capture keeps a private memory
pool about the size of that shape's activations, all alive together. A level replays graphs only
when its state plus every capture's pool fits the budget; otherwise it runs eagerly, and the plan
says so. Captures are freed when the level ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from .._backbone import FeatureInfo, layer_infos
from .._config import RenderConfig
from .._errors import ConfigError
from .._weights import MODELS
from ..objectives import Window, matting_bytes, style_loss_for

__all__ = ["LevelPlan", "RenderPlan", "default_budget", "plan_graphs", "plan_render", "plan_tiles", "receptive_radius",
           "tile_halo"]

_ALIGN = 16

_TILE_SIZES = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64)
#: Corrections the planner falls back to when the L-BFGS history does not fit the budget.
_SHORTER_HISTORIES = (20, 10, 5)
_GIB = 1024**3


def _size(count: float) -> str:
    return f"{count / _GIB:.1f} GiB" if count >= _GIB / 2 else f"{count / 1024**2:.0f} MiB"


def receptive_radius(layers: Sequence[FeatureInfo]) -> int:
    """Pixels on each side of a position that can influence the last layer's value there."""
    size, jump = 1, 1
    for info in layers:
        size += (info.kernel - 1) * jump
        jump *= info.step
    return size // 2 + 1


def tile_halo(layers: Sequence[FeatureInfo], extent: Mapping[str, int] | None = None) -> int:
    """The halo tiles need: the receptive radius, plus the objective's extent (feature positions
    an owned position's term also reads, e.g. an MRF patch's k - 1) at its coarsest layer."""
    strides = {info.name: info.stride for info in layers}
    extra = max((count * strides[layer] for layer, count in (extent or {}).items()), default=0)
    return receptive_radius(layers) + extra


def _up(value: int) -> int:
    return -(-value // _ALIGN) * _ALIGN


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Window]:
    """Tiles of ``tile`` pixels (rounded up to the 16-pixel stride) with a halo of ``halo``
    (rounded up likewise), clipped at the image's borders, covering the image once."""
    tile, halo = max(_ALIGN, _up(tile)), _up(halo)
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            tiles.append(Window(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo),
                                max(0, x0 - halo), min(width, x1 + halo), height, width))
    return tiles


def default_budget(device: torch.device) -> int:
    """90% of the free GPU memory, or 80% of the available system memory on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * 0.8)
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)


def activation_bytes(layers: Sequence[FeatureInfo], height: int, width: int) -> int:
    """Estimated peak bytes of one forward + backward through ``layers`` at (height, width), fp32."""
    kept, largest = 0, 0
    for info in layers:
        elements = info.channels * (height // info.stride) * (width // info.stride)
        if info.kind == "pool":
            kept += elements * (4 + 8)  # the output, and int64 indices
        else:
            largest = max(largest, elements)
            if info.kind == "relu":
                kept += elements * 4
            elif info.kind == "fire":  # the expands' ReLU outputs, their concatenation, the squeeze
                kept += elements * 4 * 2 + elements // 4 * 4
    return kept + 2 * largest * 4 + 3 * height * width * 4


@dataclass(frozen=True)
class LevelPlan:
    level: int
    height: int
    width: int
    tile_size: int  # 0: untiled (after rounding to the stride: the size the tiles are cut at)
    windows: tuple[Window, ...]  # the tiles, or the whole image
    activation_bytes: int
    state_bytes: int
    lbfgs_history: int  # corrections kept at this level (--lbfgs-history, or fewer to fit)
    #: With --cuda-graphs: the (height, width) input shapes captured at this level (empty: eager)
    #: and what their pools need together; graphs_asked says whether --cuda-graphs was given.
    graph_shapes: tuple[tuple[int, int], ...] = ()
    graph_bytes: int = 0
    graphs_asked: bool = False

    @property
    def total_bytes(self) -> int:
        """The estimated peak: with graphs, every capture's pool instead of one eager pass."""
        if self.graph_shapes:
            return self.graph_bytes + self.state_bytes
        return self.activation_bytes + self.state_bytes

    @property
    def crop_shapes(self) -> tuple[tuple[int, int], ...]:
        """The distinct input shapes the backbone sees at this level (one per capture)."""
        return tuple(sorted({(r.cy1 - r.cy0, r.cx1 - r.cx0) for r in self.windows}))

    @property
    def tiles(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class RenderPlan:
    device: str
    budget_bytes: int
    levels: tuple[LevelPlan, ...]
    optimizer: str = "lbfgs"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(level.height, level.width) for level in self.levels]

    def describe(self) -> str:
        lines = [f"memory plan on {self.device}, budget {_size(self.budget_bytes)}:"]
        for plan in self.levels:
            how = "untiled" if plan.tile_size == 0 else f"{plan.tiles} tiles of {plan.tile_size} px"
            history = f", L-BFGS history {plan.lbfgs_history}" if self.optimizer == "lbfgs" else ""
            activations = (f"{_size(plan.graph_bytes)} in {len(plan.graph_shapes)} CUDA graph pools"
                           if plan.graph_shapes else f"{_size(plan.activation_bytes)} activations")
            lines.append(f"  level {plan.level + 1}: {plan.width}x{plan.height}, {how}{history}, about "
                         f"{_size(plan.total_bytes)} ({activations} + "
                         f"{_size(plan.state_bytes)} image, optimiser and targets)")
            if plan.graphs_asked and not plan.graph_shapes:
                lines.append(f"    eager, not CUDA graphs: {len(plan.crop_shapes)} captures would need about "
                             f"{_size(plan.graph_bytes + plan.state_bytes)} with their pools, over the budget")
        return "\n".join(lines)


def _state_bytes(config: RenderConfig, layers: dict[str, FeatureInfo], height: int, width: int,
                 lbfgs_history: int) -> int:
    pixels = 3 * height * width * 4
    history = 2 * lbfgs_history if config.optimization.optimizer == "lbfgs" else 2
    content = sum(layers[name].channels * (height // layers[name].stride) * (width // layers[name].stride) * 4
                  for name in config.objective.content_layers)
    targets = style_loss_for(config).memory(config, layers, height, width)  # declared by the loss
    photo = matting_bytes(height, width) if config.objective.photo_weight > 0 else 0  # control: photorealism
    palette = pixels if config.optimization.init == "palette" else 0  # the start's recoloured content, kept
    return (history + 4) * pixels + content + targets + photo + palette


def objective_extent(config: RenderConfig) -> dict[str, int]:
    """Feature positions beyond an owned one that the objective reads (an MRF patch's k - 1), as
    its style loss declares."""
    return style_loss_for(config).extent(config)


def plan_render(config: RenderConfig, shapes: list[tuple[int, int]], device: torch.device,
                budget: int | None = None) -> RenderPlan:
    """A plan for every level's (height, width); raises ConfigError, with the figures, when a
    level cannot fit the budget even in the smallest tiles."""
    budget = budget if budget is not None else default_budget(device)
    every = layer_infos(MODELS[config.runtime.model].arch)
    deepest = max(index for index, info in enumerate(every) if info.name in config.taps)
    layers = every[: deepest + 1]
    by_name = {info.name: info for info in layers}
    halo = tile_halo(layers, objective_extent(config))
    plans = [_plan_level(config, level, height, width, layers, by_name, halo, budget)
             for level, (height, width) in enumerate(shapes)]
    if config.runtime.cuda_graphs:
        plans = [plan_graphs(plan, layers, budget) for plan in plans]
    return RenderPlan(str(device), budget, tuple(plans), config.optimization.optimizer)


def plan_graphs(plan: LevelPlan, layers: Sequence[FeatureInfo], budget: int) -> LevelPlan:
    """``plan`` with CUDA graphs for each of its input shapes when the state and every capture's
    pool (about that shape's activations, as ``activation_bytes`` counts them) fit the budget
    together, else eager (graph_shapes empty) with graph_bytes saying what graphs would need."""
    shapes = plan.crop_shapes
    pools = sum(activation_bytes(layers, height, width) for height, width in shapes)
    fits = pools + plan.state_bytes <= budget
    return replace(plan, graph_shapes=shapes if fits else (), graph_bytes=pools, graphs_asked=True)


def _plan_level(config: RenderConfig, level: int, height: int, width: int, layers: list[FeatureInfo],
                by_name: dict[str, FeatureInfo], halo: int, budget: int) -> LevelPlan:
    """Untiled if it fits; else the largest tile that does. With L-BFGS, when even 512-px tiles do
    not fit beside the full history, fewer corrections are kept (down to 5) before smaller tiles."""
    untiled = activation_bytes(layers, height, width)
    forced = config.memory.tile_size
    optimization = config.optimization
    histories = [optimization.lbfgs_history]
    if optimization.optimizer == "lbfgs":
        histories += [h for h in _SHORTER_HISTORIES if h < optimization.lbfgs_history]
    padded_halo = _up(halo)

    def tile_bytes(tile: int) -> int:
        """One crop's activations: what a tile size costs, known without cutting a tile."""
        tile = max(_ALIGN, _up(tile))
        return activation_bytes(layers, min(height, tile + 2 * padded_halo), min(width, tile + 2 * padded_halo))

    def tiled(history: int, state: int, tile: int) -> LevelPlan:
        # The tiles are cut only for the plan chosen: a level that cannot fit is refused from
        # the figures alone (at 200000 px, 64-px tiles are millions of windows per candidate).
        tile = max(_ALIGN, _up(tile))
        return LevelPlan(level, height, width, tile, tuple(plan_tiles(height, width, tile, halo)),
                         tile_bytes(tile), state, history)

    for round_ in ("large tiles", "any tiles"):
        for history in histories:
            state = _state_bytes(config, by_name, height, width, history)
            if forced:
                return tiled(history, state, forced)
            if untiled + state <= budget:
                return LevelPlan(level, height, width, 0, (Window.whole(height, width),), untiled, state, history)
            sizes = [t for t in _TILE_SIZES if t >= 512] if round_ == "large tiles" else list(_TILE_SIZES)
            for tile in sizes:
                if tile_bytes(tile) + state <= budget:
                    return tiled(history, state, tile)
    state = _state_bytes(config, by_name, height, width, histories[-1])
    smallest = tile_bytes(_TILE_SIZES[-1]) + state
    raise ConfigError(
        f"level {level + 1} ({width}x{height}) needs about {_size(smallest)} even in {_TILE_SIZES[-1]}-px tiles "
        f"(the optimiser state alone is {_size(state)}), more than the {_size(budget)} "
        "budget; lower --size, use --optimizer adam, or raise --max-memory", field="max_memory")
