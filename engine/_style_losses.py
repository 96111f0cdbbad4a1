"""The style losses' names: the registry each loss's own file fills (``objectives.register_style_loss``).

The core keeps only the names and the torch-free facts the configuration reads (which method a
loss belongs to, the layers it reads by default on each architecture); the declaration itself,
with how the loss builds its target and term, its guided variant, reach and memory, is
``objectives.StyleLoss``. Config, targets, regions and the memory planner all read this one
registry: a loss that is not registered is an error naming the registered ones, never a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ._errors import check_choice

__all__ = ["StyleLossEntry", "register_entry", "registered_entry", "style_loss_names", "unregister_entry"]


class StyleLossEntry(Protocol):
    """What the core reads of a registered loss."""

    @property
    def name(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def default_layers(self) -> Mapping[str, tuple[str, ...]]: ...


_ENTRIES: dict[str, StyleLossEntry] = {}


def register_entry(entry: StyleLossEntry) -> None:
    """Add a loss; a second, different loss under a registered name is refused."""
    known = _ENTRIES.get(entry.name)
    if known is not None and known is not entry:
        raise ValueError(f"a style loss named {entry.name!r} is already registered")
    _ENTRIES[entry.name] = entry


def unregister_entry(name: str) -> None:
    """Remove a loss (tests that register a toy loss clean up with this)."""
    _ENTRIES.pop(name, None)


def style_loss_names(method: str = "gram") -> tuple[str, ...]:
    """The registered losses of ``method``, in registration order."""
    return tuple(name for name, entry in _ENTRIES.items() if entry.method == method)


def registered_entry(name: str, *, method: str = "gram", field: str = "style_loss") -> StyleLossEntry:
    """The loss registered as ``name`` for ``method``; ConfigError with the valid list otherwise."""
    check_choice(field, name, style_loss_names(method))
    return _ENTRIES[name]
