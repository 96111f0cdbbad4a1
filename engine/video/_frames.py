"""A shot's input frames: a video file (decoded with PyAV) or image files (a folder or a glob),
checked once before any work: every frame decodes, there is at least one, all share one size.

Checking decodes every frame (cheap beside rendering one) and keeps only each frame's digest, so
a long shot is never held in memory; ``FrameSource.frames()`` decodes them again as they render.
An EXR frame is a plate (``_plate``): ``FrameSource.plates()`` reads it in the shot's colour space
through its view, and keeps what its output keeps (residual, alpha, windows, pixel type).
"""

from __future__ import annotations

import glob as globbing
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ConfigError, ImageError
from .._exr import read_exr
from .._image import DEFAULT_MAX_PIXELS, load_image
from .._plate import Plate, read_plate
from ._deps import require
from ._sequence import find_sequence, is_sequence

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "FrameSource", "open_frames"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
#: What a folder of frames may hold (other files in it are ignored).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")


@dataclass(frozen=True)
class FrameSource:
    """The frames of a shot, checked: ``files`` in order (None for a video ``path``), their
    ``width`` x ``height``, the video's ``fps`` (None for files), whether it has audio, and the
    sha256 of each frame's decoded pixels (what decides its render): for an EXR, of the file
    itself, since its scene values, alpha, windows and header all reach the output frame."""

    path: Path
    files: tuple[Path, ...] | None
    width: int
    height: int
    digests: tuple[str, ...]
    fps: float | None = None
    has_audio: bool = False
    announced: int | None = None  # frames a video's header announces (None: it does not say, or files)
    numbers: tuple[int, ...] | None = None  # a numbered sequence's frame numbers (None: counted from 1)

    @property
    def count(self) -> int:
        return len(self.digests)

    @property
    def is_video(self) -> bool:
        return self.files is None

    @property
    def has_plates(self) -> bool:
        """Whether any frame is an EXR (scene-referred: read and written through OCIO)."""
        return self.files is not None and any(_is_exr(path) for path in self.files)

    def frames(self, *, colorspace: str | None = None, view: str | None = None) -> Iterator[torch.Tensor]:
        """Each frame (3, H, W) float32 in [0, 1], in order (an EXR's as ``plates`` shows it)."""
        for image, _ in self.plates(colorspace=colorspace, view=view):
            yield image

    def plates(self, *, colorspace: str | None = None, view: str | None = None,
               size: int | tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, Plate | None]]:
        """Each frame (3, H, W) float32 in [0, 1], in order, with its Plate where it is an EXR
        (read in ``colorspace`` through ``view`` for a render at ``size``, as ``read_plate``: the
        frame is its display values) and None for any other frame."""
        if self.files is not None:
            for path in self.files:
                if _is_exr(path):
                    plate = read_plate(path, colorspace=colorspace, view=view, max_pixels=self.width * self.height,
                                       size=size)
                    yield plate.display, plate
                else:
                    yield load_image(path, max_pixels=self.width * self.height), None
            return
        for _, array in _decode(self.path):
            yield _to_tensor(array), None


def _is_exr(path: Path) -> bool:
    return path.suffix.lower() == ".exr"


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0


def _digest(frame: torch.Tensor) -> str:
    return hashlib.sha256(frame.contiguous().numpy().tobytes()).hexdigest()


