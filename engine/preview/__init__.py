"""A live preview page of a render, a shot or a batch, served while it runs (``--preview``).

Sits above batch: it follows RenderEvents, VideoEvents and JobOutcomes through the callbacks
those layers already offer, and nothing below knows it exists. The web server (Starlette on
uvicorn) is the ``preview`` extra, imported when a preview opens; without it ``open_preview``
raises MissingExtraError naming the extra.
"""

from ._feed import PreviewFeed, PreviewSnapshot, reduce_image
from ._page import page
from ._server import PreviewServer, check_preview, open_preview, parse_preview_address

__all__ = ["open_preview", "check_preview", "parse_preview_address", "PreviewServer", "PreviewFeed",
           "PreviewSnapshot", "reduce_image", "page"]
