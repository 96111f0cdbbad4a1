"""The video extra's third-party modules, imported when first needed: ``import
styleforge.engine`` works without them, and a video command without them fails with one line
naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .._errors import InputError

__all__ = ["MissingExtraError", "require"]

#: Module -> the package that ships it (both in the ``video`` extra).
_PACKAGES = {"av": "av (PyAV)", "cv2": "opencv-python-headless"}


class MissingExtraError(InputError):
    """A module of the ``video`` extra is not installed; the message says what to install."""


def require(module: str) -> ModuleType:
    """``module`` imported, or MissingExtraError naming ``pip install 'styleforge[video]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"video needs {_PACKAGES.get(module, module)}, which is not installed ({error}); "
                                "pip install 'styleforge[video]'") from None
