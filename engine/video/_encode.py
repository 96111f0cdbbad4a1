"""Encode finished frames into a video with PyAV, atomically, carrying the input's audio over."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .._errors import ConfigError
from .._files import atomic_write
from .._video_config import CODECS, CRF_RANGES, check_fps, frame_rate
from ._deps import require

__all__ = ["CODECS", "CONTAINERS", "CRF_RANGES", "check_codec", "check_encoding", "check_fps", "encode_video",
           "encoding_mark", "frame_rate", "video_digest"]

#: The container comment that marks a video as a shot's, with its last frame's hash.
_MARK = "styleforge frame_hash "

#: Output suffix -> (FFmpeg container, default codec).
CONTAINERS = {".mp4": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".mkv": ("matroska", "libx264"),
              ".webm": ("webm", "libvpx-vp9")}
_PIXEL_FORMATS = {"ffv1": "rgb24", "prores_ks": "yuv422p10le"}


def check_codec(output: Path, codec: str | None) -> str:
    """The codec for ``output`` (the container's default, or ``codec`` if it fits)."""
    suffix = output.suffix.lower()
    if suffix not in CONTAINERS:
        raise ConfigError(f"{output}: a video output ends in {', '.join(CONTAINERS)}", field="output")
    if codec is None:
        return CONTAINERS[suffix][1]
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}", field="codec")
    if suffix not in CODECS[codec]:
        raise ConfigError(f"{codec} does not go in a {suffix} file; use {', '.join(CODECS[codec])}", field="codec")
    return codec


def check_encoding(output: Path, codec: str | None, crf: int, fps: float | None) -> str:
    """Before any work: the codec for ``output`` (see check_codec), a ``crf`` on that codec's
    scale, and an ``fps`` the container can store (``check_fps``). Returns the codec."""
    codec = check_codec(output, codec)
    crf_range = CRF_RANGES.get(codec)
    if crf_range is not None and not crf_range[0] <= crf <= crf_range[1]:
        raise ConfigError(f"{codec}'s scale is {crf_range[0]} to {crf_range[1]}, got {crf}", field="crf")
    if fps is not None:
        check_fps(fps)
    return codec


def encoding_mark(frames_digest: str, *, codec: str, crf: int, fps: float) -> str:
    """What a finished video is marked with: its last frame's hash and how it was encoded, so a
    rerun with another --fps, --codec or --crf encodes it again (from the same frames)."""
    used_crf = crf if codec in CRF_RANGES else None
    return f"{frames_digest} codec={codec} crf={used_crf} fps={frame_rate(fps)}"


def _even(array: np.ndarray, pixel_format: str) -> np.ndarray:
    """4:2:0 and 4:2:2 need an even width (and 4:2:0 an even height): repeat the last column/row."""
    if pixel_format == "rgb24":
        return array
    pad_h = array.shape[0] % 2 if pixel_format.startswith("yuv420") else 0
    pad_w = array.shape[1] % 2
    return np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else array


def encode_video(frames: Sequence[Path], output: Path, *, fps: float, codec: str | None = None, crf: int = 18,
                 audio_from: Path | None = None, overwrite: bool = False, comment: str | None = None) -> Path:
    """Encode ``frames`` (image files, one size) into ``output`` at ``fps``; ``crf``: quality for
    x264/x265/VP9 (lower is better, 18 about visually lossless for x264). The audio streams of
    ``audio_from`` are copied as they are (no re-encoding). ``comment``: a hash kept in the
    container's metadata (``video_digest`` reads it back). Written through a temporary file and a
    rename: a reader never sees half a video, and an existing file is kept unless ``overwrite``."""
    av = require("av")
    codec = check_encoding(output, codec, crf, fps)
    container_format = CONTAINERS[output.suffix.lower()][0]
    rate = frame_rate(fps)

    def write(temporary: Path) -> None:
        with av.open(str(temporary), "w", format=container_format) as out:
            if comment is not None:
                out.metadata["comment"] = _MARK + comment
            stream = out.add_stream(codec, rate=rate)
            stream.pix_fmt = _PIXEL_FORMATS.get(codec, "yuv420p")
            if codec in ("libx264", "libx265", "libvpx-vp9"):
                stream.options = {"crf": str(crf), **({"b": "0"} if codec == "libvpx-vp9" else {})}
            source = av.open(str(audio_from)) if audio_from is not None else None
            try:
                audio = {}
                if source is not None:
                    for track in source.streams.audio:
                        audio[track.index] = out.add_stream_from_template(track)
                for index, path in enumerate(frames):
                    array = _even(np.asarray(Image.open(path).convert("RGB")), stream.pix_fmt)
                    if index == 0:
                        stream.height, stream.width = array.shape[:2]
                    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
                    out.mux(stream.encode(frame))
                out.mux(stream.encode())
                if source is not None and audio:
                    for packet in source.demux(*source.streams.audio):
                        if packet.dts is None:
                            continue
                        packet.stream = audio[packet.stream.index]
                        out.mux(packet)
            finally:
                if source is not None:
                    source.close()

    os.makedirs(output.parent, exist_ok=True)
    return atomic_write(output, write, replace=overwrite,
                        exists_error=lambda: ConfigError(f"{output} exists; pass --overwrite to replace it",
                                                         field="output"))


def video_digest(path: Path) -> str | None:
    """The mark ``encode_video`` gave ``path`` (``encoding_mark``'s; None: no file, or not one of
    ours); its first word is the last frame's hash."""
    if not path.is_file():
        return None
    av = require("av")
    try:
        with av.open(str(path)) as container:
            comment = container.metadata.get("comment", "")
    except (av.error.FFmpegError, UnicodeDecodeError):
        return None
    return comment[len(_MARK):] if comment.startswith(_MARK) else None
