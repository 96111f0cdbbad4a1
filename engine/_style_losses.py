"""The style losses' names: the registry each loss's own file fills (``objectives.register_style_loss``).

The core keeps only the names and the torch-free facts the configuration reads (which method a
loss belongs to, the layers it reads by default on each architecture); the declaration itself,
with how the loss builds its target and term, its guided variant, reach and memory, is
``objectives.StyleLoss``. The built-in losses' facts are also listed here (``BUILTIN``): the
engine loads torch and ``objectives`` only when a render needs them, and a config (or ``--help``)
must know the built-in names before that; each loss's file then registers its declaration over
its entry, which must agree with it. Config, targets, regions and the memory planner all read this one
registry: a loss that is not registered is an error naming the registered ones, never a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ._errors import check_choice

__all__ = ["BUILTIN", "NNST_LAYERS", "CoreEntry", "StyleLossEntry", "register_entry", "registered_entry",
           "style_loss_names", "unregister_entry"]


class StyleLossEntry(Protocol):
    """What the core reads of a registered loss."""

    @property
    def name(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def default_layers(self) -> Mapping[str, tuple[str, ...]]: ...


@dataclass(frozen=True)
class CoreEntry:
    """A built-in loss's torch-free facts, until its file registers the declaration."""

    name: str
    method: str = "gram"
    default_layers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_VGG_HYPERCOLUMNS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu4_1",
                     "relu4_2", "relu4_3")
#: NNST's hypercolumn layers per architecture: the paper's VGG16 conv layers r11 ... r43 (the same
#: names on VGG19, whose relu3_4 and relu4_4 are left out as VGG16 has no such layers); SqueezeNet:
#: every ReLU/fire output up to fire5 (stride 8), the same depth.
NNST_LAYERS: dict[str, tuple[str, ...]] = {"vgg16": _VGG_HYPERCOLUMNS, "vgg19": _VGG_HYPERCOLUMNS,
                                           "squeezenet1_1": ("relu1", "fire2", "fire3", "fire4", "fire5")}
#: The losses styleforge ships, in the order errors and help list them.
BUILTIN = (CoreEntry("gram"), CoreEntry("w2"), CoreEntry("sliced"), CoreEntry("nnst", default_layers=NNST_LAYERS),
           CoreEntry("mrf", method="mrf"))

_ENTRIES: dict[str, StyleLossEntry] = {entry.name: entry for entry in BUILTIN}


def register_entry(entry: StyleLossEntry) -> None:
    """Add a loss; a second, different loss under a registered name is refused (a built-in's
    declaration replaces its core entry when the two agree on method and layers)."""
    known = _ENTRIES.get(entry.name)
    if isinstance(known, CoreEntry) and not isinstance(entry, CoreEntry):
        if (known.method, dict(known.default_layers)) != (entry.method, dict(entry.default_layers)):
            raise ValueError(f"the style loss {entry.name!r} declares another method or other layers than its "
                             "built-in entry (engine/_style_losses.py)")
    elif known is not None and known is not entry:
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
