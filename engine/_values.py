"""How option values are written and read: one grammar each, shared by the API, TOML, manifests
and the command line (sizes, iteration schedules, memory amounts, typed values)."""

from __future__ import annotations

import math
import os
import re
import types
import typing
from typing import Any

from ._errors import ConfigError

__all__ = ["DEFAULT_MAX_PIXELS", "coerce", "coerce_path", "coerce_paths", "frame_crop", "frame_shape", "is_color",
           "parse_bytes", "parse_color", "parse_iterations", "parse_size"]

#: Refuse inputs larger than this many pixels (decompression bombs); 16K x 16K by default.
DEFAULT_MAX_PIXELS = 16384 * 16384


def parse_size(value: Any, *, field: str = "size") -> int | tuple[int, int]:
    """A long side (4096, "4096") or a frame ("3840x2160", [3840, 2160]) -> int or (w, h)."""
    size: int | tuple[int, int]
    if isinstance(value, bool):
        size = 0
    elif isinstance(value, int):
        size = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value):
        size = (value[0], value[1])
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?", value)):
        size = int(match.group(1)) if match.group(2) is None else (int(match.group(1)), int(match.group(2)))
    else:
        raise ConfigError(f"{value!r} is neither a long side such as 4096 nor a frame such as 3840x2160", field=field)
    if min((size,) if isinstance(size, int) else size) < 1:
        raise ConfigError(f"must be at least 1 pixel, got {value!r}", field=field)
    return size


def frame_shape(size: int | tuple[int, int], aspect: tuple[int, int] = (4, 3)) -> tuple[int, int]:
    """(height, width) of a size: a frame as given, a long side at ``aspect`` (landscape 4:3 by
    default: what benchmarks and exports use when no image gives the aspect)."""
    if isinstance(size, tuple):
        return size[1], size[0]
    return max(1, round(size * aspect[1] / aspect[0])), size


def frame_crop(height: int, width: int, size: int | tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of a ``height`` x ``width`` image that a size keeps: for a frame
    (w, h), the centre with its aspect (the frame is covered, never stretched); for a long side,
    all of it. The one place this cut is worked out: the render's inputs and an EXR plate's
    alpha and residual take the same pixels."""
    if not isinstance(size, tuple):
        return slice(0, height), slice(0, width)
    frame_w, frame_h = size
    if width * frame_h > height * frame_w:  # wider than the frame: crop the sides
        keep = max(1, round(height * frame_w / frame_h))
        left = (width - keep) // 2
        return slice(0, height), slice(left, left + keep)
    keep = max(1, round(width * frame_h / frame_w))
    top = (height - keep) // 2
    return slice(top, top + keep), slice(0, width)


def parse_iterations(value: Any) -> int | tuple[int, ...]:
    """500 (levels up to 1024 px; finer ones follow the decay) or one count per level: 500,200,100."""
    counts: list[Any]
    if isinstance(value, str):
        counts = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        counts = list(value)
    else:
        counts = [value]
    try:
        numbers = [int(count) if isinstance(count, str) else count for count in counts]
    except ValueError:
        numbers = []
    if not numbers or any(type(n) is not int or n < 1 for n in numbers):
        raise ConfigError(f"{value!r} is neither a count >= 1 nor a list of them such as 500,200,100",
                          field="iterations")
    return numbers[0] if len(numbers) == 1 and not isinstance(value, (list, tuple)) else tuple(numbers)


def parse_bytes(text: Any, *, field: str = "max_memory") -> int:
    """'16G', '512MB', '1.5GiB' or a plain number of bytes -> bytes (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if match is None or isinstance(text, bool):
        raise ConfigError(f"{text!r} is not a size such as 16G or 512M", field=field)
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2).upper()]
    amount = int(float(match.group(1)) * scale)
    if amount <= 0:
        raise ConfigError(f"must be more than 0 bytes, got {text!r}", field=field)
    return amount


def coerce_path(field: str, value: Any) -> str:
    """A file path as TOML, JSON, CSV or a flag gives it: a non-empty string without NUL bytes."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ConfigError(f"must be a path, got {value!r}", field=field)
    return value


def coerce_paths(field: str, value: Any, *, separator: str | None = None) -> tuple[str, ...]:
    """One path or a list of them (a CSV cell separates them with ``separator``)."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(separator)] if separator else [value]
        items = [item for item in items if item]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = None
    if not items or not all(isinstance(item, str) and item.strip() and "\0" not in item for item in items):
        raise ConfigError(f"must be a path or a list of paths, got {value!r}", field=field)
    return tuple(items)


_PARSERS = {"size": parse_size, "iterations": parse_iterations}


def coerce(field: str, value: Any, annotation: Any) -> Any:
    """Check and convert one value written in TOML, JSON, CSV or on the command line to a config
    field's type (lists become tuples, ints become floats); raises ConfigError naming the field."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"must be {expected}, got {value!r}", field=field)

    if field in _PARSERS:
        return _PARSERS[field](value)
    args = typing.get_args(annotation)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise fail("set")
    kind = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise fail("a list" if item is str else "a list of numbers")
        if item is str:
            if not all(isinstance(i, str) for i in items):
                raise fail("a list of layer names")
            return tuple(i.strip() for i in items if i.strip())
        try:
            numbers = tuple(float(i) for i in items if not isinstance(i, bool))
        except (TypeError, ValueError):
            raise fail("a list of numbers") from None
        if len(numbers) != len(items) or not all(math.isfinite(n) for n in numbers):
            raise fail("a list of finite numbers")
        return numbers
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind is int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            try:
                value = int(value)
            except ValueError:  # more digits than Python converts
                raise fail("an integer below 2**63") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        if abs(value) > 2**63 - 1:
            raise fail("an integer below 2**63")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise fail("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if isinstance(kind, types.UnionType) or kind is str:
        if not isinstance(value, str) or "\0" in value:
            raise fail("a string")
        return value
    raise fail(str(kind))


_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def is_color(spec: object) -> bool:
    """Whether a map spec is a flat ``#rrggbb`` colour rather than a path."""
    return isinstance(spec, str | os.PathLike) and _HEX.fullmatch(os.fspath(spec)) is not None


def parse_color(text: str, *, field: str) -> tuple[float, float, float]:
    """``#rrggbb`` -> (r, g, b) in [0, 1]; anything else is a ConfigError naming ``field``."""
    if not is_color(text):
        raise ConfigError(f"must be a colour written #rrggbb, got {text!r}", field=field)
    red, green, blue = (int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return red, green, blue
