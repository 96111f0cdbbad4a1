"""The ``styleforge`` command line (typer): parses, calls styleforge.engine, prints."""

from . import _batch, _render, _tools, _video  # noqa: F401  (each registers its commands on the app)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
