"""VideoConfig: the options a shot adds to a render's (temporal term, flow, later frames'
schedule, encoding). The render's own options stay in RenderConfig, unchanged."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .._errors import ConfigError, check_choice
from ._encode import CODECS, CRF_RANGES, check_fps
from ._flow import FLOW_PRESETS

__all__ = ["VideoConfig"]


@dataclass(frozen=True, kw_only=True)
class VideoConfig:
    """How a shot is rendered beyond each frame's RenderConfig.

    ``temporal_weight``: weight of Ruder et al.'s temporal term (0: frames independent, each
    rendered as ``render`` would, from its own content). ``frame_iterations``: iterations of
    each frame after the first, one level at the output size from the previous frame warped
    (None: the render's last level's count). ``flow_preset``: DIS preset. ``fps``: the output
    video's frame rate (None: the input video's, or 24 for frames). ``codec`` (None: the
    container's default) and ``crf``: its encoding."""

    temporal_weight: float = 5e3
    frame_iterations: int | None = None
    flow_preset: str = "medium"
    fps: float | None = None
    codec: str | None = None
    crf: int = 18

    def __post_init__(self) -> None:
        # A manifest or a TOML file may give any type: each is checked before any arithmetic.
        for name, kinds, optional in (("temporal_weight", (int, float), False), ("frame_iterations", (int,), True),
                                      ("fps", (int, float), True), ("crf", (int,), False)):
            value = getattr(self, name)
            if (value is None and not optional) or (value is not None and (
                    isinstance(value, bool) or not isinstance(value, kinds))):
                kind = "an integer" if kinds == (int,) else "a number"
                raise ConfigError(f"must be {kind}, got {value!r}", field=name)
        for name in ("flow_preset", "codec"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"must be a string, got {value!r}", field=name)
        if not (math.isfinite(self.temporal_weight) and 0 <= self.temporal_weight <= 1e30):
            raise ConfigError(f"must be a finite number >= 0, got {self.temporal_weight}", field="temporal_weight")
        if self.frame_iterations is not None and self.frame_iterations < 1:
            raise ConfigError(f"must be at least 1, got {self.frame_iterations}", field="frame_iterations")
        check_choice("flow_preset", self.flow_preset, FLOW_PRESETS)
        if self.fps is not None and not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise ConfigError(f"must be in (0, 1000], got {self.fps}", field="fps")
        if self.fps is not None:
            check_fps(self.fps)
        if self.codec is not None:
            check_choice("codec", self.codec, CODECS)
        low, high = CRF_RANGES.get(self.codec or "", (0, 63))  # no codec yet: the output's suffix decides
        if not low <= self.crf <= high:
            raise ConfigError(f"must be in [{low}, {high}]{f' for {self.codec}' if self.codec else ''}, got {self.crf}",
                              field="crf")

    @property
    def temporal(self) -> bool:
        return self.temporal_weight > 0

    def pixel_options(self) -> dict[str, Any]:
        """The options that decide a frame's pixels (what its hash covers; encoding does not)."""
        values = asdict(self)
        return {key: values[key] for key in ("temporal_weight", "frame_iterations", "flow_preset")}
