"""Typed exceptions raised by the engine.

The engine never prints or exits: it raises one of these, and the CLI maps each to one clear line
on stderr and an exit code. Every message names the file or option at fault and the problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the errors load without torch (the CLI reports them before torch is imported)
    import torch


class StyleforgeError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(StyleforgeError):
    """The user gave something unusable: a bad file, option or value (CLI exit code 2)."""


class ImageError(InputError):
    """An image file cannot be read: the message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(InputError):
    """A render option has a value outside its domain.

    ``field`` is the option's name as the Python API and TOML spell it (``style_weight``); the
    message reads ``style_weight: <problem>``, and the CLI shows ``--style-weight: <problem>``
    when the value came from its flags. ``source`` names the file a value came from, if any.
    """

    def __init__(self, problem: str, *, field: str | None = None, source: str | None = None) -> None:
        self.problem, self.field, self.source = problem, field, source
        super().__init__(self.describe())

    def describe(self, field_name: str | None = None) -> str:
        """The message with the field spelt ``field_name`` (default: as in the Python API)."""
        parts = [part for part in (self.source, field_name or self.field) if part]
        return ": ".join([*parts, self.problem])


class WeightsError(StyleforgeError):
    """Model weights are missing, corrupt or cannot be fetched; the message says what to provide."""


class BackendUnavailableError(StyleforgeError):
    """A requested device or backend is not present; the message says what is missing."""


class RenderError(StyleforgeError):
    """The optimisation failed: a NaN or Inf in the loss or the image, or it diverged.

    ``field`` names the option to change (``learning_rate``), spelt as ConfigError's is: the
    message reads ``learning_rate: <problem>``, and the CLI shows ``--learning-rate: <problem>``.
    """

    def __init__(self, problem: str, *, field: str | None = None) -> None:
        self.problem, self.field = problem, field
        super().__init__(self.describe())

    def describe(self, field_name: str | None = None) -> str:
        """The message with the field spelt ``field_name`` (default: as in the Python API)."""
        return ": ".join(part for part in (field_name or self.field, self.problem) if part)


class OutputError(StyleforgeError):
    """A finished image could not be written where it was asked for. ``recovered`` is where it
    was kept instead (None if that failed too); the message says both."""

    def __init__(self, path: object, reason: str, recovered: object | None) -> None:
        kept = f"; the image was kept in {recovered}" if recovered is not None else "; the image could not be kept"
        super().__init__(f"{path}: {reason}{kept}")
        self.path, self.reason, self.recovered = path, reason, recovered


class RenderInterrupted(StyleforgeError):
    """The render was interrupted (Ctrl-C); carries the image as it stood (None from a video shot,
    whose finished frames are on disk: see ShotInterrupted)."""

    def __init__(self, image: torch.Tensor | None, iteration: int) -> None:
        super().__init__(f"interrupted at iteration {iteration}")
        self.image = image
        self.iteration = iteration


class StyleforgeWarning(UserWarning):
    """Something the engine did for the user that they should know of (a map's colours snapped,
    say). Issued with ``warnings.warn``: the engine never prints; the CLI shows each as one
    ``warning:`` line, and the Python API's callers see them as any warning."""


def check_choice(field: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError (for ``field``) with
    the valid list and a "did you mean" hint."""
    choices = list(choices)
    if value in choices:
        return value
    hint = difflib.get_close_matches(str(value), choices, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown value {value!r}{suggestion}; choose one of {', '.join(choices)}", field=field)
