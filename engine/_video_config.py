"""VideoConfig: the options a shot adds to a render's (temporal term, flow, later frames'
schedule, encoding). The render's own options stay in RenderConfig, unchanged.

It sits in the engine's core, without torch, video or OpenCV, beside RenderConfig: the command
line shows its defaults in ``video --help`` without loading any of them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fractions import Fraction

from ._errors import ConfigError, check_choice

__all__ = ["CODECS", "CRF_RANGES", "FLOW_PRESETS", "VideoConfig", "check_fps", "frame_rate"]

#: Codecs --codec accepts, and the containers each fits.
CODECS = {"libx264": (".mp4", ".mov", ".mkv"), "libx265": (".mp4", ".mov", ".mkv"),
          "libvpx-vp9": (".webm", ".mkv", ".mp4"), "ffv1": (".mkv",), "prores_ks": (".mov", ".mkv")}
#: The codecs that take --crf, and their scales (x264 and x265 end at 51 for 8-bit video).
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63)}
#: Largest denominator of a frame rate as the container stores it (29.97 is 30000/1001).
_RATE_DENOMINATOR = 1001
#: DIS presets, fastest first. The default is chosen in benchmarks/bench_video.py (see RESULTS.md).
FLOW_PRESETS = ("ultrafast", "fast", "medium")


def frame_rate(fps: float) -> Fraction:
    """``fps`` as the rational rate the video is written at."""
    return Fraction(fps).limit_denominator(_RATE_DENOMINATOR)


def check_fps(fps: float) -> float:
    """``fps`` if the container can store it: 0.0001 would round to a rate of 0, which FFmpeg
    replaces by 24 without a word."""
    rate = frame_rate(fps)
    if rate <= 0 or abs(float(rate) - fps) > 1e-3 * fps:
        raise ConfigError(f"{fps:g} frames per second cannot be stored (the nearest rate with a denominator up "
                          f"to {_RATE_DENOMINATOR} is {rate}); use at least {1 / _RATE_DENOMINATOR:.4g}", field="fps")
    return fps


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
