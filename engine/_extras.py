"""Optional extras' third-party modules, imported when first needed: ``import styleforge.engine``
works without them, and a feature that needs one fails with one line naming what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import InputError

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(InputError):
    """A module of an optional extra is not installed; the message says what to install."""


def require_extra(module: str, *, extra: str, package: str, purpose: str) -> ModuleType:
    """``module`` imported, or MissingExtraError: "``purpose`` needs ``package``, which is not
    installed (...); pip install 'styleforge[``extra``]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed ({error}); "
                                f"pip install 'styleforge[{extra}]'") from None