def _natural(path: Path) -> list:
    """Sort key: frame2 before frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _frame_files(source: Path, exclude: Callable[[Path], bool] | None = None) -> list[Path] | None:
    """The frame files of a folder or a glob, in order (without those ``exclude`` names); None
    if ``source`` is neither."""
    text = str(source)
    if source.is_dir():
        found = [p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif globbing.has_magic(text):
        found = [Path(p) for p in globbing.glob(text) if Path(p).is_file()]
    else:
        return None
    return sorted((p for p in found if exclude is None or not exclude(p)), key=_natural)


def open_frames(source: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                frames: tuple[int, int] | None = None, exclude: Callable[[Path], bool] | None = None,
                allow_short: bool = False) -> FrameSource:
    """Check a shot's input (a video file, a folder of frames, a glob, or a numbered sequence
    such as ``plate.####.exr``: only ``frames`` (first, last) of it if given) and describe it.

    ``exclude``: frame files that are not input (a shot's own output frames, ``FrameStore.owns``,
    when its output pattern lies in the input folder). A video that decodes to fewer frames than
    its header announces (cut short, damaged) is refused unless ``allow_short``.

    Raises ImageError naming the file and the problem: not found, not a video, no frames,
    missing frames of a sequence (by number), a frame that does not decode, fewer frames than
    announced, frames of different sizes, frames with too many pixels."""
    source = Path(source)
    if is_sequence(source):
        sequence = find_sequence(source, frames)
        return _check_files(source, list(sequence.files), max_pixels, sequence.numbers)
    if frames is not None:
        raise ConfigError(f"{source}: a range of frames needs a numbered sequence (plate.####.exr or "
                          "plate.%04d.exr)", field="frames")
    files = _frame_files(source, exclude)
    if files is None:
        if not source.exists():
            raise ImageError(source, "no such file or folder")
        return _open_video(source, max_pixels, allow_short)
    if not files:
        what = "matches no files" if globbing.has_magic(str(source)) else \
            f"holds no frames ({', '.join(IMAGE_SUFFIXES)} files)"
        raise ImageError(source, what)
    return _check_files(source, files, max_pixels)


def _check_files(source: Path, files: list[Path], max_pixels: int,
                 numbers: tuple[int, ...] | None = None) -> FrameSource:
    digests, size = [], None
    for path in files:
        if _is_exr(path):  # no colour conversion yet: the shot's colour options are render_shot's
            exr = read_exr(path, max_pixels=max_pixels)  # ImageError names the frame's file
            shape, digest = (exr.width, exr.height), hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            frame = load_image(path, max_pixels=max_pixels)  # ImageError names the frame's file
            shape, digest = (frame.shape[-1], frame.shape[-2]), _digest(frame)
        if size is None:
            size = shape
        elif shape != size:
            raise ImageError(path, f"is {shape[0]}x{shape[1]}, the first frame ({files[0].name}) {size[0]}x{size[1]}: "
                                   "every frame must be the same size")
        digests.append(digest)
    assert size is not None
    return FrameSource(source, tuple(files), size[0], size[1], tuple(digests), numbers=numbers)


def _decode(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, (H, W, 3) uint8 RGB) of each frame of a video; ImageError where it fails."""
    av = require("av")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise ImageError(path, f"not a video PyAV can read ({error})") from None
    with container:
        if not container.streams.video:
            raise ImageError(path, "has no video stream")
        index = 0
        try:
            for frame in container.decode(video=0):
                yield index, frame.to_ndarray(format="rgb24")
                index += 1
        except av.error.FFmpegError as error:
            raise ImageError(path, f"frame {index + 1} cannot be decoded ({error})") from None


def _announced_frames(container: Any) -> tuple[int | None, int]:
    """(frames the header announces, how many fewer decoded frames still count as all): the
    stream's frame count where the container keeps one (mp4, mov), else its duration times its
    rate (Matroska, WebM), which may round one frame either way."""
    stream = container.streams.video[0]
    if stream.frames:
        return int(stream.frames), 0
    rate = stream.average_rate or stream.guessed_rate
    if container.duration and rate:
        return round(container.duration / 1_000_000 * float(rate)), 1
    return None, 0


def _open_video(path: Path, max_pixels: int, allow_short: bool = False) -> FrameSource:
    av = require("av")
    digests, size = [], None
    for index, array in _decode(path):
        shape = (array.shape[1], array.shape[0])
        if size is None:
            size = shape
            if shape[0] * shape[1] > max_pixels:
                raise ImageError(path, f"frames are {shape[0]}x{shape[1]}, more than {max_pixels} pixels")
        elif shape != size:
            raise ImageError(path, f"frame {index + 1} is {shape[0]}x{shape[1]}, frame 1 {size[0]}x{size[1]}: "
                                   "every frame must be the same size")
        digests.append(_digest(_to_tensor(array)))
    if size is None:
        raise ImageError(path, "has no frames")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        has_audio = bool(container.streams.audio)
        announced, slack = _announced_frames(container)
    if announced is not None and len(digests) < announced - slack and not allow_short:
        raise ImageError(path, f"decoded {len(digests)} of the {announced} frames its header announces (cut short or "
                               f"damaged); pass --allow-short-input to render the {len(digests)} decoded")
    return FrameSource(path, None, size[0], size[1], tuple(digests), fps=fps, has_audio=has_audio, announced=announced)
