"""Where a shot's finished frames live, and what says a frame is finished.

Every frame is written atomically (save_image) with the hash of everything that decides its
pixels, chained through the frames before it (each frame starts from its predecessor's render):
a frame whose file holds its hash is finished, so a killed render resumes at the first frame
that does not. The frames are the output's own pattern (``out/%05d.png``, ``out.####.exr``:
numbered as the input sequence's frames are, 1001 to 1001), or, for a video
output, a work folder beside it (``out.mp4.frames/``) that the video is encoded from at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._errors import ConfigError, ImageError
from .._files import OutputLocked, exclusive_lock
from .._image import check_output_path, load_image, read_metadata, save_image
from .._plate import Plate
from ._encode import CONTAINERS
from ._sequence import printf_pattern

__all__ = ["FrameStore", "chain_digests", "frame_store"]

_HASH_KEY = "frame_hash"
#: One printf integer field: %d, %5d, %05d.
_FIELD = re.compile(r"%0?\d*d")


@dataclass(frozen=True)
class FrameStore:
    """Frames through ``pattern`` (a printf pattern with one integer field), numbered as
    ``numbers`` (the input sequence's frame numbers) or from 1."""

    pattern: str
    video: Path | None = None  # the video encoded from them at the end, if any
    numbers: tuple[int, ...] | None = None

    def number(self, index: int) -> int:
        """The frame number of frame ``index`` (counted from 0)."""
        return self.numbers[index] if self.numbers is not None else index + 1

    def numbered(self, numbers: tuple[int, ...] | None) -> "FrameStore":
        """This store with the input's frame numbers (a video's frame folder keeps counting from 1)."""
        return self if self.video is not None else replace(self, numbers=numbers)

    def path(self, index: int) -> Path:
        """The file of frame ``index`` (counted from 0)."""
        return Path(_FIELD.sub(lambda m: m.group(0) % self.number(index), self.pattern, count=1))

    def digest(self, index: int) -> str | None:
        """The hash frame ``index``'s file holds (None: no file, or not one of ours)."""
        return _held_hash(self.path(index))

    @property
    def output(self) -> Path:
        """What the user named: the video, or the frame pattern."""
        return self.video if self.video is not None else Path(self.pattern)

    def owns(self, path: str | Path) -> bool:
        """Whether ``path`` is one of this store's frame files (any frame number) as a shot wrote
        it (it holds a frame hash): a shot whose output pattern lies in its input folder must not
        read its own frames as input. A user's frame that only matches the pattern is not owned:
        it stays input, and check_shot refuses to write over it."""
        pattern = Path(self.pattern)
        name = re.escape(pattern.name)
        field = _FIELD.search(name)
        assert field is not None
        regex = name[:field.start()] + r" *\d+" + name[field.end():]  # %5d pads with spaces
        path = Path(path)
        return (re.fullmatch(regex, path.name) is not None and path.parent.resolve() == pattern.parent.resolve()
                and _held_hash(path) is not None)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this output against a second writer (another ``styleforge video`` or batch job
        to the same output) for the block, or raise ImageError at once, before any work: two
        shots into one output would mix their frames. A killed holder's lock is dropped by the
        kernel, so a rerun after kill -9 is never refused."""
        output = self.output
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive_lock(output.parent / f".{output.name}.lock"):
                yield
        except OutputLocked as locked:
            holder = f" (process {locked.holder})" if locked.holder is not None else ""
            raise ImageError(output, f"is being written by another styleforge{holder}; wait for it to finish, "
                                     "or stop it") from None

    def write(self, index: int, image: torch.Tensor, digest: str, metadata: dict[str, Any], *,
              plate: Plate | None = None, colorspace: str | None = None, view: str | None = None) -> Path:
        """Frame ``index``'s file, atomically, holding ``digest``. An EXR frame goes back as
        ``save_image`` writes a render: into ``plate``'s colour space (or ``colorspace``) with
        its residual, alpha and windows, or without a plate the inverse of ``view``."""
        path = self.path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_image(image, path, metadata={**metadata, _HASH_KEY: digest, "frame": self.number(index)},
                          overwrite=True, recover=True, plate=plate, colorspace=colorspace, view=view)

    def read(self, index: int, *, colorspace: str | None = None, view: str | None = None) -> torch.Tensor:
        """Frame ``index`` as written, (3, H, W) in [0, 1]: an EXR seen through ``view`` from
        ``colorspace`` (the colour space it was written in), as the shot's frames are."""
        return load_image(self.path(index), colorspace=colorspace, view=view)


def _held_hash(path: Path) -> str | None:
    """The frame hash a file holds (None: no file, or not a shot's frame)."""
    if not path.is_file():
        return None
    try:
        metadata = read_metadata(path)
    except ImageError:
        return None
    return metadata.get(_HASH_KEY) if isinstance(metadata, dict) else None


def frame_store(output: str | Path) -> FrameStore:
    """The store of an output: a video (frames in ``OUTPUT.frames/%05d.png``) or a frame pattern
    (``out/%05d.png``, or with hashes: ``out.####.exr``); ``FrameStore.numbered`` gives it the
    input's frame numbers."""
    text = printf_pattern(output)
    suffix = Path(text).suffix.lower()
    if suffix in CONTAINERS:
        return FrameStore(str(Path(f"{text}.frames") / "%05d.png"), video=Path(text))
    fields = _FIELD.findall(Path(text).name)
    if len(fields) != 1 or "%" in _FIELD.sub("", Path(text).name) or "%" in str(Path(text).parent):
        raise ConfigError(f"{text}: the output is a video ({', '.join(CONTAINERS)}) or a frame pattern with one "
                          "number field in its name, such as out/%05d.png or out.####.exr", field="output")
    store = FrameStore(text)
    check_output_path(store.path(0), overwrite=True, probe=False, make_folders=True)  # the format: .png, .jpg or .tif
    return store


def chain_digests(shot: dict[str, Any], frame_digests: list[str] | tuple[str, ...]) -> list[str]:
    """Each frame's hash: the shot's parameters, its input pixels and the previous frame's hash."""
    base = hashlib.sha256(json.dumps(shot, sort_keys=True, default=str).encode()).hexdigest()
    digests, previous = [], base
    for frame in frame_digests:
        previous = hashlib.sha256(f"{previous}:{frame}".encode()).hexdigest()
        digests.append(previous)
    return digests
