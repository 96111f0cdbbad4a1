"""Memory planner: estimate a level's peak memory, choose untiled or the tile size, or refuse.

The estimate counts what one evaluation keeps alive on the torch backend in fp32: every ReLU and
pool output up to the deepest tap (autograd saves them, and each convolution's input is one of
them), max-pool indices (int64), the two largest gradient buffers of the backward, plus the
optimiser's state over the whole image (L-BFGS: two vectors per history entry) and the image,
its gradient and the content target. Tiled, the activations are those of one crop (tile plus
halo on each side). The budget is ``max_memory`` or most of what is free (GPU memory, or the
system's available RAM on CPU).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from collections.abc import Sequence

from ._backbone import FeatureInfo, layer_infos
from ._config import RenderConfig
from ._errors import ConfigError
from ._tiling import receptive_radius
from ._weights import MODELS

__all__ = ["LevelPlan", "RenderPlan", "default_budget", "parse_bytes", "plan_render"]

_TILE_SIZES = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64)
_GIB = 1024**3


def _size(count: float) -> str:
    return f"{count / _GIB:.1f} GiB" if count >= _GIB / 2 else f"{count / 1024**2:.0f} MiB"


def parse_bytes(text: str) -> int:
    """'16G', '512MB', '1.5GiB' or a plain number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise ConfigError(f"--max-memory: {text!r} is not a size such as 16G or 512M")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


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
    h, w = height, width
    for info in layers:
        if info.kind == "pool":
            h, w = h // 2, w // 2
            kept += info.channels * h * w * (4 + 8)  # the output, and int64 indices
        else:
            elements = info.channels * h * w
            largest = max(largest, elements)
            if info.kind == "relu":
                kept += elements * 4
    return kept + 2 * largest * 4 + 3 * height * width * 4


@dataclass(frozen=True)
class LevelPlan:
    level: int
    height: int
    width: int
    tile_size: int  # 0: untiled
    tiles: int
    activation_bytes: int
    state_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.state_bytes


@dataclass(frozen=True)
class RenderPlan:
    device: str
    budget_bytes: int
    levels: tuple[LevelPlan, ...]

    def describe(self) -> str:
        lines = [f"memory plan on {self.device}, budget {_size(self.budget_bytes)}:"]
        for plan in self.levels:
            how = "untiled" if plan.tile_size == 0 else f"{plan.tiles} tiles of {plan.tile_size} px"
            lines.append(f"  level {plan.level + 1}: {plan.width}x{plan.height}, {how}, about "
                         f"{_size(plan.total_bytes)} ({_size(plan.activation_bytes)} activations + "
                         f"{_size(plan.state_bytes)} image, optimiser and targets)")
        return "\n".join(lines)


def _state_bytes(config: RenderConfig, layers: dict[str, FeatureInfo], height: int, width: int) -> int:
    pixels = 3 * height * width * 4
    history = 2 * config.lbfgs_history if config.optimizer == "lbfgs" else 2
    content = sum(layers[name].channels * (height // layers[name].stride) * (width // layers[name].stride) * 4
                  for name in config.content_layers)
    return (history + 4) * pixels + content


def plan_render(config: RenderConfig, shapes: list[tuple[int, int]], device: torch.device,
                budget: int | None = None) -> RenderPlan:
    """A plan for every level's (height, width); raises ConfigError, with the figures, when a
    level cannot fit the budget even in the smallest tiles."""
    budget = budget if budget is not None else default_budget(device)
    every = layer_infos(MODELS[config.model].arch)
    deepest = max(index for index, info in enumerate(every) if info.name in config.taps)
    layers = every[: deepest + 1]
    by_name = {info.name: info for info in layers}
    halo = -(-receptive_radius(layers) // 16) * 16
    plans = []
    for level, (height, width) in enumerate(shapes):
        state = _state_bytes(config, by_name, height, width)
        untiled = activation_bytes(layers, height, width)
        forced = config.tile_size
        if forced == 0 and untiled + state <= budget:
            plans.append(LevelPlan(level, height, width, 0, 1, untiled, state))
            continue
        if config.method != "gram":
            raise ConfigError(
                f"level {level + 1} ({width}x{height}) needs about {_size(untiled + state)}, more than "
                f"the {_size(budget)} budget, and MRF renders cannot be tiled yet; lower --size or "
                "raise --max-memory")
        candidates = (forced,) if forced else _TILE_SIZES
        for tile in candidates:
            crop_h, crop_w = min(height, tile + 2 * halo), min(width, tile + 2 * halo)
            tiled = activation_bytes(layers, crop_h, crop_w)
            if forced or tiled + state <= budget:
                count = -(-height // tile) * -(-width // tile)
                plans.append(LevelPlan(level, height, width, tile, count, tiled, state))
                break
        else:
            smallest = activation_bytes(layers, min(height, 64 + 2 * halo), min(width, 64 + 2 * halo)) + state
            raise ConfigError(
                f"level {level + 1} ({width}x{height}) needs about {_size(smallest)} even in 64-px tiles "
                f"(the optimiser state alone is {_size(state)}), more than the {_size(budget)} "
                "budget; lower --size or --lbfgs-history, use --optimizer adam, or raise --max-memory")
    return RenderPlan(str(device), budget, tuple(plans))
