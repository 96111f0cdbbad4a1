"""Numbered frame sequences as compositors name them: ``plate.####.exr`` (Nuke's hashes, one per
digit of padding) or ``plate.%04d.exr`` (printf), frame numbers kept from input to output
(a shot that starts at 1001 renders to 1001), a range of a shot (``1001-1050``), and missing
frames reported by number before any work."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError, ImageError

__all__ = ["FrameSequence", "find_sequence", "frame_path", "is_sequence", "parse_frame_range", "printf_pattern"]

#: One frame-number field: a run of hashes, or a printf integer (%d, %4d, %04d).
_FIELD = re.compile(r"#+|%0?\d*d")


def is_sequence(pattern: str | os.PathLike) -> bool:
    """Whether the file name holds exactly one frame-number field (the folders none)."""
    path = Path(pattern)
    return len(_FIELD.findall(path.name)) == 1 and not _FIELD.search(str(path.parent))


def printf_pattern(pattern: str | os.PathLike) -> str:
    """``plate.####.exr`` -> ``plate.%04d.exr``; a printf pattern as it is."""
    return _FIELD.sub(lambda m: f"%0{len(m.group(0))}d" if m.group(0).startswith("#") else m.group(0), str(pattern))


def frame_path(pattern: str | os.PathLike, number: int) -> Path:
    """The file of frame ``number`` in a sequence pattern (either spelling)."""
    return Path(printf_pattern(pattern) % number)


def _padding(field: str) -> int:
    if field.startswith("#"):
        return len(field)
    digits = field[1:-1]
    return int(digits) if digits.startswith("0") and digits else 1


def parse_frame_range(text: str | None) -> tuple[int, int] | None:
    """``1001-1050`` -> (1001, 1050), ``1001`` -> (1001, 1001); None for None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", str(text))
    if match is None:
        raise ConfigError(f"{text!r} is not a frame range; give FIRST-LAST (1001-1050) or one frame", field="frames")
    first, last = int(match.group(1)), int(match.group(2) if match.group(2) is not None else match.group(1))
    if last < first:
        raise ConfigError(f"{text!r} ends before it starts", field="frames")
    return first, last


def _spans(numbers: list[int]) -> str:
    """1003, 1007-1009: numbers as runs."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class FrameSequence:
    """A sequence's ``files`` and their frame ``numbers``, in order, from ``pattern``."""

    pattern: str
    files: tuple[Path, ...]
    numbers: tuple[int, ...]


def find_sequence(pattern: str | os.PathLike, frames: tuple[int, int] | None = None) -> FrameSequence:
    """The frames on disk of ``pattern`` (``plate.####.exr`` or ``plate.%04d.exr``), within
    ``frames`` (first, last) if given. ImageError when none exist, or naming the missing frames
    by number: a gap between the first and last found (or in the range asked for)."""
    path = Path(pattern)
    folder = path.parent
    field = _FIELD.search(path.name)
    assert field is not None, "find_sequence needs a sequence pattern (is_sequence)"
    head, tail = path.name[:field.start()], path.name[field.end():]
    name = re.compile(re.escape(head) + r"(-?\d{%d,})" % _padding(field.group(0)) + re.escape(tail) + r"\Z")
    found: dict[int, Path] = {}
    try:
        entries = list(os.scandir(folder if str(folder) else "."))
    except OSError as error:
        raise ImageError(folder, f"cannot list the folder of {pattern} ({error.strerror or error})") from None
    for entry in entries:
        match = name.match(entry.name)
        if match is not None and entry.is_file():
            found.setdefault(int(match.group(1)), folder / entry.name)
    if frames is not None:
        found = {number: file for number, file in found.items() if frames[0] <= number <= frames[1]}
    if not found:
        where = f" in frames {frames[0]}-{frames[1]}" if frames is not None else ""
        raise ImageError(Path(pattern), f"no frames{where}")
    first, last = frames if frames is not None else (min(found), max(found))
    missing = [number for number in range(first, last + 1) if number not in found]
    if missing:
        raise ImageError(Path(pattern), f"missing frames {_spans(missing)} (of {first}-{last}; "
                                        f"{len(found)} found)")
    numbers = sorted(found)
    return FrameSequence(str(pattern), tuple(found[number] for number in numbers), tuple(numbers))
