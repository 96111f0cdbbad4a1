"""The ``styleforge`` command line (typer): parses, calls styleforge.engine, prints."""

import os
import signal
import threading


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the imports below run (torch takes a second or more): nothing has started
    and nothing is open, so exit as an interrupt does (130), without the import's traceback. At
    once (os._exit), not by raising: an exception raised inside a C extension's import (numpy's)
    can be caught on the way and the import retried, which fails differently and carries on."""
    os.write(2, b"interrupted before any work\n")
    os._exit(130)


_MAIN_THREAD = threading.current_thread() is threading.main_thread()  # only it may set handlers
_previous = signal.signal(signal.SIGINT, _interrupted_while_starting) if _MAIN_THREAD else None

from . import _batch, _render, _tools, _video  # noqa: E402,F401  (each registers its commands on the app)
from ._app import app  # noqa: E402

if _MAIN_THREAD:  # from here on Ctrl-C is KeyboardInterrupt again: a render writes its image and exits 130
    signal.signal(signal.SIGINT, _previous if _previous is not None else signal.default_int_handler)

__all__ = ["app", "main"]


def main() -> None:
    app()
