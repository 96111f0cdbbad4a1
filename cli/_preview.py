"""``--preview [HOST:]PORT`` of render, batch and video: the live page around a command's work."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from styleforge import engine

from ._app import say

if TYPE_CHECKING:  # the preview's server loads only with --preview
    from styleforge.engine.preview import PreviewFeed

__all__ = ["PreviewOption", "with_preview"]

T = TypeVar("T")

PreviewOption = Annotated[str | None, typer.Option(
    "--preview", metavar="[HOST:]PORT",
    help="Serve a live page of the work (image, figures, loss curve) at HOST:PORT, 127.0.0.1 unless a host is "
         "given; port 0 picks a free one. Needs the preview extra: pip install 'styleforge[preview]'.",
    show_default="off")]


def with_preview(address: str | None, kind: str, body: Callable[[PreviewFeed | None], T]) -> T:
    """``body(feed)``, with the preview served around it when ``address`` is given (else
    ``body(None)``). A missing extra or a bad address fails here, before any work."""
    if address is None:
        return body(None)
    with engine.open_preview(address, kind=kind) as server:
        say(f"preview: {server.url}")
        try:
            result = body(server.feed)
        except KeyboardInterrupt:
            server.feed.finish("interrupted")
            raise
        except BaseException as error:
            server.feed.finish("stopped" if isinstance(error, typer.Exit) else f"failed: {error}")
            raise
        server.feed.finish()
        return result
