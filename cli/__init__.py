"""The ``styleforge`` command line (typer): parses, calls styleforge.engine, prints.

A Ctrl-C before any work (while the command line and, on first use, torch load) exits 130 at
once without a traceback: see ``_app.interrupt_while_starting``.
"""

from . import _batch, _render, _tools, _video  # noqa: F401  (each registers its commands on the app)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
