"""The video extra's third-party modules, imported when first needed: ``import
styleforge.engine`` works without them, and a video command without them fails with one line
naming the extra to install."""

from __future__ import annotations

from types import ModuleType

from .._extras import MissingExtraError, require_extra

__all__ = ["MissingExtraError", "require"]

#: Module -> the package that ships it (both in the ``video`` extra).
_PACKAGES = {"av": "av (PyAV)", "cv2": "opencv-python-headless"}


def require(module: str) -> ModuleType:
    """``module`` imported, or MissingExtraError naming ``pip install 'styleforge[video]'``."""
    return require_extra(module, extra="video", package=_PACKAGES.get(module, module), purpose="video")
