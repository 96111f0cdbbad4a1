"""Rendering: the pyramid loop, its inputs and targets, the memory planner with its tile
geometry, and the (tiled) evaluation of any objective on any backend."""

from ._color import match_color_histogram, match_luminance_colors, palette_content, rgb_to_yiq, transfer_style_colors
from ._evaluate import evaluate, features_over_windows, statistics_over_windows
from ._inputs import LevelInputs, RenderInputs, crop_to_frame, initial_image, level_inputs, prepare_inputs
from ._loop import LevelState, RenderClock, RenderEvent, RenderResult, carry_adam_state, plan_for, render, render_level
from ._planner import LevelPlan, RenderPlan, default_budget, plan_render, plan_tiles, receptive_radius, tile_halo
from ._targets import ExtraTerms, TargetCache, build_objective, with_terms

__all__ = [
    "render", "render_level", "RenderClock", "RenderEvent", "RenderResult", "LevelState",
    "plan_for", "plan_render", "RenderPlan", "LevelPlan", "default_budget",
    "plan_tiles", "receptive_radius", "tile_halo",
    "evaluate", "features_over_windows", "statistics_over_windows",
    "TargetCache", "build_objective", "with_terms", "ExtraTerms",
    "RenderInputs", "LevelInputs", "prepare_inputs", "level_inputs", "initial_image", "crop_to_frame",
    "match_luminance_colors", "match_color_histogram", "palette_content", "transfer_style_colors", "rgb_to_yiq",
    "carry_adam_state",
]
